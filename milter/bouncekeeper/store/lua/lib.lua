-- Helpers shared by record.lua, admin.lua and import.lua: store/scripts.py prepends this file to each of
-- them, so the track format and the outbox entry are written by one piece of code.

---- The track key (store/keys.py TRACK, a string): line 1 "score<TAB>day", the daily rule's hard score and
-- the day number of its last rise ("0<TAB>" when no score is live), then the history lines, newest first.
-- Returns: exists, score, day ('' when no score is live), the history lines.
local function track_read(key)
  local value = redis.call('GET', key)
  if not value then return false, 0, '', '' end
  local head, lines = value, ''
  local nl = string.find(value, '\n', 1, true)
  if nl then head, lines = string.sub(value, 1, nl - 1), string.sub(value, nl + 1) end
  local tab = string.find(head, '\t', 1, true) or (#head + 1)
  return true, tonumber(string.sub(head, 1, tab - 1)) or 0, string.sub(head, tab + 1), lines
end

-- Write the track key: the score header, then `line` before the old `lines`, `size` lines kept (none
-- when size is 0). expiry: {'EX', seconds}, {'PX', milliseconds} or {'KEEPTTL'} (a live score that did
-- not rise keeps its reset time: the quiet period runs from the last rise, not the last event).
local function track_write(key, score, day, lines, line, size, expiry)
  local value = score .. '\t' .. day
  if size > 0 then
    local history = line
    if lines ~= '' then
      history = line .. '\n' .. lines
      local pos = 0
      for _ = 1, size do
        pos = string.find(history, '\n', pos + 1, true)
        if not pos then break end
      end
      if pos then history = string.sub(history, 1, pos - 1) end
    end
    value = value .. '\n' .. history
  end
  redis.call('SET', key, value, unpack(expiry))
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
