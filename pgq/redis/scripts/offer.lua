-- offer.lua: add runnable ids to a queue's ready set, with wake-up tokens.
-- KEYS (one queue's slot): ready, wake, popped-at
-- ARGV: wake cap, cutoff ms, score_1, id_1, score_2, id_2, ...
-- Adds the ids not in the ready set yet (ZADD NX: a duplicate changes nothing) and
-- a wake-up token per id added (capped). With a cutoff (> 0), an id popped at or
-- after the cutoff is left out: the reconciler read it as runnable from a snapshot
-- taken after the cutoff, and a worker has taken it since. Returns how many were added.
local CHUNK = 1000
local cutoff = tonumber(ARGV[2])
local added = 0
for i = 3, #ARGV, 2 * CHUNK do
  local last = math.min(i + 2 * CHUNK - 1, #ARGV)
  if cutoff > 0 then
    local ids = {}
    for j = i + 1, last, 2 do ids[#ids + 1] = ARGV[j] end
    local popped = redis.call('ZMSCORE', KEYS[3], unpack(ids))
    local zargs = {}
    for j = 1, #ids do
      if not popped[j] or tonumber(popped[j]) < cutoff then
        zargs[#zargs + 1] = ARGV[i + 2 * (j - 1)]
        zargs[#zargs + 1] = ids[j]
      end
    end
    if #zargs > 0 then added = added + redis.call('ZADD', KEYS[1], 'NX', unpack(zargs)) end
  else
    added = added + redis.call('ZADD', KEYS[1], 'NX', unpack(ARGV, i, last))
  end
end
if added > 0 then
  local tokens = {}
  for _ = 1, math.min(added, tonumber(ARGV[1])) do tokens[#tokens + 1] = '1' end
  redis.call('LPUSH', KEYS[2], unpack(tokens))
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[1]) - 1)
end
return added
