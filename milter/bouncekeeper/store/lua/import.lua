-- An imported suppression (`bouncekeeper import`): the state set only where the address is active, so a
-- second run of the same file changes nothing and an import never overrides a state already held.
-- KEYS: 1 state  2 track (lib.lua)
-- ARGV: named once below, in the order of store/scripts.py ImportArgs
-- (tests/store/test_store_scripts.py checks that the two agree).
-- Returns the state held before: 'active' when this call set it.
local state = ARGV[1]
local since = ARGV[2]
local by = ARGV[3]
local history_line = ARGV[4]  -- event.py to_history
local ref = ARGV[5]  -- the event's entry ID in the global stream
local history_size = ARGV[6]

local previous = redis.call('HGET', KEYS[1], 'state')
if previous then return previous end
redis.call('HSET', KEYS[1], 'state', state, 'since', since, 'by', by)
local size = tonumber(history_size)
local exists, hscore, hday, lines = track_read(KEYS[2])
if size > 0 or exists then
  -- A disabled address keeps its history as long as its state: no TTL (record.lua says why).
  -- event.py LINE_FIELDS: the event's fields, ref, then scored, state, score, soft, previous
  local line = history_line .. '\t' .. ref .. '\t\t' .. state .. '\t\t\tactive'
  track_write(KEYS[2], hscore, hday, lines, line, size, {})
end
return 'active'
