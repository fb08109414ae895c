-- retire.lua: delete a worker's batches (shutdown, or a dead worker); return them.
-- KEYS: popped, owners, heartbeat, worker wake; ARGV: worker
local batches = redis.call('HVALS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('SREM', KEYS[2], ARGV[1])
return batches
