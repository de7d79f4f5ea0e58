-- Record one event for one address, atomically: dedup, counters, state, history.
-- The same machine as core/policy.py `step` (keep them in step; tests/test_store.py compares them).
-- All KEYS share the address's hash tag, so this runs on one Redis Cluster slot.
--
-- KEYS: 1 state (hash)  2 soft (string counter)  3 hard (hash score/day)  4 hits (zset, count rule)
--       5 history (string, lines newest first)  6 seen (string: this event was already recorded)
-- ARGV: 1 effect hard|soft|none  2 now (epoch seconds)  3 day number  4 mode observe|enforce
--       5 rule daily|count  6 soft_threshold  7 soft_window s  8 threshold  9 quiet s  10 count_window s
--       11 history_size  12 history_ttl s  13 dedup_ttl s (0: no dedup)  14 event JSON object
--       15 event id (hits member)  16 frozen 0|1
--       KEYS 7 and ARGV 17..19, the outbox (notify.py): 7 the outbox stream (single server) or
--       this address's pending list (cluster)  17 notify every hard bounce 0|1  18 stream|list  19 maxlen
--       20 the event's history line (event.py to_history; this step appends its decision)
-- Returns {status, state, score, soft_count, scored, converted, disabled, reached, why, crossed}
-- crossed: this step took the score from below the threshold to it (announced once per crossing)

local effect = ARGV[1]
local now = tonumber(ARGV[2])
local rule = ARGV[5]

local function score()
  if rule == 'daily' then
    return tonumber(redis.call('HGET', KEYS[3], 'score') or '0')
  end
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

-- The values known from this step's own commands are kept, to spare reading them again.
local current, soft = nil, nil

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
    -- quiet-period TTL re-armed, so a score that stops rising drops to zero by itself.
    local hard = redis.call('HMGET', KEYS[3], 'score', 'day')
    current = tonumber(hard[1] or '0')
    before = current
    if hard[2] ~= ARGV[3] then
      current = current + 1
      redis.call('HSET', KEYS[3], 'score', current, 'day', ARGV[3])
      redis.call('EXPIRE', KEYS[3], ARGV[9])
    end
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
if tonumber(ARGV[11]) > 0 then
  -- event.py DECISION_FIELDS: scored, state, score, soft
  push_history(KEYS[5], string.format('%s\t%d\t%s\t%d\t%d', ARGV[20], scored, state, current, soft),
    tonumber(ARGV[11]), ARGV[12])
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
