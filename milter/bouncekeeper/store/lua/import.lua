-- An imported suppression (`bouncekeeper import`): the state set only where the address is active, so a
-- second run of the same file changes nothing and an import never overrides a state already held.
-- KEYS: 1 state  2 track (lib.lua)
-- ARGV: 1 state  2 since  3 by  4 the event's history line (event.py to_history)  5 ref: the event's
--       entry ID in the global stream  6 history_size
-- Returns the state held before: 'active' when this call set it.
local previous = redis.call('HGET', KEYS[1], 'state')
if previous then return previous end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'since', ARGV[2], 'by', ARGV[3])
local size = tonumber(ARGV[6])
local exists, hscore, hday, lines = track_read(KEYS[2])
if size > 0 or exists then
  -- A disabled address keeps its history as long as its state: no TTL (record.lua says why).
  -- event.py LINE_FIELDS: the event's fields, ref, then scored, state, score, soft, previous
  local line = ARGV[4] .. '\t' .. ARGV[5] .. '\t\t' .. ARGV[1] .. '\t\t\tactive'
  track_write(KEYS[2], hscore, hday, lines, line, size, {})
end
return 'active'
