-- Helpers shared by record.lua and admin.lua: redis_store.py prepends this file to each of them, so
-- the history format and the outbox entry are written by one piece of code.

-- Prepend a line to a history string (newest first) and keep `size` lines; TTL re-armed.
local function push_history(key, line, size, ttl)
  local value = line
  local old = redis.call('GET', key)
  if old then
    value = line .. '\n' .. old
    local pos = 0
    for _ = 1, size do
      pos = string.find(value, '\n', pos + 1, true)
      if not pos then break end
    end
    if pos then value = string.sub(value, 1, pos - 1) end
  end
  redis.call('SET', key, value, 'EX', ttl)
end

-- One outbox entry (notify.py reads these fields) from the event JSON object `e`: to the stream on a
-- single server; on a Redis Cluster, where a script touches one slot, to the address's pending list,
-- which the notifier moves into the stream.
local function outbox_add(key, mode, maxlen, kind, state, e, reason, status, id, ts)
  local fields = {'type', kind, 'address', e['address'] or '', 'state', state, 'kind', e['kind'] or '',
    'reason', reason, 'status', status, 'event_id', id, 'sender', e['sender'] or '',
    'context', e['context'] or '', 'ts', ts}
  if mode == 'stream' then
    redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  else
    redis.call('RPUSH', key, cjson.encode(fields))
  end
end
