-- pgq.notify_queues(p_queues)
-- Sends one NOTIFY per distinct queue on the channel '<schema>_job_available',
-- payload = queue name. Postgres folds identical notifications within one
-- transaction, so a transaction wakes each queue's workers at most once.
CREATE OR REPLACE FUNCTION notify_queues(p_queues text[])
RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT pg_notify(current_schema() || '_job_available', q)
    FROM (SELECT DISTINCT unnest(p_queues) AS q) AS d
    WHERE q IS NOT NULL
$$;
