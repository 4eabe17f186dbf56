"""The registry scripts: register, heartbeat, deregister, declare a node dead.

Times come from the server's TIME, never from a node's clock; a death sentence is
accepted only while the caller's exact lease value is the lease. Each script is
headed by its KEYS, ARGV and return values.
"""

from __future__ import annotations

from polycorn.ha.lua.render import NOW_MS, render

__all__ = ["REGISTER", "HEARTBEAT", "DEREGISTER", "DECLARE_DEAD"]

REGISTER = render(NOW_MS + """
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
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'event', ${NODE_REJOINED},
             'node', ARGV[1], 'epoch', 0, 'reason', 'back after being declared dead',
             'incarnation', inc)
else
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'event', ${NODE_JOINED},
             'node', ARGV[1], 'epoch', 0, 'reason', 'registered', 'incarnation', inc)
end
return inc
""")

HEARTBEAT = render(NOW_MS + """
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
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'event', ${NODE_JOINED},
             'node', ARGV[1], 'epoch', 0, 'reason', 'heartbeat resumed', 'incarnation', ARGV[2])
  return 'rejoined'
end
-- events.STATE_EVENTS: a state change logs its event; 'booting' has none
local kind = (${STATE_EVENTS})[ARGV[5]]
if old ~= ARGV[5] and kind then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'event', kind,
             'node', ARGV[1], 'epoch', 0, 'reason', 'state changed', 'incarnation', ARGV[2])
end
return 'refreshed'
""")

DEREGISTER = render("""
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
""")

DECLARE_DEAD = render(NOW_MS + """
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
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'event', ${NODE_DEAD},
           'node', ARGV[2], 'epoch', ARGV[4], 'reason', ARGV[6], 'by', ARGV[5])
return 1
""")
