"""The Lua scripts behind every compare-and-set the cluster relies on.

Each script runs atomically inside Redis, so an invariant holds even with two
nodes believing they lead: a command or a death sentence is accepted only while
the caller's exact lease value ("epoch:node") is the lease. Times come from the
server's TIME, never from a node's clock. Each script is headed by its KEYS,
ARGV and return values.
"""

from __future__ import annotations

# Server time in milliseconds, as an exact decimal string (a Lua number would be
# formatted with %.14g and could lose digits).
NOW_MS = """
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
"""

ACQUIRE_LEASE = """
-- KEYS[1] lease, KEYS[2] epoch counter, KEYS[3] events stream
-- ARGV[1] node id, ARGV[2] lease ms, ARGV[3] events maxlen, ARGV[4] reason,
-- ARGV[5] the highest epoch the caller has seen
-- returns the new epoch, or nil when a lease exists (no epoch is spent then)
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
-- If Redis lost the counter, never hand out an epoch the cluster has already seen:
-- the nodes' fences would reject the new leader's commands.
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[5]) then
  redis.call('SET', KEYS[2], ARGV[5])
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. ':' .. ARGV[1], 'PX', ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'event', 'leader_elected',
           'node', ARGV[1], 'epoch', epoch, 'reason', ARGV[4])
return epoch
"""

RENEW_LEASE = """
-- KEYS[1] lease
-- ARGV[1] expected lease value "epoch:node", ARGV[2] lease ms
-- returns 1 when extended, 0 when the lease is not (or no longer) that value
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

RESIGN_LEASE = """
-- KEYS[1] lease, KEYS[2] events stream
-- ARGV[1] expected lease value, ARGV[2] node id, ARGV[3] epoch, ARGV[4] reason,
-- ARGV[5] events maxlen
-- returns 1 when deleted, 0 when the lease is not that value
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'event', 'leader_resigned',
           'node', ARGV[2], 'epoch', ARGV[3], 'reason', ARGV[4])
return 1
"""

REGISTER = NOW_MS + """
-- KEYS[1] incarnations hash, KEYS[2] node hash, KEYS[3] members zset, KEYS[4] events,
-- KEYS[5] dead hash, KEYS[6] lost hash, KEYS[7] roster
-- ARGV[1] node id, ARGV[2] node TTL ms, ARGV[3] events maxlen, ARGV[4] configured workers
-- to put on the roster (0: none, the node is not serving yet), ARGV[5..] field, value...
-- returns the node's new incarnation; a node declared dead is back (node_rejoined)
local inc = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'incarnation', inc, 'heartbeat', now, unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
if tonumber(ARGV[4]) > 0 then redis.call('HSET', KEYS[7], ARGV[1], ARGV[4]) end
if redis.call('HDEL', KEYS[5], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'event', 'node_rejoined',
             'node', ARGV[1], 'epoch', 0, 'reason', 'back after being declared dead',
             'incarnation', inc)
else
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'event', 'node_joined',
             'node', ARGV[1], 'epoch', 0, 'reason', 'registered', 'incarnation', inc)
end
return inc
"""

HEARTBEAT = NOW_MS + """
-- KEYS[1] incarnations hash, KEYS[2] node hash, KEYS[3] members zset, KEYS[4] events,
-- KEYS[5] dead hash, KEYS[6] roster hash
-- ARGV[1] node id, ARGV[2] incarnation, ARGV[3] node TTL ms, ARGV[4] events maxlen,
-- ARGV[5] state, ARGV[6] configured workers to put on the roster (0: none),
-- ARGV[7..] field, value...
-- returns 'superseded' (a newer incarnation registered: nothing written),
-- 'declared_dead' (the leader declared this node dead: nothing written, register anew),
-- 'rejoined' (the hash had lapsed and was re-created) or 'refreshed'
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if current > tonumber(ARGV[2]) then return 'superseded' end
if redis.call('HEXISTS', KEYS[5], ARGV[1]) == 1 then return 'declared_dead' end
if current < tonumber(ARGV[2]) then
  -- Redis lost the counter (restart without persistence, failover losing writes):
  -- restore it rather than strand every node as "superseded".
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local old = redis.call('HGET', KEYS[2], 'state')
redis.call('HSET', KEYS[2], 'incarnation', ARGV[2], 'heartbeat', now, 'state', ARGV[5],
           unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], now, ARGV[1])
-- Only a node that served is owed its capacity if it dies.
if ARGV[5] == 'ready' and tonumber(ARGV[6]) > 0 then
  redis.call('HSET', KEYS[6], ARGV[1], ARGV[6])
end
if not old then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'event', 'node_joined',
             'node', ARGV[1], 'epoch', 0, 'reason', 'heartbeat resumed', 'incarnation', ARGV[2])
  return 'rejoined'
end
if old ~= ARGV[5] and ARGV[5] ~= 'booting' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'event', 'node_' .. ARGV[5],
             'node', ARGV[1], 'epoch', 0, 'reason', 'state changed', 'incarnation', ARGV[2])
end
return 'refreshed'
"""

DEREGISTER = """
-- KEYS[1] incarnations hash, KEYS[2] node hash, KEYS[3] members zset, KEYS[4] events,
-- KEYS[5] the node's command queue, KEYS[6] roster, KEYS[7] lost hash, KEYS[8] grants
-- ARGV[1] node id, ARGV[2] incarnation, ARGV[3] event kind, ARGV[4] reason, ARGV[5] maxlen,
-- ARGV[6] departure: 'left' (stopped on purpose: no capacity owed any more), 'lost'
-- (master vanished while serving: the leader will declare it dead) or 'aborted'
-- returns 1 when removed, 0 when a newer incarnation owns the node id
if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[5])
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[6] == 'left' then
  redis.call('HDEL', KEYS[6], ARGV[1])
  redis.call('HDEL', KEYS[8], ARGV[1])
elseif ARGV[6] == 'lost' then
  redis.call('HSET', KEYS[7], ARGV[1], ARGV[4])
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'event', ARGV[3],
           'node', ARGV[1], 'epoch', 0, 'reason', ARGV[4], 'incarnation', ARGV[2],
           'departure', ARGV[6])
return 1
"""

DECLARE_DEAD = NOW_MS + """
-- KEYS[1] lease, KEYS[2] members zset, KEYS[3] the node's hash, KEYS[4] events,
-- KEYS[5] dead hash, KEYS[6] lost hash, KEYS[7] grants
-- ARGV[1] caller's lease value, ARGV[2] node id, ARGV[3] node TTL ms, ARGV[4] epoch,
-- ARGV[5] leader id, ARGV[6] reason, ARGV[7] maxlen
-- returns 1 when the node was declared dead, 0 when the caller is not the leader or
-- the node is not dead: its hash lives, or it is neither lost (its agent reported its
-- master gone) nor a member whose heartbeat is older than the TTL
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[6], ARGV[2]) == 0 then
  local score = redis.call('ZSCORE', KEYS[2], ARGV[2])
  if not score then return 0 end
  if tonumber(now) - tonumber(score) < tonumber(ARGV[3]) then return 0 end
end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[6], ARGV[2])
redis.call('HDEL', KEYS[7], ARGV[2])
-- every value a string: cjson would print a large number with too few digits
redis.call('HSET', KEYS[5], ARGV[2], cjson.encode({since_ms = now, reason = ARGV[6],
                                                   epoch = ARGV[4], by = ARGV[5]}))
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'event', 'node_dead',
           'node', ARGV[2], 'epoch', ARGV[4], 'reason', ARGV[6], 'by', ARGV[5])
return 1
"""

SEND_COMMAND = """
-- KEYS[1] lease, KEYS[2] the target incarnation's command queue
-- ARGV[1] caller's lease value, ARGV[2] command wire form, ARGV[3] queue cap,
-- ARGV[4] queue TTL ms (a queue nobody reads, e.g. of a dead node, goes away)
-- returns 1 when queued, 0 when the caller's lease is not the lease
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
