-- Roles for revision 0008 (the model is db/roles/001.sql's; read it first).
--
--   heartbeat_worker_v3   a worker's heartbeat with its health sample
--   prune_health_logs     the maintenance leader deletes old health samples
--   health_alerts         (view) the alert rules evaluated; alert_rules, the rules
--
-- The functions are SECURITY DEFINER (they write workers and
-- worker_health_logs, which no role may do directly), closed to PUBLIC and
-- granted to <schema>_worker. <schema>_producer reads the view health_alerts
-- and the table alert_rules like the other views (`pgq health --check` needs
-- nothing else); changing a rule is the schema owner's (a DBA's) business.
--
-- Runs with search_path set to the pgq schema. Idempotent: when a role does
-- not exist, it warns and skips its grants; once a DBA created the roles, the
-- schema's owner runs db/roles/001.sql to 005.sql and this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/006.sql

ALTER FUNCTION heartbeat_worker_v3(uuid, integer, bigint[], bigint, jsonb, timestamptz) SECURITY DEFINER;
REVOKE ALL ON FUNCTION heartbeat_worker_v3(uuid, integer, bigint[], bigint, jsonb, timestamptz) FROM PUBLIC;
ALTER FUNCTION prune_health_logs(interval, integer, timestamptz) SECURITY DEFINER;
REVOKE ALL ON FUNCTION prune_health_logs(interval, integer, timestamptz) FROM PUBLIC;

DO $roles$
DECLARE
    v_worker constant text := current_schema() || '_worker';
    v_producer constant text := current_schema() || '_producer';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_producer) THEN
        EXECUTE format('GRANT SELECT ON health_alerts, alert_rules TO %I', v_producer);
    ELSE
        RAISE WARNING 'pgq roles: role % does not exist; its grants on health_alerts and alert_rules are skipped. '
                      'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 006.sql again',
                      v_producer, v_producer;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_worker) THEN
        RAISE WARNING 'pgq roles: role % does not exist; its grants on heartbeat_worker_v3 and prune_health_logs '
                      'are skipped. Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 006.sql again',
                      v_worker, v_worker;
        RETURN;
    END IF;
    EXECUTE format('GRANT EXECUTE ON FUNCTION heartbeat_worker_v3(uuid, integer, bigint[], bigint, jsonb, timestamptz) '
                   'TO %I', v_worker);
    EXECUTE format('GRANT EXECUTE ON FUNCTION prune_health_logs(interval, integer, timestamptz) TO %I', v_worker);
END
$roles$;
