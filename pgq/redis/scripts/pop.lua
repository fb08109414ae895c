-- pop.lua: pop up to n ids of one queue in priority order, recorded as one batch.
-- KEYS (one queue's slot): built, owners, popped, ready, wake, popped-at
-- ARGV: n, worker, pop number, ahead, r, claimed pop number_1..r
-- Deletes the r claimed batches first (ids popped earlier and since claimed in
-- Postgres or dropped), then pops up to n ids in priority order, and up to
-- `ahead` more when at least twice that many would remain, and records them as
-- batch <pop number> and their pop time in popped-at (trimmed to the last
-- POPPED_AT_KEEP_MS). Returns {0} when the queue's ready set is not built (use
-- Postgres), else {1, id, score, id, score, ...}.
-- Lua's unpack() and a command's arguments are bounded: long lists go in chunks of CHUNK.
local CHUNK = 1000
local POPPED_AT_KEEP_MS = @POPPED_AT_KEEP_MS@
local n = tonumber(ARGV[1])
local ahead = tonumber(ARGV[4])
local r = tonumber(ARGV[5])
for i = 6, 5 + r, CHUNK do
  redis.call('HDEL', KEYS[3], unpack(ARGV, i, math.min(i + CHUNK - 1, 5 + r)))
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
if ahead > 0 and redis.call('ZCARD', KEYS[4]) >= n + 2 * ahead then n = n + ahead end
local out, ids = {1}, {}
local items = redis.call('ZPOPMIN', KEYS[4], n)
for j = 1, #items, 2 do
  ids[#ids + 1] = items[j]
  out[#out + 1] = items[j]
  out[#out + 1] = items[j + 1]
end
if #ids > 0 then
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local now = string.format('%.0f', ms)
  redis.call('HSET', KEYS[3], ARGV[3], now .. ' ' .. table.concat(ids, ' '))
  redis.call('SADD', KEYS[2], ARGV[2])
  local zargs = {}
  for _, id in ipairs(ids) do
    zargs[#zargs + 1] = now
    zargs[#zargs + 1] = id
  end
  for i = 1, #zargs, 2 * CHUNK do
    redis.call('ZADD', KEYS[6], unpack(zargs, i, math.min(i + 2 * CHUNK - 1, #zargs)))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', string.format('(%.0f', ms - POPPED_AT_KEEP_MS))
end
-- Ids left behind: leave a wake-up token for the next idle worker (the cascade).
-- One is enough; if tokens are waiting already, nobody is blocked to take another.
if redis.call('EXISTS', KEYS[4]) == 1 and redis.call('LLEN', KEYS[5]) == 0 then
  redis.call('LPUSH', KEYS[5], '1')
end
return out
