-- COMMENT ON FUNCTION for the stored functions that revision 0005 does not
-- replace (revision 0005; the functions it replaces carry their comment in
-- their own file). A DBA reads them with \df+ pgq.* or obj_description().
-- The claim path's functions (get_runnable_jobs, claim_jobs, register_worker,
-- heartbeat_worker, deregister_worker, mark_stale_workers) are commented by
-- the revision that replaces them next.
-- Runs with search_path set to the pgq schema.

COMMENT ON FUNCTION enqueue_jobs(text[], jsonb[], text[], integer[], timestamptz[], integer[], double precision[],
                                 text[], double precision[], double precision[], double precision[],
                                 double precision[], timestamptz) IS
    'Enqueues a batch of jobs in one statement (element i of every array is job i); a unique key held by a live job returns that job''s id with created = false.';
COMMENT ON FUNCTION enqueue_job(text, jsonb, text, integer, interval, integer, interval, text, timestamptz,
                                timestamptz) IS
    'Enqueues one job and returns its id (the live job''s id when its unique key is taken); a psql-friendly wrapper over enqueue_jobs.';
COMMENT ON FUNCTION fail_job(bigint, uuid, integer, text, text, text, double precision, boolean, attempt_outcome,
                             timestamptz) IS
    'Records a failed attempt, fenced by (job id, worker, attempt): the job retries with backoff or goes to the dead letter queue; false for a stale report.';
COMMENT ON FUNCTION release_jobs(uuid, bigint[], integer[], timestamptz) IS
    'Gives back running jobs a worker claimed but never started (shutdown): queued again at once, the attempt not counted; fenced; returns the released ids.';
COMMENT ON FUNCTION fail_timed_out_jobs(interval, timestamptz) IS
    'Fails (outcome timed_out) the running jobs that overran their timeout by more than p_grace: they retry or die; returns (job_id, worker_id, job_status) per job.';
COMMENT ON FUNCTION notify_queues(text[]) IS
    'Internal: one NOTIFY per distinct queue on <schema>_job_available (payload: the queue name).';
COMMENT ON FUNCTION retry_delay(integer, double precision, double precision, double precision) IS
    'Backoff in seconds before the attempt after p_attempt, without jitter: min(base * factor^(attempt - 1), max); NULLs take the defaults (1 s, 2, 300 s).';
COMMENT ON FUNCTION mirror_horizon() IS
    'Redis accelerator: the start of the oldest transaction open in this database (or now()), the reconciler''s watermark.';
COMMENT ON FUNCTION runnable_jobs_after(timestamptz, bigint, timestamptz, integer) IS
    'Redis accelerator: up to p_limit runnable jobs after (p_after_run_at, p_after_id) and due by p_until, in (run_at, id) order; reads only.';
COMMENT ON FUNCTION set_updated_at() IS
    'Trigger function: sets updated_at to now() on UPDATEs that did not set it (manual repairs).';
COMMENT ON FUNCTION notify_job_available() IS
    'Trigger function (after INSERT on jobs, per statement): one NOTIFY per queue that received a job runnable now.';
