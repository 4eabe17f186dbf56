"""A stand-in for a polycorn master, for driving the real cluster agent in tests.

It forks the agent exactly as the master's sidecar slot does (socketpair, then
`run_agent(config, Channel)` in the child) and plays the master's side of the
JSON protocol: it sends hello and a state, forwards every JSON line it reads on
stdin to the agent, prints every message from the agent on stdout (first line:
{"agent": PID}), answers each relayed command with {"type": "result", ok} and,
as a master would, reports the state a set_workers, drain or undrain leads to.
Kill it with SIGKILL to make the agent see its master die (EOF).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import socket
import sys
import types

from polycorn.ha.agent import run_agent
from polycorn.ha.settings import cluster_config
from polycorn.server.sidecar import Channel, ChannelClosed


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--redis", required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--node-id", required=True)
    p.add_argument("--state", default="ready")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--release", default="r1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--timing", default="{}", help="JSON overrides of the cluster timers")
    return p.parse_args()


def main() -> None:
    args = parse()
    timers = {"cluster_heartbeat": 1.0, "node_ttl": 3.0, "leader_lease": 6.0,
              "leader_renew": 1.0, "leader_step_down": 4.0, "redis_connect_timeout": 0.5,
              "redis_read_timeout": 1.0, "redis_retries": 1, **json.loads(args.timing)}
    cfg = types.SimpleNamespace(redis=args.redis, cluster=args.cluster, node_id=args.node_id,
                                advertise=None, release=args.release, **timers)
    config = cluster_config(cfg, environ={})
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG,
                        format="%(asctime)s [%(process)d] %(levelname)s %(message)s")
    master_end, agent_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        master_end.close()
        status = 0
        try:
            run_agent(config, Channel(agent_end))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 0
        except BaseException:
            logging.exception("agent crashed")
            status = 1
        finally:
            logging.shutdown()
            os._exit(status)
    agent_end.close()
    print(json.dumps({"agent": pid}), flush=True)
    channel = Channel(master_end)
    channel.send({"type": "hello", "pid": os.getpid(), "node": {
        "bind": [f"127.0.0.1:{args.port}"], "workers": args.workers,
        "max_workers": 2 * args.workers, "proc_name": None, "release": args.release}})
    state = {"type": "state", "state": args.state, "workers": args.workers,
             "workers_target": args.workers, "workers_configured": args.workers,
             "max_workers": 2 * args.workers, "pid": os.getpid(), "reason": "fake master"}
    channel.send(state)
    serve(channel, pid, state)


def serve(channel: Channel, agent_pid: int, state: dict) -> None:
    inputs = [channel.fileno(), sys.stdin.fileno()]
    while True:
        ready, _, _ = select.select(inputs, [], [])
        if sys.stdin.fileno() in ready:
            line = sys.stdin.readline()
            if not line:
                inputs.remove(sys.stdin.fileno())  # the test closed stdin: keep serving
            elif line.strip():
                message = json.loads(line)
                if message.get("type") == "state":
                    state = message  # the test set it: commands build on it from now
                channel.send(message)
        if channel.fileno() in ready:
            try:
                messages = channel.receive_ready()
            except ChannelClosed:
                _, status = os.waitpid(agent_pid, 0)
                print(json.dumps({"agent_exit": os.waitstatus_to_exitcode(status)}), flush=True)
                return
            for msg in messages:
                print(json.dumps(msg), flush=True)
                if msg.get("type") == "command":
                    channel.send({"type": "result", "id": msg.get("id"), "ok": True,
                                  "reason": f"fake master did {msg.get('cmd')}"})
                    state = apply(msg, state)
                    channel.send(state)


def apply(command: dict, state: dict) -> dict:
    """What a real master reports after a command: its new worker count or state."""
    cmd, n = command.get("cmd"), command.get("n")
    if cmd == "set_workers":
        return {**state, "workers": n, "workers_target": n}
    if cmd in ("drain", "undrain"):
        return {**state, "state": "draining" if cmd == "drain" else "ready"}
    return state


if __name__ == "__main__":
    main()
