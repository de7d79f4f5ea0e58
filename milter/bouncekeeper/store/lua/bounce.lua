-- One address's part of one bounce in ONE round trip, for a single Redis server (not a Cluster, where
-- the domain, address, stream and stats keys live in different slots and the Python side splits this
-- into two pipelines). Redis.py prepends breaker.lua and record.lua as the local functions `breaker`
-- and `record`, so the rules themselves exist once.
--
-- KEYS: 1 failing  2 frozen  3-8 record.lua's KEYS  9 stream  10 stats  11 the outbox (record.lua's KEYS[7])
--       12 replay (record.lua's KEYS[8])
-- ARGV: 1 the breaker: 0 not asked, 1 asked and fed, 2 asked only (a failure that is not authentic)
--       2-6 breaker.lua's ARGV (address, now, window, threshold, freeze)
--       7-22 record.lua's ARGV (16, the last one, frozen, is decided here)
--       23 stream size  24 event kind  25 source  26 event JSON for the stream  27 domain
--       28-31 record.lua's ARGV 17-20 (the outbox: hard bounces 0|1, stream|list, maxlen; history line)
--       32 record.lua's ARGV 22 (the replay key's TTL)
-- The event's stream entry is written first, so that its ID goes into the history line (record.lua's
-- ARGV 21); a duplicate (its seen key exists) writes none.
-- Returns record.lua's reply followed by {open, opened_now, distinct addresses}

local open, opened, distinct = 0, 0, 0
-- Inside this script, a missing seen key means record() will count the event (its SET NX succeeds).
local fresh = tonumber(ARGV[19]) == 0 or redis.call('EXISTS', KEYS[8]) == 0
-- A duplicate must not feed the breaker either (it is idempotent anyway: ZADD of the same member).
if ARGV[1] ~= '0' and fresh then
  local feed = ARGV[1] == '1' and '1' or '0'
  local b = breaker({KEYS[1], KEYS[2]}, {ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], feed})
  open, opened, distinct = b[1], b[2], b[3]
end

local rargs = {}
for i = 7, 22 do rargs[#rargs + 1] = ARGV[i] end
rargs[16] = tostring(open)
for i = 28, 31 do rargs[#rargs + 1] = ARGV[i] end
rargs[21] = ''
rargs[22] = ARGV[32]
if fresh then
  rargs[21] = redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[23], '*',
    'kind', ARGV[24], 'address', ARGV[2], 'event', ARGV[26])
end
local r = record({KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[11], KEYS[12]}, rargs)

local function announce(kind, note, extra)
  local entry = {at = tonumber(ARGV[3]), kind = kind, source = ARGV[25], address = ARGV[2], note = note}
  for key, value in pairs(extra) do entry[key] = value end
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[23], '*',
    'kind', kind, 'address', ARGV[2], 'event', cjson.encode(entry))
  redis.call('HINCRBY', KEYS[10], 'events:' .. kind, 1)
end

if r[1] == 'new' then
  redis.call('HINCRBY', KEYS[10], 'events:' .. ARGV[24], 1)
else
  redis.call('HINCRBY', KEYS[10], 'duplicates', 1)
end
if opened == 1 then
  announce('breaker', string.format('domain %s: %d addresses failing within %s s; scoring frozen for %s s',
    ARGV[27], distinct, ARGV[4], ARGV[6]), {})
  redis.call('HINCRBY', KEYS[10], 'breaker:opened', 1)
end
-- r: {status, state, score, soft, scored, converted, disabled, reached, why, crossed}
-- Observe mode announces the threshold once, on the step that crosses it, not on every bounce after.
if r[7] == 1 or r[10] == 1 then
  announce(r[7] == 1 and 'disabled' or 'threshold',
    string.format('score %d/%s (%s rule)', r[3], ARGV[14], ARGV[11]), {id = ARGV[21]})
end
r[#r + 1] = open
r[#r + 1] = opened
r[#r + 1] = distinct
return r
