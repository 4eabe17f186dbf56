"""The Lua scripts behind the leader's duties: capacity grants and rolling upgrades.

As in lease.py, every leader write is accepted only while the caller's exact lease
value is the lease, and every invariant of a rollout (one entry moves at a time,
at most `max_unavailable` nodes hold an upgrade slot) is checked inside the
script, so it holds even if two processes believe they lead. Entries are JSON
built by Python; Lua only decodes them to check a step or an epoch. Each script is
headed by its KEYS, ARGV and return values.
"""

from __future__ import annotations

from polycorn.ha.lua.render import NOW_MS, render

__all__ = ["GRANT_WORKERS", "CREATE_ROLLOUT", "ISSUE_UPGRADE", "FINISH_UPGRADE",
           "ABORT_ROLLOUT"]

# The guard both rollout steps open with: only the lease holder acts, and only on the
# rollout named while it runs (KEYS[1] lease, KEYS[2] rollout hash, ARGV[1] the caller's
# lease value, ARGV[2] rollout id).
LEADER_OF_RUNNING_ROLLOUT = """\
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'not_leader' end
if redis.call('HGET', KEYS[2], 'id') ~= ARGV[2]
   or redis.call('HGET', KEYS[2], 'state') ~= 'running' then
  return 'not_running'
end
"""

GRANT_WORKERS = render("""
-- KEYS[1] lease, KEYS[2] grants hash, KEYS[3] the node's command queue, KEYS[4] events
-- ARGV[1] caller's lease value, ARGV[2] node id, ARGV[3] grant JSON ('' removes the
-- grant), ARGV[4] command wire form ('' sends none), ARGV[5] queue cap, ARGV[6] queue TTL
-- ms, ARGV[7] event kind ('' logs none), ARGV[8] epoch, ARGV[9] leader id, ARGV[10]
-- reason, ARGV[11] events maxlen, ARGV[12] the worker count asked for
-- returns 1 when done, 0 when the caller's lease is not the lease
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[2], ARGV[2])
else
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[4])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
end
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*', 'event', ARGV[7],
             'node', ARGV[2], 'epoch', ARGV[8], 'reason', ARGV[10], 'by', ARGV[9],
             'workers', ARGV[12])
end
return 1
""")

CREATE_ROLLOUT = render(NOW_MS + """
-- KEYS[1] rollout hash, KEYS[2] rollout node entries, KEYS[3] upgrade slots, KEYS[4] events
-- ARGV[1] events maxlen, ARGV[2] rollout id, ARGV[3] reason, ARGV[4] k = how many of
-- the following ARGV are the rollout's field, value pairs; then node id, entry JSON pairs
-- returns {1, id} when created, {0, id of the running rollout} when one is running
if redis.call('HGET', KEYS[1], 'state') == 'running' then
  return {0, redis.call('HGET', KEYS[1], 'id')}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local k = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], unpack(ARGV, 5, 4 + k))
redis.call('HSET', KEYS[1], 'created_ms', now)
redis.call('HSET', KEYS[2], unpack(ARGV, 5 + k))
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[1], '*', 'event', ${ROLLOUT_STARTED},
           'node', '', 'epoch', 0, 'reason', ARGV[3], 'rollout', ARGV[2])
return {1, ARGV[2]}
""")

ISSUE_UPGRADE = render("""
-- KEYS[1] lease, KEYS[2] rollout hash, KEYS[3] rollout node entries, KEYS[4] upgrade
-- slots, KEYS[5] the node's command queue, KEYS[6] events
-- ARGV[1] caller's lease value, ARGV[2] rollout id, ARGV[3] node id, ARGV[4] the entry
-- JSON (step upgrading), ARGV[5] upgrade command wire form, ARGV[6] queue cap, ARGV[7]
-- queue TTL ms, ARGV[8] epoch, ARGV[9] leader id, ARGV[10] events maxlen, ARGV[11] reason
-- returns 'issued' (a pending node took a slot), 'reissued' (an upgrading node issued
-- under an older epoch got its command again), or why not: 'not_leader', 'not_running',
-- 'no_slot' (max_unavailable nodes already upgrading), 'not_pending'
""" + LEADER_OF_RUNNING_ROLLOUT + """local raw = redis.call('HGET', KEYS[3], ARGV[3])
if not raw then return 'not_pending' end
local entry = cjson.decode(raw)
local outcome
if entry.step == 'pending' then
  local limit = tonumber(redis.call('HGET', KEYS[2], 'max_unavailable'))
  if redis.call('SCARD', KEYS[4]) >= limit then return 'no_slot' end
  redis.call('SADD', KEYS[4], ARGV[3])
  outcome = 'issued'
elseif entry.step == 'upgrading' and tonumber(entry.epoch) < tonumber(ARGV[8]) then
  outcome = 'reissued'
else
  return 'not_pending'
end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('RPUSH', KEYS[5], ARGV[5])
redis.call('LTRIM', KEYS[5], -tonumber(ARGV[6]), -1)
redis.call('PEXPIRE', KEYS[5], ARGV[7])
local kind = ${ROLLOUT_NODE_STARTED}
if outcome == 'reissued' then kind = ${ROLLOUT_NODE_REISSUED} end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[10], '*', 'event', kind, 'node', ARGV[3],
           'epoch', ARGV[8], 'reason', ARGV[11], 'by', ARGV[9], 'rollout', ARGV[2])
return outcome
""")

FINISH_UPGRADE = render(NOW_MS + """
-- KEYS[1] lease, KEYS[2] rollout hash, KEYS[3] rollout node entries, KEYS[4] upgrade
-- slots, KEYS[5] events
-- ARGV[1] caller's lease value, ARGV[2] rollout id, ARGV[3] node id, ARGV[4] the entry
-- JSON (step done or failed), ARGV[5] 'done' or 'failed', ARGV[6] epoch, ARGV[7] leader
-- id, ARGV[8] reason, ARGV[9] events maxlen
-- returns the rollout's state afterwards ('running', 'done', 'failed'), or why nothing
-- was written: 'not_leader', 'not_running', 'not_upgrading'
""" + LEADER_OF_RUNNING_ROLLOUT + """local raw = redis.call('HGET', KEYS[3], ARGV[3])
if not raw then return 'not_upgrading' end
local step = cjson.decode(raw).step
-- a pending node may fail (it died before its turn), only an upgrading one is done
if not (step == 'upgrading' or (step == 'pending' and ARGV[5] == 'failed')) then
  return 'not_upgrading'
end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('SREM', KEYS[4], ARGV[3])
if ARGV[5] == 'failed' then
  redis.call('HSET', KEYS[2], 'state', 'failed', 'failed_node', ARGV[3], 'reason', ARGV[8],
             'finished_ms', now)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*', 'event', ${ROLLOUT_NODE_FAILED},
             'node', ARGV[3], 'epoch', ARGV[6], 'reason', ARGV[8], 'by', ARGV[7],
             'rollout', ARGV[2])
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*', 'event', ${ROLLOUT_FAILED},
             'node', ARGV[3], 'epoch', ARGV[6], 'reason', ARGV[8], 'by', ARGV[7],
             'rollout', ARGV[2])
  return 'failed'
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*', 'event', ${ROLLOUT_NODE_DONE},
           'node', ARGV[3], 'epoch', ARGV[6], 'reason', ARGV[8], 'by', ARGV[7],
           'rollout', ARGV[2])
for _, value in ipairs(redis.call('HVALS', KEYS[3])) do
  if cjson.decode(value).step ~= 'done' then return 'running' end
end
redis.call('HSET', KEYS[2], 'state', 'done', 'finished_ms', now)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*', 'event', ${ROLLOUT_DONE},
           'node', '', 'epoch', ARGV[6], 'reason', 'every node upgraded', 'by', ARGV[7],
           'rollout', ARGV[2])
return 'done'
""")

ABORT_ROLLOUT = render(NOW_MS + """
-- KEYS[1] rollout hash, KEYS[2] upgrade slots, KEYS[3] events
-- ARGV[1] reason, ARGV[2] events maxlen
-- returns the id of the rollout aborted, or false when none was running
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return false end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('HSET', KEYS[1], 'state', 'aborted', 'reason', ARGV[1], 'finished_ms', now)
redis.call('DEL', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'event', ${ROLLOUT_ABORTED},
           'node', '', 'epoch', 0, 'reason', ARGV[1], 'rollout', id)
return id
""")
