-- Roles for revision 0012 (the model is db/roles/001.sql's; read it first).
--
--   set_queue_policy, clear_queue_policy, set_group_weight
--                        an operator sets a queue's claim rules (`pgq queue policy`)
--   age_jobs             the maintenance leader (a worker) ages jobs every round
--   queue_policies, group_states, queue_policy_usage
--                        the rules, the groups' weights and states, their usage
--   jobs.group_key       producers write a job's group
--
-- The functions are SECURITY DEFINER (they write queue_policies,
-- group_states and jobs, which no role may do directly) and closed to
-- PUBLIC: the rule setters go to <schema>_producer (the role that decides
-- what goes into queues decides how they are claimed, as for pausing),
-- age_jobs to <schema>_worker. Both roles read the tables and the view (a
-- Redis-mode worker reads which queues have a policy). token_refill, a pure
-- function the views use, stays open to PUBLIC. runnable_jobs_after, replaced
-- by this revision, is made definer again (its grants survive the replacement).
--
-- Runs with search_path set to the pgq schema. Idempotent: when a role does
-- not exist, it warns and skips its grants; once a DBA created the roles, the
-- schema's owner runs db/roles/001.sql to 010.sql and this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/011.sql

ALTER FUNCTION set_queue_policy(text, integer, integer, interval, integer, integer, interval, boolean, interval,
                                timestamptz) SECURITY DEFINER;
ALTER FUNCTION clear_queue_policy(text) SECURITY DEFINER;
ALTER FUNCTION set_group_weight(text, text, double precision) SECURITY DEFINER;
ALTER FUNCTION age_jobs(timestamptz) SECURITY DEFINER;
ALTER FUNCTION runnable_jobs_after(timestamptz, bigint, timestamptz, integer) SECURITY DEFINER;
REVOKE ALL ON FUNCTION set_queue_policy(text, integer, integer, interval, integer, integer, interval, boolean,
                                        interval, timestamptz),
                       clear_queue_policy(text), set_group_weight(text, text, double precision),
                       age_jobs(timestamptz) FROM PUBLIC;

DO $roles$
DECLARE
    v_producer constant text := current_schema() || '_producer';
    v_worker constant text := current_schema() || '_worker';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_producer) THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION set_queue_policy(text, integer, integer, interval, integer, integer, '
                       'interval, boolean, interval, timestamptz), clear_queue_policy(text), '
                       'set_group_weight(text, text, double precision) TO %I', v_producer);
        EXECUTE format('GRANT SELECT ON queue_policies, group_states, queue_policy_usage TO %I', v_producer);
        EXECUTE format('GRANT INSERT (group_key) ON jobs TO %I', v_producer);
    ELSE
        RAISE WARNING 'pgq roles: role % does not exist; its grants on the claim rules are skipped. '
                      'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 011.sql again',
                      v_producer, v_producer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_worker) THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION age_jobs(timestamptz) TO %I', v_worker);
        EXECUTE format('GRANT SELECT ON queue_policies, group_states, queue_policy_usage TO %I', v_worker);
    ELSE
        RAISE WARNING 'pgq roles: role % does not exist; its grants on age_jobs and the claim rules are skipped. '
                      'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 011.sql again',
                      v_worker, v_worker;
    END IF;
END
$roles$;
