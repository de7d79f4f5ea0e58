-- An operator's (or the user's) act on one address, with its audit event, atomically.
-- KEYS: 1 state  2 soft  3 hard  4 hits  5 events
-- ARGV: 1 action enable|disable|reset  2 new state (disable)  3 now  4 by  5 event JSON object
--       6 history_size  7 history_ttl s
-- enable: active again, counters reset. disable: the given state. reset: counters to zero, state kept.
-- Returns {previous state, state}
local previous = redis.call('HGET', KEYS[1], 'state') or 'active'
local state = previous
local action = ARGV[1]
if action == 'enable' or action == 'reset' then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
end
if action == 'enable' then
  redis.call('DEL', KEYS[1])
  state = 'active'
elseif action == 'disable' then
  state = ARGV[2]
  redis.call('HSET', KEYS[1], 'state', state, 'since', ARGV[3], 'by', ARGV[4])
end
local decision = string.format(',"state":"%s","previous":"%s"}', state, previous)
if tonumber(ARGV[6]) > 0 then
  redis.call('LPUSH', KEYS[5], string.sub(ARGV[5], 1, -2) .. decision)
  redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[6]) - 1)
  redis.call('EXPIRE', KEYS[5], ARGV[7])
end
return {previous, state}
