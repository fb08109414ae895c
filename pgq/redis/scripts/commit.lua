-- commit.lua: record a reconciler pass, only on the mirror it started on
-- (not on one rebuilt or flushed meanwhile).
-- KEYS: mirror; ARGV: epoch, horizon, now, full ('1' or '0')
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'horizon', ARGV[2], 'reconciled_at', ARGV[3])
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'full_at', ARGV[3]) end
return 1
