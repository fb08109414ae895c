-- give_back.lua: return popped ids that were not claimed to one queue's ready set,
-- and delete the batches they were popped in (one step: no id is in neither).
-- KEYS (one queue's slot): popped, ready, wake; ARGV: r, batch_1..r, score_1, id_1, ...
local r = tonumber(ARGV[1])
if r > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 2, 1 + r)) end
if #ARGV > 1 + r then
  redis.call('ZADD', KEYS[2], unpack(ARGV, 2 + r, #ARGV))
  redis.call('LPUSH', KEYS[3], '1')
end
return 1
