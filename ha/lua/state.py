"""The leader's read of the whole cluster in one script: one round trip, and one JSON
string per node instead of a reply element per field.

The leader reads ClusterState every duty interval (a quarter second). As a pipeline
of one HGETALL per member it cost the leader's process 0.1 ms of CPU per node, mostly
redis-py's pure-Python RESP parsing (24 elements per node hash): 21 ms a read at 200
nodes. Here each hash comes back as one JSON string that json.loads decodes in C:
5 ms at 200 nodes. Redis runs the whole read in one script call (a fraction of a
millisecond at 200 nodes; it blocks other clients for that long).
The node hashes are read by key from the members set, so they are not in KEYS; every
key of a cluster shares its {cluster} hash tag (keys.py), so they share one slot too.
"""

from __future__ import annotations

from polycorn.ha.lua.render import NOW_MS, render

__all__ = ["CLUSTER_STATE", "CYCLE_READ"]

CLUSTER_STATE = render(NOW_MS + """
-- KEYS[1] lease, KEYS[2] epoch counter, KEYS[3] members zset, KEYS[4] roster, KEYS[5] dead,
-- KEYS[6] lost, KEYS[7] grants, KEYS[8] drained set, KEYS[9] rollout head,
-- KEYS[10] rollout nodes, KEYS[11] rollout slots set
-- ARGV[1] the key of a node's hash without the node id (ClusterKeys.node(''))
-- returns {server ms, lease or nil, epoch or nil, {id, score, ...} of the members,
-- {one JSON object per member's hash, in the members' order; '{}' once it expired},
-- roster, dead, lost, grants as JSON objects, {drained ids}, rollout head and rollout
-- nodes as JSON objects, {slot ids}, Redis' run id}
local function hash_json(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return '{}' end
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return cjson.encode(t)
end
local members = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
local nodes = {}
for i = 1, #members, 2 do nodes[#nodes + 1] = hash_json(ARGV[1] .. members[i]) end
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
return {now, redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), members, nodes,
        hash_json(KEYS[4]), hash_json(KEYS[5]), hash_json(KEYS[6]), hash_json(KEYS[7]),
        redis.call('SMEMBERS', KEYS[8]), hash_json(KEYS[9]), hash_json(KEYS[10]),
        redis.call('SMEMBERS', KEYS[11]), run_id}
""")

# Every agent's read of every cycle (RedisStore.cycle_read): the lease, the epoch counter
# and the commands for its incarnation, as the pipeline read them, plus Redis' run id, so
# every agent (not only the leader) sees a failover: a leader elected just after one
# must know its Redis just changed (chaos --random 4, 5, 19: a SENTINEL FAILOVER that
# promoted a primary whose data was seconds old, and a leader elected on it at once).
CYCLE_READ = render(NOW_MS + """
-- KEYS[1] lease, KEYS[2] epoch counter, KEYS[3] the incarnation's command queue
-- ARGV[1] how many commands to take at most
-- returns {server ms, lease or nil, epoch or nil, {commands, oldest first}, Redis' run id}
local taken = redis.call('LPOP', KEYS[3], ARGV[1]) or {}
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
return {now, redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), taken, run_id}
""")
