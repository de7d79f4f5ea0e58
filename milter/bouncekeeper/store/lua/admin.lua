-- An operator's (or the user's) act on one address, with its audit event, atomically.
-- KEYS: 1 state  2 soft  3 track (lib.lua)  4 hits  5 the legacy hard-score hash
-- ARGV: 1 action enable|disable|reset  2 new state (disable)  3 now  4 by  5 event JSON object
--       6 history_size  7 history_ttl s  10 the event's history line (event.py to_history)
--       11 ref: the audit event's entry ID in the global stream
-- KEYS 6 and ARGV 8..9, the outbox (notify.py), optional: 6 the outbox stream or this address's pending
--       list (cluster)  8 stream|list  9 maxlen
-- enable: active again, counters reset. disable: the given state. reset: counters to zero, state kept.
-- Returns {previous state, state}
local previous = redis.call('HGET', KEYS[1], 'state') or 'active'
local state = previous
local action = ARGV[1]
if action == 'enable' or action == 'reset' then
  redis.call('DEL', KEYS[2], KEYS[4], KEYS[5])
end
if action == 'enable' then
  redis.call('DEL', KEYS[1])
  state = 'active'
elseif action == 'disable' then
  state = ARGV[2]
  redis.call('HSET', KEYS[1], 'state', state, 'since', ARGV[3], 'by', ARGV[4])
end
local size = tonumber(ARGV[6])
local exists, hscore, hday, lines = track_read(KEYS[3])
if action == 'enable' or action == 'reset' then hscore, hday = 0, '' end
if size > 0 or hday ~= '' then
  -- A live score keeps its reset time; the history alone lives history_ttl after this event.
  local expiry = hday ~= '' and {'KEEPTTL'} or {'EX', ARGV[7]}
  -- A disabled address keeps its history as long as its state: no TTL (record.lua says why).
  if state ~= 'active' then expiry = {} end
  -- event.py LINE_FIELDS: the event's fields, ref, then scored, state, score, soft, previous
  local line = ARGV[10] .. '\t' .. ARGV[11] .. '\t\t' .. state .. '\t\t\t' .. previous
  track_write(KEYS[3], hscore, hday, lines, line, size, expiry)
elseif exists then
  redis.call('DEL', KEYS[3])  -- enable or reset with the history off: the score goes
end
-- The outbox: only an act that changes whether the address is mailed is announced.
local announce = nil
if action == 'enable' and previous ~= 'active' then
  announce = 'enabled'
elseif action == 'disable' and previous == 'active' then
  announce = 'disabled'
end
if announce and KEYS[6] then
  local e = cjson.decode(ARGV[5])
  outbox_add(KEYS[6], ARGV[8], ARGV[9], announce, state, e, e['reason'] or e['note'] or '', '', e['id'] or '',
    ARGV[3])
end
return {previous, state}
