"""A deterministic text description of a migrated pgq schema, from the catalogs.

``python tests/support/schema_dump.py [--url URL] [--schema S] > db/schema.sql``
writes the file that ``tests/integration/test_migrations.py`` compares a freshly
migrated database against. It reads the system catalogs and Postgres' own
deparsers (``pg_get_constraintdef``, ``pg_get_indexdef``, ``pg_get_functiondef``,
``pg_get_triggerdef``, ``pg_get_viewdef``) instead of running ``pg_dump``, so it
needs no client binaries. Every section is sorted and server-specific details
(owners, OIDs, the server version) are left out, so the output is the same for
the same migrations on any supported Postgres version. Privileges are printed
as GRANTs to roles other than the owner (the roles of migration 0003 are part
of the interface); the owner's own privileges are implicit. A developer
tool: it lives with the tests, not in the runtime package.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
from psycopg import rows

from pgq.db import connect, translated
from pgq.errors import ConfigurationError, PgqError
from pgq.settings import Settings

HEADER = """\
-- db/schema.sql: the pgq schema as `alembic upgrade head` leaves it.
-- GENERATED FILE, never edit it by hand. Regenerate it from a database migrated
-- to head (pgq.migrate.upgrade / `pgq migrate`) with
--   python tests/support/schema_dump.py --url postgresql://USER@HOST/DB > db/schema.sql
-- tests/integration/test_migrations.py checks that migrating an empty database
-- produces exactly this text. Objects are listed in name order; owners are
-- left out, and the privileges of other roles follow each object as GRANTs.
-- View definitions are printed without relation qualifiers (j.id -> id), which
-- Postgres 16+ omits for one-table views, so the text is the same on every
-- supported version.
"""

# Every query takes the schema name as its only parameter. Names are compared
# with COLLATE "C" so the order does not depend on the database's locale.

_TYPES = """
SELECT t.typname,
       array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels,
       obj_description(t.oid, 'pg_type') AS comment
FROM pg_type AS t
JOIN pg_namespace AS n ON n.oid = t.typnamespace
JOIN pg_enum AS e ON e.enumtypid = t.oid
WHERE n.nspname = %s AND t.typtype = 'e'
GROUP BY t.oid, t.typname
ORDER BY t.typname COLLATE "C"
"""

_OTHER_TYPES = """
SELECT t.typname, t.typtype
FROM pg_type AS t
JOIN pg_namespace AS n ON n.oid = t.typnamespace
WHERE n.nspname = %s
  AND t.typtype NOT IN ('e', 'c', 'b')  -- enums above; composite/array types belong to tables
ORDER BY t.typname COLLATE "C"
"""

_TABLES = """
SELECT c.oid, c.relname, c.relpersistence, c.reloptions,
       obj_description(c.oid, 'pg_class') AS comment
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
ORDER BY c.relname COLLATE "C"
"""

_COLUMNS = """
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull,
       a.attidentity,
       a.attgenerated,
       pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
            THEN (SELECT collname FROM pg_collation WHERE oid = a.attcollation) END AS collation,
       col_description(a.attrelid, a.attnum) AS comment
FROM pg_attribute AS a
JOIN pg_type AS t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# contype 'n' (NOT NULL constraints in pg_constraint, Postgres 18+) is left
# out: nullability is printed with the columns, the same on every version.
_CONSTRAINTS = """
SELECT con.conname, pg_get_constraintdef(con.oid, true) AS definition,
       obj_description(con.oid, 'pg_constraint') AS comment
FROM pg_constraint AS con
WHERE con.conrelid = %s AND con.contype <> 'n'
ORDER BY con.conname COLLATE "C"
"""

_INDEXES = """
SELECT ic.relname, pg_get_indexdef(i.indexrelid) AS definition,
       obj_description(i.indexrelid, 'pg_class') AS comment
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
WHERE i.indrelid = %s
  -- indexes that implement a constraint are printed with the constraint
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS con WHERE con.conindid = i.indexrelid
                  AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x'))
ORDER BY ic.relname COLLATE "C"
"""

_TRIGGERS = """
SELECT tg.tgname, pg_get_triggerdef(tg.oid, true) AS definition,
       obj_description(tg.oid, 'pg_trigger') AS comment
FROM pg_trigger AS tg
WHERE tg.tgrelid = %s AND NOT tg.tgisinternal
ORDER BY tg.tgname COLLATE "C"
"""

_SEQUENCES = """
SELECT c.oid, c.relname, obj_description(c.oid, 'pg_class') AS comment
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind = 'S'
  -- identity sequences are printed with their column
  AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'i')
ORDER BY c.relname COLLATE "C"
"""

_VIEWS = """
SELECT c.oid, c.relname, c.relkind, pg_get_viewdef(c.oid, true) AS definition,
       obj_description(c.oid, 'pg_class') AS comment,
       (SELECT r.ev_action::text FROM pg_rewrite AS r
        WHERE r.ev_class = c.oid AND r.rulename = '_RETURN') AS query_tree
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('v', 'm')
ORDER BY c.relname COLLATE "C"
"""

_VIEW_COLUMN_COMMENTS = """
SELECT a.attname, col_description(a.attrelid, a.attnum) AS comment
FROM pg_attribute AS a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
  AND col_description(a.attrelid, a.attnum) IS NOT NULL
ORDER BY a.attnum
"""

_FUNCTIONS = """
SELECT p.oid, p.proname,
       pg_get_function_identity_arguments(p.oid) AS identity_args,
       p.prokind,
       CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid) END AS definition,
       obj_description(p.oid, 'pg_proc') AS comment
FROM pg_proc AS p
JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = %s
ORDER BY p.proname COLLATE "C", pg_get_function_identity_arguments(p.oid) COLLATE "C"
"""

_SCHEMA = """
SELECT obj_description(n.oid, 'pg_namespace') FROM pg_namespace AS n WHERE n.nspname = %s
"""

_REVISION = "SELECT version_num FROM {}.alembic_version ORDER BY version_num"

# Privileges of roles other than the owner, one row per grantee (PUBLIC
# included), from the object's ACL or, when it has none, the defaults
# (acldefault: e.g. EXECUTE for PUBLIC on a function).
_GRANTS = """
SELECT * FROM (
    SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee,
           a.is_grantable,
           string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type) AS privileges
    FROM (SELECT {acl} AS acl, {owner} AS owner, {kind} AS kind FROM {catalog} WHERE oid = %s) AS o,
         aclexplode(coalesce(o.acl, acldefault(o.kind, o.owner))) AS a
    WHERE a.grantee <> o.owner
    GROUP BY 1, 2
) AS g
ORDER BY grantee COLLATE "C", is_grantable
"""
_SCHEMA_GRANTS = _GRANTS.format(acl="nspacl", owner="nspowner", kind="'n'::\"char\"", catalog="pg_namespace")
_RELATION_GRANTS = _GRANTS.format(
    acl="relacl", owner="relowner", kind="CASE relkind WHEN 'S' THEN 's' ELSE 'r' END::\"char\"", catalog="pg_class")
_FUNCTION_GRANTS = _GRANTS.format(acl="proacl", owner="proowner", kind="'f'::\"char\"", catalog="pg_proc")

# Column privileges (GRANT INSERT (a, b) ON t), one row per grantee and privilege.
_COLUMN_GRANTS = """
SELECT * FROM (
    SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee,
           a.privilege_type, a.is_grantable,
           string_agg(quote_ident(att.attname), ', ' ORDER BY att.attnum) AS columns
    FROM pg_attribute AS att, aclexplode(att.attacl) AS a
    WHERE att.attrelid = %s AND att.attnum > 0 AND NOT att.attisdropped
    GROUP BY 1, 2, 3
) AS g
ORDER BY grantee COLLATE "C", privilege_type, is_grantable
"""

# Identity sequences of a table (printed with the table, for their grants).
_IDENTITY_SEQUENCES = """
SELECT s.oid, s.relname
FROM pg_depend AS d JOIN pg_class AS s ON s.oid = d.objid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = %s AND d.deptype = 'i' AND s.relkind = 'S'
ORDER BY s.relname COLLATE "C"
"""


# The names a view's query gives its relations (table names and aliases), as
# they appear in the stored query tree.
_ALIASNAME = re.compile(r":aliasname ([a-z_][a-z0-9_]*)[ }]")


def _unqualified(definition: str, query_tree: str, schema: str) -> str:
    """Drop relation qualifiers (``j.id`` -> ``id``) from a view definition.

    Postgres 16 stopped printing them for a query level that reads one
    relation (the view's OLD/NEW range-table entries were removed), while
    Postgres 15 prints them everywhere; without them the text is the same on
    both. Only names the view uses for its relations are stripped, never the
    schema (``pgq.jobs``, ``::pgq.job_status``).
    """
    aliases = sorted(set(_ALIASNAME.findall(query_tree)) - {schema}, key=len, reverse=True)
    if not aliases:
        return definition
    pattern = re.compile(r'(?<![\w.":$])(?:' + "|".join(map(re.escape, aliases)) + r')\.(?=[a-z_"])')
    return pattern.sub("", definition)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _comment(kind: str, name: str, comment: str | None) -> list[str]:
    return [] if comment is None else [f"COMMENT ON {kind} {name} IS {_literal(comment)};"]


def _grants(conn: psycopg.Connection[Any], query: str, oid: int, kind: str, name: str) -> list[str]:
    return [
        f"GRANT {g['privileges']} ON {kind} {name} TO {g['grantee']}{' WITH GRANT OPTION' if g['is_grantable'] else ''};"
        for g in _rows(conn, query, oid)
    ]


def _column_line(row: dict[str, Any], ident: Callable[[str], str]) -> str:
    parts = [f"    {ident(row['attname'])} {row['type']}"]
    if row["collation"]:
        parts.append(f'COLLATE "{row["collation"]}"')
    if row["attidentity"] == "a":
        parts.append("GENERATED ALWAYS AS IDENTITY")
    elif row["attidentity"] == "d":
        parts.append("GENERATED BY DEFAULT AS IDENTITY")
    elif row["attgenerated"] == "s":
        parts.append(f"GENERATED ALWAYS AS ({row['default_expr']}) STORED")
    elif row["attgenerated"] == "v":
        parts.append(f"GENERATED ALWAYS AS ({row['default_expr']}) VIRTUAL")
    elif row["default_expr"] is not None:
        parts.append(f"DEFAULT {row['default_expr']}")
    if row["attnotnull"]:
        parts.append("NOT NULL")
    return " ".join(parts)


def _rows(conn: psycopg.Connection[Any], query: str, param: Any) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=rows.dict_row) as cur:
        cur.execute(query, (param,))
        return cur.fetchall()


def dump(conn: psycopg.Connection[Any], schema: str = "pgq") -> str:
    """Return the description of ``schema`` as text (see the module docstring).

    Runs only catalog reads, in one read-only transaction that is rolled back.
    """
    out: list[str] = [HEADER.format(schema=schema).rstrip("\n")]
    quoted: dict[str, str] = {}

    def ident(name: str) -> str:
        # The server's quote_ident: quotes only names that need it (keywords,
        # capitals), like the deparsers do, so the text reads like plain DDL.
        if name not in quoted:
            row = conn.execute("SELECT quote_ident(%s)", (name,)).fetchone()
            assert row is not None
            quoted[name] = row[0]
        return quoted[name]

    def section(title: str) -> None:
        out.append("")
        out.append(f"-- {'=' * 20} {title}")

    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        # Everything in the schema is printed qualified, whatever search_path
        # the caller's role or database has.
        conn.execute("SET LOCAL search_path TO pg_catalog")
        conn.execute("SET LOCAL DateStyle TO ISO, YMD")
        conn.execute("SET LOCAL IntervalStyle TO postgres")
        conn.execute("SET LOCAL extra_float_digits TO 1")

        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        if exists is None:
            raise ConfigurationError(f"schema {schema!r} does not exist in this database; migrate it first")

        q = ident(schema)
        section("schema")
        out.append(f"CREATE SCHEMA {q};")
        out.extend(_comment("SCHEMA", q, _rows(conn, _SCHEMA, schema)[0]["obj_description"]))
        schema_oid = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        assert schema_oid is not None
        out.extend(_grants(conn, _SCHEMA_GRANTS, schema_oid[0], "SCHEMA", q))
        has_version_table = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{q}.alembic_version",)
        ).fetchone()
        if has_version_table and has_version_table[0]:
            revisions = [r[0] for r in conn.execute(_REVISION.format(q)).fetchall()]
            out.append(f"-- alembic revision: {', '.join(revisions) or '(none)'}")

        types = _rows(conn, _TYPES, schema)
        if types:
            section("types")
        for row in types:
            name = f"{q}.{ident(row['typname'])}"
            labels = ", ".join(_literal(label) for label in row["labels"])
            out.append(f"CREATE TYPE {name} AS ENUM ({labels});")
            out.extend(_comment("TYPE", name, row["comment"]))
        for row in _rows(conn, _OTHER_TYPES, schema):
            out.append(f"-- type {row['typname']} (typtype {row['typtype']})")

        sequences = _rows(conn, _SEQUENCES, schema)
        if sequences:
            section("sequences")
        for row in sequences:
            name = f"{q}.{ident(row['relname'])}"
            out.append(f"CREATE SEQUENCE {name};")
            out.extend(_comment("SEQUENCE", name, row["comment"]))
            out.extend(_grants(conn, _RELATION_GRANTS, row["oid"], "SEQUENCE", name))

        for table in _rows(conn, _TABLES, schema):
            name = f"{q}.{ident(table['relname'])}"
            section(f"table {table['relname']}")
            kind = "UNLOGGED TABLE" if table["relpersistence"] == "u" else "TABLE"
            columns = _rows(conn, _COLUMNS, table["oid"])
            constraints = _rows(conn, _CONSTRAINTS, table["oid"])
            body = [_column_line(c, ident) for c in columns]
            body += [
                f"    CONSTRAINT {ident(c['conname'])} {c['definition']}"
                for c in constraints
            ]
            out.append(f"CREATE {kind} {name} (")
            out.append(",\n".join(body))
            options = f" WITH ({', '.join(sorted(table['reloptions']))})" if table["reloptions"] else ""
            out.append(f"){options};")
            out.extend(_comment("TABLE", name, table["comment"]))
            out.extend(_grants(conn, _RELATION_GRANTS, table["oid"], "TABLE", name))
            out.extend(
                f"GRANT {g['privilege_type']} ({g['columns']}) ON TABLE {name} TO {g['grantee']}"
                f"{' WITH GRANT OPTION' if g['is_grantable'] else ''};"
                for g in _rows(conn, _COLUMN_GRANTS, table["oid"])
            )
            for seq in _rows(conn, _IDENTITY_SEQUENCES, table["oid"]):
                out.extend(_grants(conn, _RELATION_GRANTS, seq["oid"], "SEQUENCE", f"{q}.{ident(seq['relname'])}"))
            for c in columns:
                column = f"{name}.{ident(c['attname'])}"
                out.extend(_comment("COLUMN", column, c["comment"]))
            for c in constraints:
                cname = f"{ident(c['conname'])} ON {name}"
                out.extend(_comment("CONSTRAINT", cname, c["comment"]))
            for index in _rows(conn, _INDEXES, table["oid"]):
                out.append(f"{index['definition']};")
                iname = f"{q}.{ident(index['relname'])}"
                out.extend(_comment("INDEX", iname, index["comment"]))
            for trigger in _rows(conn, _TRIGGERS, table["oid"]):
                out.append(f"{trigger['definition']};")
                tname = f"{ident(trigger['tgname'])} ON {name}"
                out.extend(_comment("TRIGGER", tname, trigger["comment"]))

        for view in _rows(conn, _VIEWS, schema):
            name = f"{q}.{ident(view['relname'])}"
            section(f"view {view['relname']}")
            kind = "MATERIALIZED VIEW" if view["relkind"] == "m" else "VIEW"
            out.append(f"CREATE {kind} {name} AS")
            out.append(_unqualified(view["definition"], view["query_tree"], schema).rstrip())
            out.extend(_comment(kind, name, view["comment"]))
            out.extend(_grants(conn, _RELATION_GRANTS, view["oid"], "TABLE", name))
            for c in _rows(conn, _VIEW_COLUMN_COMMENTS, view["oid"]):
                column = f"{name}.{ident(c['attname'])}"
                out.extend(_comment("COLUMN", column, c["comment"]))

        for fn in _rows(conn, _FUNCTIONS, schema):
            signature = f"{q}.{ident(fn['proname'])}({fn['identity_args']})"
            section(f"function {fn['proname']}({fn['identity_args']})")
            if fn["definition"] is None:
                out.append(f"-- aggregate {signature}")
            else:
                out.append(fn["definition"].rstrip() + ";")
            kind = "PROCEDURE" if fn["prokind"] == "p" else "FUNCTION"
            out.extend(_comment(kind, signature, fn["comment"]))
            out.extend(_grants(conn, _FUNCTION_GRANTS, fn["oid"], kind, signature))

    return "\n".join(_strip_trailing(out)) + "\n"


def _strip_trailing(lines: Iterable[str]) -> list[str]:
    # Trailing blanks are invisible in review and differ between deparsers.
    return [line.rstrip() for chunk in lines for line in chunk.split("\n")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tests/support/schema_dump.py",
        description="Print a deterministic description of a migrated pgq schema (the text of db/schema.sql).",
    )
    parser.add_argument("--url", help="database URL (default: PGQ_DATABASE_URL)")
    parser.add_argument("--schema", help="pgq schema to describe (default: PGQ_SCHEMA or pgq)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(database_url=args.url, schema=args.schema)
        url = settings.require_database_url()
        with translated(url), connect(url) as conn:
            text = dump(conn, settings.schema)
    except PgqError as exc:
        print(f"schema_dump: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
