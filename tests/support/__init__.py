"""Developer tools the tests share (the schema dump behind db/schema.sql)."""
