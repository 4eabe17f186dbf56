"""The lease scripts: acquire, renew, resign, and the leader's fenced command.

A command is queued only while the caller's exact lease value ("epoch:node") is
the lease, so two nodes believing they lead cannot both be obeyed. Each script is
headed by its KEYS, ARGV and return values.
"""

from __future__ import annotations

from polycorn.ha.lua.render import render

__all__ = ["ACQUIRE_LEASE", "RENEW_LEASE", "RESIGN_LEASE", "SEND_COMMAND"]

ACQUIRE_LEASE = render("""
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
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'event', ${LEADER_ELECTED},
           'node', ARGV[1], 'epoch', epoch, 'reason', ARGV[4])
return epoch
""")

RENEW_LEASE = render("""
-- KEYS[1] lease
-- ARGV[1] expected lease value "epoch:node", ARGV[2] lease ms
-- returns 1 when extended, 0 when the lease is not (or no longer) that value
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
""")

RESIGN_LEASE = render("""
-- KEYS[1] lease, KEYS[2] events stream
-- ARGV[1] expected lease value, ARGV[2] node id, ARGV[3] epoch, ARGV[4] reason,
-- ARGV[5] events maxlen
-- returns 1 when deleted, 0 when the lease is not that value
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'event', ${LEADER_RESIGNED},
           'node', ARGV[2], 'epoch', ARGV[3], 'reason', ARGV[4])
return 1
""")

SEND_COMMAND = render("""
-- KEYS[1] lease, KEYS[2] the target incarnation's command queue
-- ARGV[1] caller's lease value, ARGV[2] command wire form, ARGV[3] queue cap,
-- ARGV[4] queue TTL ms (a queue nobody reads, e.g. of a dead node, goes away)
-- returns 1 when queued, 0 when the caller's lease is not the lease
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
""")
