-- pgq.notify_job_available()  (trigger function) and its trigger on jobs
-- After each INSERT statement, sends one NOTIFY per queue that received a job
-- runnable now, on the channel '<schema>_job_available' (payload: queue).
-- Statement-level with a transition table: a bulk insert of 100,000 jobs sends
-- one notification per queue, not 100,000; Postgres folds repeats within a
-- transaction, so each queue is notified at most once per transaction.
CREATE OR REPLACE FUNCTION notify_job_available()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM notify_queues(ARRAY(
        SELECT DISTINCT queue FROM new_jobs
        WHERE status IN ('queued', 'retrying') AND run_at <= now()));
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER jobs_notify_job_available
    AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION notify_job_available();
