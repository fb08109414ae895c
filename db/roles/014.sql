-- Roles for revision 0015, the dashboard (the model is db/roles/001.sql's; read it first).
--
--   <schema>_viewer    read what `pgq dashboard` shows: the tables and views of
--                      queues, jobs, attempts, dead letters, workers and their
--                      health samples, schedules, pauses, claim rules, and the
--                      snapshots' list (not their bodies). No function that
--                      writes, no INSERT, UPDATE or DELETE.
--   <schema>_operator  the dashboard's actions, each an existing stored
--                      function: requeue_dead_jobs (and _v2), purge_dead_jobs,
--                      drain_worker, evacuate_worker, pause_queue,
--                      resume_queue. No table privilege: grant it together
--                      with <schema>_viewer to the dashboard's login when its
--                      actions are on (GRANT pgq_viewer, pgq_operator TO dash).
--
-- Both NOLOGIN, named after the schema as the other roles. The functions were
-- made SECURITY DEFINER and closed to PUBLIC by earlier revisions (001.sql,
-- 004.sql, 007.sql, 008.sql, 012.sql): this file only grants.
--
-- Runs with search_path set to the pgq schema. Idempotent: when the migrating
-- role may not create roles, it warns and skips them; a DBA creates them
-- (CREATE ROLE pgq_viewer NOLOGIN; CREATE ROLE pgq_operator NOLOGIN) and the
-- schema's owner runs this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/014.sql

DO $check$
BEGIN
    IF octet_length(current_schema() || '_operator') > 63 THEN
        RAISE EXCEPTION 'pgq roles: role name %_operator is longer than 63 bytes; use a shorter schema name',
            current_schema() USING ERRCODE = 'PQ004';
    END IF;
END
$check$;

DO $roles$
DECLARE
    v_schema     constant text := current_schema();
    v_viewer     constant text := v_schema || '_viewer';
    v_operator   constant text := v_schema || '_operator';
    v_may_create constant boolean := (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user);
    v_role       text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY[v_viewer, v_operator] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
            IF NOT v_may_create THEN
                RAISE WARNING 'pgq roles: role % does not exist and % may not create roles; its grants are skipped. '
                              'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/014.sql again',
                              v_role, current_user, v_role;
                CONTINUE;
            END IF;
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
                EXECUTE format('COMMENT ON ROLE %I IS %L', v_role, CASE v_role
                    WHEN v_viewer THEN format('pgq, schema %s: read queues, jobs, workers and the dead letter queue '
                                              '(pgq dashboard, reports). Changes nothing.', v_schema)
                    ELSE format('pgq, schema %s: the dashboard''s actions (requeue and purge dead jobs, drain and '
                                'evacuate workers, pause and resume queues). Grant it with %s_viewer.',
                                v_schema, v_schema) END);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- the migration of another database created it meanwhile
            END;
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', v_schema, v_role);
        IF v_role = v_viewer THEN
            EXECUTE format($sql$
                GRANT SELECT ON jobs, workers, job_executions, dead_letter_queue, job_dependencies,
                                worker_health_logs, alert_rules, queue_pauses, schedules, queue_policies,
                                group_states, alembic_version,
                                queue_stats, worker_status, job_history, job_blockers, health_alerts,
                                paused_queues, job_status_estimates, queue_policy_usage
                TO %1$I;
                -- The list of snapshots, not their bodies (every payload of the queue).
                GRANT SELECT (id, snapshot_type, origin, base_snapshot_id, full_snapshot_id, created_at,
                              format_version, schema_revision, metadata, body_sha256) ON state_snapshots TO %1$I
            $sql$, v_role);
        ELSE
            EXECUTE format($sql$
                GRANT EXECUTE ON FUNCTION
                    requeue_dead_jobs(bigint[], text, timestamptz),
                    requeue_dead_jobs_v2(bigint[], text, boolean, timestamptz),
                    purge_dead_jobs(bigint[], interval, timestamptz),
                    drain_worker(uuid, timestamptz),
                    evacuate_worker(uuid, text, text, timestamptz),
                    pause_queue(text, timestamptz),
                    resume_queue(text, timestamptz)
                TO %1$I
            $sql$, v_role);
        END IF;
    END LOOP;
END
$roles$;
