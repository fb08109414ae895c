-- pgq.notify_job_status()  (trigger function) and its trigger on jobs
-- After each statement that updates the status of jobs (or deletes jobs), sends
-- one NOTIFY on the channel '<schema>_job_status' with an empty payload: "some
-- job's status may have changed; read the ones you wait for again". The waiters
-- of Queue.wait_async LISTEN on it instead of polling, and read the status of
-- every job they wait for in one statement per notification.
--
-- Statement-level and without a transition table (Postgres allows none on a
-- trigger with a column list): one notification per statement whatever the
-- number of rows, so a claim or a completion batch of 100 jobs costs one
-- pg_notify, not 100; Postgres folds repeats within a transaction. No
-- SET search_path, for the reason given in notify_job_available/001.sql.
CREATE OR REPLACE FUNCTION notify_job_status()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_catalog.pg_notify(TG_TABLE_SCHEMA || '_job_status', '');
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION notify_job_status() IS
    'Trigger: after a statement that changes the status of jobs (or deletes jobs), NOTIFY <schema>_job_status (empty payload) for the waiters of Queue.wait_async.';

CREATE OR REPLACE TRIGGER jobs_notify_job_status
    AFTER UPDATE OF status OR DELETE ON jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION notify_job_status();
