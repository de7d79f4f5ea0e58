-- Per-domain circuit breaker: count distinct addresses of one domain with a scored failure in a
-- sliding window; at the threshold, open the breaker (freeze scoring for the domain) for a while.
-- KEYS: 1 failing (zset address -> last failure time)  2 frozen (hash, exists while open)
-- ARGV: named once below, in the order of store/scripts.py BreakerArgs
-- (tests/store/test_store_scripts.py checks that the two agree).
-- Returns {open, opened, distinct} (store/scripts.py BreakerReply): whether the breaker is open, 0|1;
-- whether this call opened it, 0|1; the distinct addresses failing.
local address = ARGV[1]
local now = ARGV[2]  -- epoch seconds
local window = ARGV[3]  -- s
local threshold = ARGV[4]  -- distinct addresses
local freeze = ARGV[5]  -- s
-- 1|0 (0: only say whether it is open; a failure that is not authentic (no signed VERP address for it)
-- obeys the breaker but never counts towards opening it, so a forged bounce cannot freeze a domain's
-- scoring)
local feed = ARGV[6]

if redis.call('EXISTS', KEYS[2]) == 1 then
  return {1, 0, tonumber(redis.call('HGET', KEYS[2], 'addresses') or '0')}
end
if feed == '0' then return {0, 0, 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', tonumber(now) - tonumber(window)))
redis.call('ZADD', KEYS[1], now, address)
redis.call('EXPIRE', KEYS[1], window)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(threshold) then
  redis.call('HSET', KEYS[2], 'since', now, 'addresses', n)
  redis.call('EXPIRE', KEYS[2], freeze)
  redis.call('DEL', KEYS[1])
  return {1, 1, n}
end
return {0, 0, n}
