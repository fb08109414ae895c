-- lease.lua: take or extend the reconciler lease; 1 when ARGV[1] holds it.
-- KEYS: lease; ARGV: owner, ttl ms
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
