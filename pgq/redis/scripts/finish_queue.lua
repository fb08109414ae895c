-- finish_queue.lua: mark one queue's ready set as built, only if its rebuild token
-- survived (the node kept its data during the rebuild). Returns 1 if marked.
-- KEYS (one queue's slot): building, built; ARGV: token, epoch
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2])
return 1
