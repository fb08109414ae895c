-- finish_build.lua: publish a completed rebuild of the mirror.
-- KEYS: building, mirror; ARGV: token, epoch, horizon, now, layout
-- Publishes nothing when Redis lost the build token meanwhile (FLUSHALL or a
-- restart during the rebuild: the mirror would be incomplete). Returns 1 if published.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[1])
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'horizon', ARGV[3], 'reconciled_at', ARGV[4],
           'full_at', ARGV[4], 'built_at', ARGV[4], 'layout', ARGV[5])
return 1
