-- Roles for revision 0014 (the model is db/roles/001.sql's; read it first).
--
--   collect_metrics        what the queue exporter (`pgq metrics`) reads
--   jobs.trace_context     the producer's trace context, written at enqueue
--                          when tracing is on
--   attach_trace_context   the same for jobs enqueued through a function
--
-- collect_metrics is SECURITY DEFINER (it reads workers and dead_letter_queue,
-- which the producer role may not read), closed to PUBLIC and granted to both
-- roles: a monitoring login gets <schema>_producer or <schema>_worker, or a DBA
-- grants it EXECUTE on the function alone. The producer may INSERT the new
-- column (its INSERT grant on jobs is per column) and calls
-- attach_trace_context (SECURITY DEFINER: it may not UPDATE jobs).
--
-- Runs with search_path set to the pgq schema. Idempotent: when a role does
-- not exist, it warns and skips its grants; once a DBA created the roles, the
-- schema's owner runs db/roles/001.sql to 005.sql and this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/013.sql

ALTER FUNCTION collect_metrics(timestamptz) SECURITY DEFINER;
ALTER FUNCTION attach_trace_context(bigint[], jsonb) SECURITY DEFINER;
REVOKE ALL ON FUNCTION collect_metrics(timestamptz), attach_trace_context(bigint[], jsonb) FROM PUBLIC;

DO $roles$
DECLARE
    v_producer constant text := current_schema() || '_producer';
    v_worker constant text := current_schema() || '_worker';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_producer) THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION collect_metrics(timestamptz) TO %I', v_producer);
        EXECUTE format('GRANT INSERT (trace_context) ON jobs TO %I', v_producer);
        EXECUTE format('GRANT EXECUTE ON FUNCTION attach_trace_context(bigint[], jsonb) TO %I', v_producer);
    ELSE
        RAISE WARNING 'pgq roles: role % does not exist; its grants on collect_metrics and trace contexts are '
                      'skipped. Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 013.sql again',
                      v_producer, v_producer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_worker) THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION collect_metrics(timestamptz) TO %I', v_worker);
    ELSE
        RAISE WARNING 'pgq roles: role % does not exist; its grant on collect_metrics is skipped. '
                      'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 013.sql again',
                      v_worker, v_worker;
    END IF;
END
$roles$;
