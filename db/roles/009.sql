-- Roles for the periodic schedules of revision 0010 (the model is db/roles/001.sql's).
--
--   register_schedule        an application registers its schedules (every
--                            worker process does at start; producers may too)
--   enqueue_schedule_ticks   the maintenance leader enqueues a schedule's ticks
--   set_schedule_next_tick   the maintenance leader fills in a missing next tick
--   schedules                `pgq schedules`, DBAs
--
-- All three functions are SECURITY DEFINER (they write schedules and jobs,
-- which no role may update directly) and closed to PUBLIC. register_schedule
-- goes to both roles; the two leader functions to <schema>_worker only. Both
-- roles may read schedules. DBAs edit schedules as the schema's owner.
--
-- Runs with search_path set to the pgq schema. Idempotent: when a role does
-- not exist, it warns and skips its grants; once a DBA created the roles, the
-- schema's owner runs db/roles/001.sql to 008.sql and this file again.

ALTER FUNCTION register_schedule(text, text, text, text, jsonb, text, integer, integer, text, integer,
                                 double precision, timestamptz, timestamptz) SECURITY DEFINER;
ALTER FUNCTION enqueue_schedule_ticks(text, timestamptz, timestamptz, timestamptz[], timestamptz, timestamptz) SECURITY DEFINER;
ALTER FUNCTION set_schedule_next_tick(text, timestamptz, timestamptz) SECURITY DEFINER;
REVOKE ALL ON FUNCTION register_schedule(text, text, text, text, jsonb, text, integer, integer, text, integer,
                                         double precision, timestamptz, timestamptz),
                       enqueue_schedule_ticks(text, timestamptz, timestamptz, timestamptz[], timestamptz, timestamptz),
                       set_schedule_next_tick(text, timestamptz, timestamptz)
    FROM PUBLIC;

DO $roles$
DECLARE
    v_producer constant text := current_schema() || '_producer';
    v_worker constant text := current_schema() || '_worker';
    v_register constant text := 'register_schedule(text, text, text, text, jsonb, text, integer, integer, text, '
                                'integer, double precision, timestamptz, timestamptz)';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_producer) THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', v_register, v_producer);
        EXECUTE format('GRANT SELECT ON schedules TO %I', v_producer);
    ELSE
        RAISE WARNING 'pgq roles: role % does not exist; its grants on schedules are skipped. '
                      'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 009.sql again',
                      v_producer, v_producer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_worker) THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s, '
                       'enqueue_schedule_ticks(text, timestamptz, timestamptz, timestamptz[], timestamptz, timestamptz), '
                       'set_schedule_next_tick(text, timestamptz, timestamptz) TO %I', v_register, v_worker);
        EXECUTE format('GRANT SELECT ON schedules TO %I', v_worker);
    ELSE
        RAISE WARNING 'pgq roles: role % does not exist; its grants on schedules are skipped. '
                      'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 009.sql again',
                      v_worker, v_worker;
    END IF;
END
$roles$;
