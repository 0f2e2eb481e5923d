-- tidings cluster: a node's records of its recoverable Socket.IO sockets, which another node
-- reads to restore them if this node dies. One call per write, so the writes keep their order.
--
-- KEYS: 1 this node's records (hash), 2 the socket's emits (list), 3 the nodes (zset: id ->
--       when it last said it is alive, ms)
-- ARGV: 1 op: record | emit | forget | alive, 2 field (<pid>|<user>), 3 value,
--       4 how long it is kept without news (ms), 5 emits kept, 6 this node's id, 7 now (ms)
local op = ARGV[1]
if op == 'record' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[6])
elseif op == 'emit' then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
elseif op == 'forget' then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
elseif op == 'alive' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[6])
  -- Nodes silent for longer than a record lives have no records left.
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[7]) - tonumber(ARGV[4]))
end
return 1
