-- pgq.job_status_estimates
-- Estimated number of jobs per status, from the planner's statistics of the
-- jobs table: its row count (pg_class.reltuples, kept by VACUUM and ANALYZE)
-- times each status's share among the most common values ANALYZE sampled
-- (pg_stats). Free to read, and as fresh as the last (auto)analyze, shown in
-- as_of. The answer for the completed and cancelled jobs kept for the
-- retention period, which queue_stats does not count; a status too rare to be
-- among the sampled common values is missing (count it exactly: it is rare).
-- No row at all before the first ANALYZE of jobs.
-- Example: SELECT * FROM pgq.job_status_estimates;
CREATE OR REPLACE VIEW job_status_estimates AS
SELECT v.status::job_status                                    AS status,
       round(greatest(c.reltuples, 0) * v.frequency)::bigint   AS jobs,
       greatest(t.last_analyze, t.last_autoanalyze)            AS as_of
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_stats AS s
  ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = 'status'
JOIN pg_catalog.pg_stat_all_tables AS t ON t.relid = c.oid
CROSS JOIN LATERAL unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS v(status, frequency)
WHERE c.oid = 'jobs'::regclass;

COMMENT ON VIEW job_status_estimates IS
    'Estimated jobs per status from the table statistics (as of the last ANALYZE): the cheap count of finished jobs, which queue_stats leaves out.';
