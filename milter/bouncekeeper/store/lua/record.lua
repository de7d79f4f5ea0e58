-- Record one event for one address, atomically: dedup, counters, state, history.
-- The same machine as core/scoring.py `step` (keep them in step; tests/store/test_store.py compares them).
-- All KEYS share the address's hash tag, so this runs on one Redis Cluster slot.
--
-- KEYS: 1 state (hash)  2 soft (string counter)  3 track (string: daily score and history, lib.lua)
--       4 hits (zset, count rule)  5 the legacy hard-score hash (moved into track, then deleted)
--       6 seen (string: this event was already recorded)
--       7 the outbox (notify.py): the outbox stream (single server) or this address's pending list (cluster)
--       8 replay (string: this VERP address or token already scored for this address)
-- ARGV: named once below, in the order of store/scripts.py RecordArgs
-- (tests/store/test_store_scripts.py checks that the two agree); every ARGV is a string.
-- Returns {status, state, score, soft_count, scored, converted, disabled, reached, why, crossed}
-- (store/scripts.py RecordReply); crossed: this step took the score from below the threshold to it
-- (announced once per crossing)

local effect = ARGV[1]  -- hard|soft|none
local now = ARGV[2]  -- epoch seconds
local day = ARGV[3]  -- day number
local mode = ARGV[4]  -- observe|enforce
local rule = ARGV[5]  -- daily|count
local soft_threshold = ARGV[6]
local soft_window = ARGV[7]  -- s
local threshold = ARGV[8]
local quiet = ARGV[9]  -- s
local count_window = ARGV[10]  -- s
local history_size = ARGV[11]
local history_ttl = ARGV[12]  -- s
local dedup_ttl = ARGV[13]  -- s; 0: no dedup
local event_json = ARGV[14]  -- the event as a JSON object
local event_id = ARGV[15]  -- the hits member
local frozen = ARGV[16]  -- 0|1: the domain's circuit breaker is open
local notify_hard = ARGV[17]  -- 0|1: the outbox also announces every hard bounce
local outbox_mode = ARGV[18]  -- stream|list
local outbox_maxlen = ARGV[19]
local history_line = ARGV[20]  -- event.py to_history; this step appends ref and its decision
local ref = ARGV[21]  -- the event's entry ID in the global stream (written just before, same round trip)
local replay_ttl = ARGV[22]  -- s; 0: the bounce came to no signed address, no replay check

-- The effect this step applies: the one asked for, unless the breaker, the state or a replay says none.
local applied = effect
local size = tonumber(history_size)

-- The daily score and the history, read once.
local exists, hscore, hday, lines = track_read(KEYS[3])
-- A store written by an earlier build: its score hash is moved into the track key (TTL kept) when
-- this step writes.
local legacy_pttl = nil
if not exists then
  local old = redis.call('HMGET', KEYS[5], 'score', 'day')
  if old[1] then
    hscore, hday = tonumber(old[1]), old[2] or ''
    legacy_pttl = redis.call('PTTL', KEYS[5])
  end
end

local function score()
  if rule == 'daily' then return hscore end
  return redis.call('ZCARD', KEYS[4])
end

local function soft_count()
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end

if tonumber(dedup_ttl) > 0 then
  if not redis.call('SET', KEYS[6], '1', 'NX', 'EX', tonumber(dedup_ttl)) then
    local state = redis.call('HGET', KEYS[1], 'state') or 'active'
    return {'duplicate', state, score(), soft_count(), 0, 0, 0, 0, 'already recorded', 0}
  end
end

local state = redis.call('HGET', KEYS[1], 'state') or 'active'
local scored, converted, disabled, reached, crossed = 0, 0, 0, 0, 0
local why = ''

if applied ~= 'none' then
  if frozen == '1' then
    applied = 'none'
    why = 'domain circuit breaker open'
  elseif state ~= 'active' then
    applied = 'none'
    why = 'address is ' .. state
  end
end

-- One signed VERP address (or token) scores an address once, however often it is replayed: it covers
-- the recipient and the day it was signed, not the message, so whoever holds one (a leaked Return-Path)
-- could otherwise send its bounce every day of its validity. The key lives as long as the address
-- verifies; set only when the failure scores, so a failure unscored (a frozen domain) keeps its chance.
local replay_seconds = tonumber(replay_ttl or '0')
if applied ~= 'none' and replay_seconds > 0 then
  if not redis.call('SET', KEYS[8], '1', 'NX', 'EX', replay_seconds) then
    applied = 'none'
    why = 'this VERP address already scored for this address'
  end
end

-- The values known from this step's own commands are kept, to spare reading them again.
local current, soft = nil, nil
local rose = false

if applied == 'soft' then
  scored = 1
  local count = redis.call('INCR', KEYS[2])
  if count < tonumber(soft_threshold) then
    redis.call('EXPIRE', KEYS[2], soft_window)
    soft = count
  else
    -- The soft threshold inside the window is one hard event; the counter restarts (HPI).
    redis.call('DEL', KEYS[2])
    soft = 0
    converted = 1
    applied = 'hard'
  end
end

if applied == 'hard' then
  scored = 1
  -- The score before this step, to tell the step that crosses the threshold from the ones after it.
  local before
  if rule == 'daily' then
    -- Once per day: the score rises only on a day it has not risen yet, and only then is the
    -- quiet-period TTL re-armed (below), so a score that stops rising drops to zero by itself.
    before = hscore
    if hday ~= day then
      hscore, hday, rose = hscore + 1, day, true
    end
    current = hscore
  else
    -- %.17g: the exact double, as Python computes it (Lua's default %.14g would round).
    local oldest = tonumber(now) - tonumber(count_window)
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('%.17g', oldest))
    before = redis.call('ZCARD', KEYS[4])
    redis.call('ZADD', KEYS[4], now, event_id)
    redis.call('EXPIRE', KEYS[4], count_window)
    current = redis.call('ZCARD', KEYS[4])
  end
  if current >= tonumber(threshold) then
    reached = 1
    if before < tonumber(threshold) then crossed = 1 end
    if mode == 'enforce' then
      state = 'disabled-bounces'
      disabled = 1
      redis.call('HSET', KEYS[1], 'state', state, 'since', now, 'by', 'bounces')
    end
  end
end

current = current or score()
soft = soft or soft_count()
-- The track key's expiry: a rise re-arms the quiet period; a live score that did not rise keeps its
-- reset time (a moved legacy score, the one it had); with no live score the history lives history_ttl.
local expiry = nil
if rose then
  expiry = {'EX', quiet}
elseif hday ~= '' then
  if not legacy_pttl then
    expiry = {'KEEPTTL'}
  else
    expiry = legacy_pttl > 0 and {'PX', legacy_pttl} or {'EX', quiet}
  end
elseif size > 0 then
  expiry = {'EX', history_ttl}
end
if state ~= 'active' and expiry then
  -- A disabled address never expires (its state hash has no TTL), and neither do the events that say
  -- why: an operator asked about it months later can still answer. Enabling it gives the history a TTL
  -- again (admin.lua).
  expiry = {}
end
if expiry and (size > 0 or rose or legacy_pttl) then
  -- event.py LINE_FIELDS: the event's fields, ref, then the decision: scored, state, score, soft
  local line = string.format('%s\t%s\t%d\t%s\t%d\t%d', history_line, ref or '', scored, state, current, soft)
  track_write(KEYS[3], hscore, hday, lines, line, size, expiry)
  if legacy_pttl then redis.call('DEL', KEYS[5]) end
end

-- The outbox: a state change is announced in the same atomic step that makes it, so that no
-- notification is lost and none is sent for a change that did not happen.
local function announce(kind)
  if not KEYS[7] then return end
  local e = cjson.decode(event_json)
  outbox_add(KEYS[7], outbox_mode, outbox_maxlen, kind, state, e, e['reason'] or '', e['status'] or '',
    e['id'] or event_id, now)
end
if disabled == 1 then
  announce('disabled')
elseif converted == 1 then
  announce('escalated')
end
if notify_hard == '1' and effect == 'hard' then
  announce('hard_bounce')
end

return {'new', state, current, soft, scored, converted, disabled, reached, why, crossed}
