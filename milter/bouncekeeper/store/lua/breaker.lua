-- Per-domain circuit breaker: count distinct addresses of one domain with a scored failure in a
-- sliding window; at the threshold, open the breaker (freeze scoring for the domain) for a while.
-- KEYS: 1 failing (zset address -> last failure time)  2 frozen (hash, exists while open)
-- ARGV: 1 address  2 now  3 window s  4 threshold  5 freeze s  6 feed 1|0 (0: only say whether it is
-- open; a failure that is not authentic (no signed VERP address for it) obeys the breaker but never
-- counts towards opening it, so a forged bounce cannot freeze a domain's scoring)
-- Returns {open 0|1, opened_now 0|1, distinct addresses}
local now = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {1, 0, tonumber(redis.call('HGET', KEYS[2], 'addresses') or '0')}
end
if ARGV[6] == '0' then return {0, 0, 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now - tonumber(ARGV[3])))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[2], 'since', ARGV[2], 'addresses', n)
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('DEL', KEYS[1])
  return {1, 1, n}
end
return {0, 0, n}
