-- pop.lua: pop up to n ids in priority order across a worker's queues, recorded as one batch.
-- KEYS: mirror, owners, popped, ready_1..k, wake_1..k, popped-at
-- ARGV: n, worker, k, pop number, ahead, r, claimed pop number_1..r
-- Deletes the r claimed batches first (ids popped earlier and since claimed in
-- Postgres or dropped), then pops up to n ids in priority order, and (one queue
-- only) up to `ahead` more when at least twice that many would remain, and
-- records them as batch <pop number> and their pop time in popped-at (trimmed
-- to the last POPPED_AT_KEEP_MS). Returns {0} when the mirror is not built
-- (use Postgres), else {1, id, score, ...} for one queue and {1, id, score,
-- queue index, ...} for several.
-- Lua's unpack() and a command's arguments are bounded: long lists go in chunks of CHUNK.
local CHUNK = 1000
local POPPED_AT_KEEP_MS = @POPPED_AT_KEEP_MS@
local n = tonumber(ARGV[1])
local k = tonumber(ARGV[3])
local ahead = tonumber(ARGV[5])
local r = tonumber(ARGV[6])
for i = 7, 6 + r, CHUNK do
  redis.call('HDEL', KEYS[3], unpack(ARGV, i, math.min(i + CHUNK - 1, 6 + r)))
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local out, ids = {1}, {}
if k == 1 then
  if ahead > 0 and redis.call('ZCARD', KEYS[4]) >= n + 2 * ahead then n = n + ahead end
  local items = redis.call('ZPOPMIN', KEYS[4], n)
  for j = 1, #items, 2 do
    ids[#ids + 1] = items[j]
    out[#out + 1] = items[j]
    out[#out + 1] = items[j + 1]
  end
else
  local cands = {}
  for i = 1, k do
    local items = redis.call('ZRANGE', KEYS[3 + i], 0, n - 1, 'WITHSCORES')
    for j = 1, #items, 2 do
      cands[#cands + 1] = {tonumber(items[j + 1]), items[j], items[j + 1], i}
    end
  end
  table.sort(cands, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for idx = 1, math.min(n, #cands) do
    local c = cands[idx]
    redis.call('ZREM', KEYS[3 + c[4]], c[2])
    ids[#ids + 1] = c[2]
    out[#out + 1] = c[2]
    out[#out + 1] = c[3]
    out[#out + 1] = c[4]
  end
end
if #ids > 0 then
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local now = string.format('%.0f', ms)
  redis.call('HSET', KEYS[3], ARGV[4], now .. ' ' .. table.concat(ids, ' '))
  redis.call('SADD', KEYS[2], ARGV[2])
  local zargs = {}
  for _, id in ipairs(ids) do
    zargs[#zargs + 1] = now
    zargs[#zargs + 1] = id
  end
  for i = 1, #zargs, 2 * CHUNK do
    redis.call('ZADD', KEYS[#KEYS], unpack(zargs, i, math.min(i + 2 * CHUNK - 1, #zargs)))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[#KEYS], '-inf', string.format('(%.0f', ms - POPPED_AT_KEEP_MS))
end
-- Ids left behind: leave a wake-up token for the next idle worker (the cascade).
-- One is enough; if tokens are waiting already, nobody is blocked to take another.
for i = 1, k do
  if redis.call('EXISTS', KEYS[3 + i]) == 1 and redis.call('LLEN', KEYS[3 + k + i]) == 0 then
    redis.call('LPUSH', KEYS[3 + k + i], '1')
  end
end
return out
