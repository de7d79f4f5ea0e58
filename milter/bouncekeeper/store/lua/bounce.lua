-- One address's part of one bounce in ONE round trip, for a single Redis server (not a Cluster, where
-- the domain, address, stream and stats keys live in different slots and store/recording.py splits
-- this into two pipelines). store/scripts.py prepends breaker.lua and record.lua as the local functions
-- `breaker` and `record`, so the rules themselves exist once.
--
-- KEYS: 1 failing  2 frozen  3-8 record.lua's KEYS  9 stream  10 stats  11 the outbox (record.lua's KEYS[7])
--       12 replay (record.lua's KEYS[8])
-- ARGV: 1-22 record.lua's ARGV, passed on to it (its frozen and ref are decided here), then this
-- script's own; each named once below, in the order of store/scripts.py BounceArgs
-- (tests/store/test_store_scripts.py checks that the two agree).
-- The event's stream entry is written first, so that its ID goes into the history line (record.lua's
-- ref); a duplicate (its seen key exists) writes none.
-- Returns record.lua's reply followed by {open, opened, distinct} (breaker.lua's reply; store/scripts.py
-- BounceReply)

local now = ARGV[2]
local rule = ARGV[5]
local threshold = ARGV[8]
local dedup_ttl = ARGV[13]
local event_json = ARGV[14]
local event_id = ARGV[15]
local breaker_use = ARGV[23]  -- 0 not asked, 1 asked and fed, 2 asked only (a failure that is not authentic)
local address = ARGV[24]
local breaker_window = ARGV[25]
local breaker_threshold = ARGV[26]
local breaker_freeze = ARGV[27]
local stream_size = ARGV[28]
local event_kind = ARGV[29]
local source = ARGV[30]
local domain = ARGV[31]

local open, opened, distinct = 0, 0, 0
-- Inside this script, a missing seen key means record() will count the event (its SET NX succeeds).
local fresh = tonumber(dedup_ttl) == 0 or redis.call('EXISTS', KEYS[8]) == 0
-- A duplicate must not feed the breaker either (it is idempotent anyway: ZADD of the same member).
if breaker_use ~= '0' and fresh then
  local feed = breaker_use == '1' and '1' or '0'
  local b = breaker({KEYS[1], KEYS[2]},
    {address, now, breaker_window, breaker_threshold, breaker_freeze, feed})
  open, opened, distinct = b[1], b[2], b[3]
end

local ref = ''
if fresh then
  ref = redis.call('XADD', KEYS[9], 'MAXLEN', '~', stream_size, '*',
    'kind', event_kind, 'address', address, 'event', event_json)
end
local rargs = {unpack(ARGV, 1, 22)}
rargs[16] = tostring(open)  -- frozen
rargs[21] = ref  -- ref
local r = record({KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[11], KEYS[12]}, rargs)

local function announce(kind, note, extra)
  local entry = {at = tonumber(now), kind = kind, source = source, address = address, note = note}
  for key, value in pairs(extra) do entry[key] = value end
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', stream_size, '*',
    'kind', kind, 'address', address, 'event', cjson.encode(entry))
  redis.call('HINCRBY', KEYS[10], 'events:' .. kind, 1)
end

if r[1] == 'new' then
  redis.call('HINCRBY', KEYS[10], 'events:' .. event_kind, 1)
else
  redis.call('HINCRBY', KEYS[10], 'duplicates', 1)
end
if opened == 1 then
  announce('breaker', string.format('domain %s: %d addresses failing within %s s; scoring frozen for %s s',
    domain, distinct, breaker_window, breaker_freeze), {})
  redis.call('HINCRBY', KEYS[10], 'breaker:opened', 1)
end
-- r: {status, state, score, soft, scored, converted, disabled, reached, why, crossed}
-- Observe mode announces the threshold once, on the step that crosses it, not on every bounce after.
if r[7] == 1 or r[10] == 1 then
  announce(r[7] == 1 and 'disabled' or 'threshold',
    string.format('score %d/%s (%s rule)', r[3], threshold, rule), {id = event_id})
end
r[#r + 1] = open
r[#r + 1] = opened
r[#r + 1] = distinct
return r
