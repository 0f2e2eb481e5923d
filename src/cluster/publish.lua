-- tidings cluster: one publish, atomically. The history, the sequence and the rooms change
-- together with the message, so a message is stored before it is sent and the numbers have no
-- gaps.
--
-- KEYS: 1 epoch, 2 seq, 3 log (stream), 4 this node's last counter, 5 rooms (hash),
--       6 memberships (count), 7 bus channel
-- ARGV: 1 (unused), 2 this publish's counter (per node, increasing),
--       3 op: keep | pass | join | leave, 4 body, 5 log length, 6 now (ms),
--       7 user field, 8 room, 9 rooms per user, 10 memberships in all
-- Returns {status, epoch, seq, receivers}; status: ok, dup (published before: a retry),
-- same (already joined / not joined), user or total (a room limit; seq holds the limit).
-- Room changes take no number and are not kept in the log (the rooms hash is their record):
-- the log holds broadcasts only, as many as a node's history.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  -- A new epoch (a new cluster, or Redis lost its data): from Redis's clock, so it never
  -- equals one given out before.
  local t = redis.call('TIME')
  epoch = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', KEYS[1], epoch)
  redis.call('SET', KEYS[2], '0')
  redis.call('DEL', KEYS[3], KEYS[5], KEYS[6])
end
local last = tonumber(redis.call('GET', KEYS[4]) or '0')
if tonumber(ARGV[2]) <= last then
  return {'dup', epoch, '0', 0}
end
redis.call('SET', KEYS[4], ARGV[2], 'EX', 86400)
local op = ARGV[3]
if op == 'pass' then
  local n = redis.call('PUBLISH', KEYS[7], epoch .. ':0|' .. ARGV[4])
  return {'ok', epoch, '0', n}
end
if op == 'join' or op == 'leave' then
  local current = redis.call('HGET', KEYS[5], ARGV[7]) or ''
  local rooms = {}
  local found = false
  for room in string.gmatch(current, '[^\n]+') do
    if room == ARGV[8] then
      found = true
    else
      rooms[#rooms + 1] = room
    end
  end
  if op == 'join' then
    if found then
      return {'same', epoch, '0', 0}
    end
    if #rooms >= tonumber(ARGV[9]) then
      return {'user', epoch, ARGV[9], 0}
    end
    if tonumber(redis.call('GET', KEYS[6]) or '0') >= tonumber(ARGV[10]) then
      return {'total', epoch, ARGV[10], 0}
    end
    rooms[#rooms + 1] = ARGV[8]
    redis.call('INCR', KEYS[6])
  else
    if not found then
      return {'same', epoch, '0', 0}
    end
    redis.call('DECR', KEYS[6])
  end
  if #rooms == 0 then
    redis.call('HDEL', KEYS[5], ARGV[7])
  else
    table.sort(rooms)
    redis.call('HSET', KEYS[5], ARGV[7], table.concat(rooms, '\n'))
  end
  local n = redis.call('PUBLISH', KEYS[7], epoch .. ':0|' .. ARGV[4])
  return {'ok', epoch, '0', n}
end
local seq = redis.call('INCR', KEYS[2])
local msg = epoch .. ':' .. seq .. '|' .. ARGV[4]
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], seq .. '-0', 't', ARGV[6], 'm', msg)
local n = redis.call('PUBLISH', KEYS[7], msg)
return {'ok', epoch, tostring(seq), n}
