-- Roles for least privilege, granted by revision 0003:
--
--   <schema>_producer  enqueue jobs (a plain INSERT or COPY of the columns a
--                      new job may set, and enqueue_job / enqueue_jobs, which
--                      handle unique keys), cancel them (cancel_job), read
--                      jobs, dead letters and the status views
--   <schema>_worker    register, claim, complete, fail, release, heartbeat and
--                      deregister, run maintenance (mark_stale_workers,
--                      fail_timed_out_jobs, prune_jobs), read jobs and workers
--
-- Both are NOLOGIN: a DBA grants them to login roles (GRANT pgq_producer TO
-- app_web). Their names come from the schema (pgq -> pgq_producer,
-- pgq_worker), so two pgq schemas in one cluster get separate roles; roles are
-- cluster-wide, so two databases that both use schema pgq share them.
--
-- Neither role may UPDATE or DELETE a table: every state change goes through
-- a stored function. Those functions are SECURITY DEFINER: they run as their
-- owner (the role that ran the migration) with the search_path pinned when
-- they were created (the pgq schema, pg_catalog, pg_temp last), so a caller's
-- search_path or temporary objects cannot redirect them. EXECUTE on every
-- function of the schema is revoked from PUBLIC. Helpers that only other
-- functions call (record_failed_attempt, notify_queues, retry_delay, the
-- trigger functions) stay SECURITY INVOKER and are granted to nobody.
-- Repairs (requeue_dead_jobs, purge_dead_jobs) stay with the owner, or a DBA
-- grants EXECUTE on them to an operator's role (they are SECURITY DEFINER too).
--
-- Runs with search_path set to the pgq schema. Idempotent: when the role that
-- migrates may not create roles (no CREATEROLE), it warns and skips them; a DBA
-- creates them (CREATE ROLE pgq_producer NOLOGIN; ...) and the schema's owner
-- runs this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/001.sql

-- Role names are identifiers: Postgres would cut a longer name to 63 bytes, and
-- two schemas could then share a role.
DO $check$
BEGIN
    IF octet_length(current_schema() || '_producer') > 63 THEN
        RAISE EXCEPTION 'pgq roles: role name %_producer is longer than 63 bytes; use a shorter schema name',
            current_schema() USING ERRCODE = 'PQ004';
    END IF;
END
$check$;

ALTER FUNCTION enqueue_jobs(text[], jsonb[], text[], integer[], timestamptz[], integer[], double precision[],
                            text[], double precision[], double precision[], double precision[],
                            double precision[], timestamptz) SECURITY DEFINER;
ALTER FUNCTION enqueue_job(text, jsonb, text, integer, interval, integer, interval, text, timestamptz,
                           timestamptz) SECURITY DEFINER;
ALTER FUNCTION cancel_job(bigint, timestamptz) SECURITY DEFINER;
ALTER FUNCTION get_runnable_jobs(text[], uuid, integer, timestamptz) SECURITY DEFINER;
ALTER FUNCTION complete_jobs(uuid, bigint[], integer[], jsonb[], timestamptz) SECURITY DEFINER;
ALTER FUNCTION fail_job(bigint, uuid, integer, text, text, text, double precision, boolean, attempt_outcome,
                        timestamptz) SECURITY DEFINER;
ALTER FUNCTION release_jobs(uuid, bigint[], integer[], timestamptz) SECURITY DEFINER;
ALTER FUNCTION register_worker(uuid, text, integer, text[], integer, jsonb, timestamptz) SECURITY DEFINER;
ALTER FUNCTION heartbeat_worker(uuid, integer, bigint[], real, timestamptz) SECURITY DEFINER;
ALTER FUNCTION deregister_worker(uuid, timestamptz) SECURITY DEFINER;
ALTER FUNCTION mark_stale_workers(interval, timestamptz) SECURITY DEFINER;
ALTER FUNCTION fail_timed_out_jobs(interval, timestamptz) SECURITY DEFINER;
ALTER FUNCTION prune_jobs(interval, integer, timestamptz) SECURITY DEFINER;
-- Granted to neither role, but definer too, so that a DBA can let an operator
-- repair dead letters with one GRANT EXECUTE and no table privileges.
ALTER FUNCTION requeue_dead_jobs(bigint[], text, timestamptz) SECURITY DEFINER;
ALTER FUNCTION purge_dead_jobs(bigint[], interval, timestamptz) SECURITY DEFINER;

DO $roles$
DECLARE
    v_schema     constant text := current_schema();
    v_producer   constant text := v_schema || '_producer';
    v_worker     constant text := v_schema || '_worker';
    v_may_create constant boolean := (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user);
    v_role       text;
BEGIN
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %I FROM PUBLIC', v_schema);

    FOREACH v_role IN ARRAY ARRAY[v_producer, v_worker] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
            IF NOT v_may_create THEN
                RAISE WARNING 'pgq roles: role % does not exist and % may not create roles; its grants are skipped. '
                              'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql again',
                              v_role, current_user, v_role;
                CONTINUE;
            END IF;
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
                EXECUTE format('COMMENT ON ROLE %I IS %L', v_role, CASE v_role
                    WHEN v_producer THEN format('pgq, schema %s: enqueue and cancel jobs, read their status. '
                                                'Grant it to the login roles of producers.', v_schema)
                    ELSE format('pgq, schema %s: run jobs (claim, complete, fail, heartbeat) and maintenance. '
                                'Grant it to the login roles of workers.', v_schema) END);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- the migration of another database created it meanwhile
            END;
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', v_schema, v_role);
        EXECUTE format('GRANT SELECT ON jobs, alembic_version TO %I', v_role);
        IF v_role = v_producer THEN
            EXECUTE format($sql$
                GRANT INSERT (id, task, payload, queue, priority, run_at, max_attempts, timeout,
                              retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter) ON jobs TO %1$I;
                GRANT USAGE ON SEQUENCE jobs_id_seq TO %1$I;
                GRANT SELECT ON dead_letter_queue, queue_stats, worker_status, job_history TO %1$I;
                GRANT EXECUTE ON FUNCTION
                    enqueue_jobs(text[], jsonb[], text[], integer[], timestamptz[], integer[], double precision[],
                                 text[], double precision[], double precision[], double precision[],
                                 double precision[], timestamptz),
                    enqueue_job(text, jsonb, text, integer, interval, integer, interval, text, timestamptz,
                                timestamptz),
                    cancel_job(bigint, timestamptz)
                TO %1$I
            $sql$, v_role);
        ELSE
            EXECUTE format($sql$
                GRANT SELECT ON workers TO %1$I;
                GRANT EXECUTE ON FUNCTION
                    get_runnable_jobs(text[], uuid, integer, timestamptz),
                    complete_jobs(uuid, bigint[], integer[], jsonb[], timestamptz),
                    fail_job(bigint, uuid, integer, text, text, text, double precision, boolean, attempt_outcome,
                             timestamptz),
                    release_jobs(uuid, bigint[], integer[], timestamptz),
                    register_worker(uuid, text, integer, text[], integer, jsonb, timestamptz),
                    heartbeat_worker(uuid, integer, bigint[], real, timestamptz),
                    deregister_worker(uuid, timestamptz),
                    mark_stale_workers(interval, timestamptz),
                    fail_timed_out_jobs(interval, timestamptz),
                    prune_jobs(interval, integer, timestamptz)
                TO %1$I
            $sql$, v_role);
        END IF;
    END LOOP;
END
$roles$;
