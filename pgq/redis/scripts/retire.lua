-- retire.lua: delete a worker's batches of one queue (shutdown, or a dead worker); return them.
-- KEYS (one queue's slot): popped, owners, worker wake; ARGV: worker
local batches = redis.call('HVALS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SREM', KEYS[2], ARGV[1])
return batches
