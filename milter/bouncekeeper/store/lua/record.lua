-- Record one event for one address, atomically: dedup, counters, state, history.
-- The same machine as core/scoring.py `step` (keep them in step; tests/store/test_store.py compares them).
-- All KEYS share the address's hash tag, so this runs on one Redis Cluster slot.
--
-- KEYS: 1 state (hash)  2 soft (string counter)  3 track (string: daily score and history, lib.lua)
--       4 hits (zset, count rule)  5 the legacy hard-score hash (moved into track, then deleted)
--       6 seen (string: this event was already recorded)
-- ARGV: 1 effect hard|soft|none  2 now (epoch seconds)  3 day number  4 mode observe|enforce
--       5 rule daily|count  6 soft_threshold  7 soft_window s  8 threshold  9 quiet s  10 count_window s
--       11 history_size  12 history_ttl s  13 dedup_ttl s (0: no dedup)  14 event JSON object
--       15 event id (hits member)  16 frozen 0|1
--       KEYS 7 and ARGV 17..19, the outbox (notify.py): 7 the outbox stream (single server) or
--       this address's pending list (cluster)  17 notify every hard bounce 0|1  18 stream|list  19 maxlen
--       20 the event's history line (event.py to_history; this step appends ref and its decision)
--       21 ref: the event's entry ID in the global stream (written just before, in the same round trip)
--       KEYS 8 and ARGV 22, replays: 8 replay (string: this VERP address or token already scored for
--       this address)  22 its TTL s (0: the bounce came to no signed address; no replay check)
-- Returns {status, state, score, soft_count, scored, converted, disabled, reached, why, crossed}
-- crossed: this step took the score from below the threshold to it (announced once per crossing)

local effect = ARGV[1]
local now = tonumber(ARGV[2])
local rule = ARGV[5]
local size = tonumber(ARGV[11])

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

local dedup_ttl = tonumber(ARGV[13])
if dedup_ttl > 0 then
  if not redis.call('SET', KEYS[6], '1', 'NX', 'EX', dedup_ttl) then
    local state = redis.call('HGET', KEYS[1], 'state') or 'active'
    return {'duplicate', state, score(), soft_count(), 0, 0, 0, 0, 'already recorded', 0}
  end
end

local state = redis.call('HGET', KEYS[1], 'state') or 'active'
local scored, converted, disabled, reached, crossed = 0, 0, 0, 0, 0
local why = ''

if effect ~= 'none' then
  if ARGV[16] == '1' then
    effect = 'none'
    why = 'domain circuit breaker open'
  elseif state ~= 'active' then
    effect = 'none'
    why = 'address is ' .. state
  end
end

-- One signed VERP address (or token) scores an address once, however often it is replayed: it covers
-- the recipient and the day it was signed, not the message, so whoever holds one (a leaked Return-Path)
-- could otherwise send its bounce every day of its validity. The key lives as long as the address
-- verifies; set only when the failure scores, so a failure unscored (a frozen domain) keeps its chance.
local replay_ttl = tonumber(ARGV[22] or '0')
if effect ~= 'none' and replay_ttl > 0 then
  if not redis.call('SET', KEYS[8], '1', 'NX', 'EX', replay_ttl) then
    effect = 'none'
    why = 'this VERP address already scored for this address'
  end
end

-- The values known from this step's own commands are kept, to spare reading them again.
local current, soft = nil, nil
local rose = false

if effect == 'soft' then
  scored = 1
  local count = redis.call('INCR', KEYS[2])
  if count < tonumber(ARGV[6]) then
    redis.call('EXPIRE', KEYS[2], ARGV[7])
    soft = count
  else
    -- The soft threshold inside the window is one hard event; the counter restarts (HPI).
    redis.call('DEL', KEYS[2])
    soft = 0
    converted = 1
    effect = 'hard'
  end
end

if effect == 'hard' then
  scored = 1
  -- The score before this step, to tell the step that crosses the threshold from the ones after it.
  local before
  if rule == 'daily' then
    -- Once per day: the score rises only on a day it has not risen yet, and only then is the
    -- quiet-period TTL re-armed (below), so a score that stops rising drops to zero by itself.
    before = hscore
    if hday ~= ARGV[3] then
      hscore, hday, rose = hscore + 1, ARGV[3], true
    end
    current = hscore
  else
    -- %.17g: the exact double, as Python computes it (Lua's default %.14g would round).
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('%.17g', now - tonumber(ARGV[10])))
    before = redis.call('ZCARD', KEYS[4])
    redis.call('ZADD', KEYS[4], ARGV[2], ARGV[15])
    redis.call('EXPIRE', KEYS[4], ARGV[10])
    current = redis.call('ZCARD', KEYS[4])
  end
  if current >= tonumber(ARGV[8]) then
    reached = 1
    if before < tonumber(ARGV[8]) then crossed = 1 end
    if ARGV[4] == 'enforce' then
      state = 'disabled-bounces'
      disabled = 1
      redis.call('HSET', KEYS[1], 'state', state, 'since', ARGV[2], 'by', 'bounces')
    end
  end
end

current = current or score()
soft = soft or soft_count()
-- The track key's expiry: a rise re-arms the quiet period; a live score that did not rise keeps its
-- reset time (a moved legacy score, the one it had); with no live score the history lives history_ttl.
local expiry = nil
if rose then
  expiry = {'EX', ARGV[9]}
elseif hday ~= '' then
  if not legacy_pttl then
    expiry = {'KEEPTTL'}
  else
    expiry = legacy_pttl > 0 and {'PX', legacy_pttl} or {'EX', ARGV[9]}
  end
elseif size > 0 then
  expiry = {'EX', ARGV[12]}
end
if state ~= 'active' and expiry then
  -- A disabled address never expires (its state hash has no TTL), and neither do the events that say
  -- why: an operator asked about it months later can still answer. Enabling it gives the history a TTL
  -- again (admin.lua).
  expiry = {}
end
if expiry and (size > 0 or rose or legacy_pttl) then
  -- event.py LINE_FIELDS: the event's fields, ref, then the decision: scored, state, score, soft
  local line = string.format('%s\t%s\t%d\t%s\t%d\t%d', ARGV[20], ARGV[21] or '', scored, state, current, soft)
  track_write(KEYS[3], hscore, hday, lines, line, size, expiry)
  if legacy_pttl then redis.call('DEL', KEYS[5]) end
end

-- The outbox: a state change is announced in the same atomic step that makes it, so that no
-- notification is lost and none is sent for a change that did not happen.
local function announce(kind)
  if not KEYS[7] then return end
  local e = cjson.decode(ARGV[14])
  outbox_add(KEYS[7], ARGV[18], ARGV[19], kind, state, e, e['reason'] or '', e['status'] or '',
    e['id'] or ARGV[15], ARGV[2])
end
if disabled == 1 then
  announce('disabled')
elseif converted == 1 then
  announce('escalated')
end
if ARGV[17] == '1' and ARGV[1] == 'hard' then
  announce('hard_bounce')
end

return {'new', state, current, soft, scored, converted, disabled, reached, why, crossed}
