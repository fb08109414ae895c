-- pgq.check_worker_may_claim(p_caller, p_worker_id, p_status)
-- Internal (the claim functions): raises unless p_status, the worker's status
-- (NULL when it has no registry row), lets it claim jobs.
--   active                 returns;
--   draining               PQ005 (pgq.WorkerDraining): the worker was asked to
--                          drain (drain_worker); it must stop claiming, finish
--                          or release what it holds, and deregister. Claiming
--                          again cannot succeed, so it must not retry;
--   stale                  PQ002 (pgq.InvalidTransition): its jobs were rescued;
--                          it registers again (register_worker) to go on;
--   stopped, unregistered  PQ002.
-- p_caller names the public function in the message.
CREATE OR REPLACE FUNCTION check_worker_may_claim(
    p_caller text,
    p_worker_id uuid,
    p_status worker_status_enum
) RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_status = 'active' THEN
        RETURN;
    END IF;
    IF p_status = 'draining' THEN
        RAISE EXCEPTION '%: worker % is draining: it claims no more jobs; it finishes or releases the jobs it holds, then deregisters',
            p_caller, p_worker_id USING ERRCODE = 'PQ005';
    END IF;
    RAISE EXCEPTION '%: worker % is %, only an active worker may claim jobs',
        p_caller, p_worker_id, coalesce(p_status::text, 'not registered') USING ERRCODE = 'PQ002';
END
$$;
COMMENT ON FUNCTION check_worker_may_claim(text, uuid, worker_status_enum) IS
    'Internal (claim functions): raise PQ005 for a draining worker, PQ002 for a stale, stopped or unregistered one.';
