-- An operator's (or the user's) act on one address, with its audit event, atomically.
-- KEYS: 1 state  2 soft  3 track (lib.lua)  4 hits  5 the legacy hard-score hash
--       6 the outbox (notify.py), optional: the outbox stream or this address's pending list (cluster)
-- ARGV: named once below, in the order of store/scripts.py AdminArgs
-- (tests/store/test_store_scripts.py checks that the two agree).
-- enable: active again, counters reset. disable: the given state. reset: counters to zero, state kept.
-- Returns {previous, state} (store/scripts.py AdminReply): the state before and after
local action = ARGV[1]  -- enable|disable|reset
local new_state = ARGV[2]  -- the state `disable` sets
local now = ARGV[3]
local by = ARGV[4]
local event_json = ARGV[5]  -- the audit event as a JSON object
local history_size = ARGV[6]
local history_ttl = ARGV[7]  -- s
local outbox_mode = ARGV[8]  -- stream|list
local outbox_maxlen = ARGV[9]
local history_line = ARGV[10]  -- event.py to_history
local ref = ARGV[11]  -- the audit event's entry ID in the global stream

local previous = redis.call('HGET', KEYS[1], 'state') or 'active'
local state = previous
if action == 'enable' or action == 'reset' then
  redis.call('DEL', KEYS[2], KEYS[4], KEYS[5])
end
if action == 'enable' then
  redis.call('DEL', KEYS[1])
  state = 'active'
elseif action == 'disable' then
  state = new_state
  redis.call('HSET', KEYS[1], 'state', state, 'since', now, 'by', by)
end
local size = tonumber(history_size)
local exists, hscore, hday, lines = track_read(KEYS[3])
if action == 'enable' or action == 'reset' then hscore, hday = 0, '' end
if size > 0 or hday ~= '' then
  -- A live score keeps its reset time; the history alone lives history_ttl after this event.
  local expiry = hday ~= '' and {'KEEPTTL'} or {'EX', history_ttl}
  -- A disabled address keeps its history as long as its state: no TTL (record.lua says why).
  if state ~= 'active' then expiry = {} end
  -- event.py LINE_FIELDS: the event's fields, ref, then scored, state, score, soft, previous
  local line = history_line .. '\t' .. ref .. '\t\t' .. state .. '\t\t\t' .. previous
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
  local e = cjson.decode(event_json)
  outbox_add(KEYS[6], outbox_mode, outbox_maxlen, announce, state, e, e['reason'] or e['note'] or '', '',
    e['id'] or '', now)
end
return {previous, state}
