-- pgq.set_updated_at()  (trigger function) and its triggers on jobs and workers
-- Keeps updated_at current for UPDATEs that do not set it themselves, e.g. a
-- DBA's manual repair. pgq's own functions set updated_at explicitly, so the
-- WHEN clause (evaluated in C, no PL/pgSQL call) skips the trigger for them:
-- the claim and completion hot path pays nothing.
CREATE OR REPLACE FUNCTION set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER jobs_set_updated_at
    BEFORE UPDATE ON jobs
    FOR EACH ROW
    WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION set_updated_at();

CREATE OR REPLACE TRIGGER workers_set_updated_at
    BEFORE UPDATE ON workers
    FOR EACH ROW
    WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION set_updated_at();
