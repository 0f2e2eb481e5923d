-- tidings cluster: take a dead node's record of a socket (and the events emitted to it alone),
-- for the node its client reconnected through. Atomic, so two claims never both get it.
--
-- A node is dead when nobody listens on its reply channel (a killed process's connections
-- close at once) or it has not said it is alive for a while (a frozen or unplugged one). A live
-- node is never robbed: it answered the claim itself.
--
-- KEYS: 1 the nodes (zset: id -> when it last said it is alive, ms)
-- ARGV: 1 key prefix, 2 field (<pid>|<user>), 3 pid, 4 now (ms), 5 silent for this long: dead
--       (ms), 6 the claiming node's id
-- Returns {record, {emit, ...}} or false.
-- The keys of other nodes are named from the prefix here (one Redis server, not Redis Cluster).
local nodes = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #nodes, 2 do
  local node = nodes[i]
  if node ~= ARGV[6] then
    local records = ARGV[1] .. ':sess:' .. node
    if redis.call('EXISTS', records) == 0 then
      redis.call('ZREM', KEYS[1], node)
    else
      local listening = redis.call('PUBSUB', 'NUMSUB', ARGV[1] .. '#node#' .. node)[2]
      local silent = tonumber(ARGV[4]) - tonumber(nodes[i + 1]) > tonumber(ARGV[5])
      if listening == 0 or silent then
        local record = redis.call('HGET', records, ARGV[2])
        if record then
          redis.call('HDEL', records, ARGV[2])
          local list = ARGV[1] .. ':emits:' .. node .. ':' .. ARGV[3]
          local emits = redis.call('LRANGE', list, 0, -1)
          redis.call('DEL', list)
          return {record, emits}
        end
      end
    end
  end
end
return false
