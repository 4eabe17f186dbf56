"""polycorn-ctl: look at a cluster in Redis, and run a private Redis for local ones.

    polycorn-ctl status [--json]          leader, epoch and every node
    polycorn-ctl nodes [--json]           the nodes only
    polycorn-ctl leader [--json]          the leader and its epoch
    polycorn-ctl events [--since S] [--count N] [--follow] [--json]
    polycorn-ctl redis-up [--port P] [--dir D]     prints the URL of a private redis-server
    polycorn-ctl redis-down [--dir D]

The cluster subcommands take --redis (or $POLYCORN_REDIS) and --cluster (or
$POLYCORN_CLUSTER, default "default"). Exit codes: 0 done; 1 nothing to show (no
live node, no leader); 2 usage error or bad URL; 3 Redis unreachable or failing;
4 redis-up/redis-down failed (e.g. no redis-server installed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from polycorn.ha.events import Event
from polycorn.ha.redis_url import RedisTarget, RedisUrlError, parse_redis_url
from polycorn.ha.registry import NodeRecord
from polycorn.ha.settings import DEFAULT_CLUSTER
from polycorn.ha.snapshot import ClusterSnapshot
from polycorn.ha.store import ClusterStore, StoreUnavailable
from polycorn.ha.timing import Timing

EXIT_OK, EXIT_EMPTY, EXIT_USAGE, EXIT_REDIS, EXIT_REDIS_UP = 0, 1, 2, 3, 4
DEFAULT_REDIS_DIR = ".polycorn/redis"
FOLLOW_BLOCK_MS = 500  # below the read timeout, so a blocking read never times out
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


class CtlError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis", default=os.environ.get("POLYCORN_REDIS"), metavar="URL",
                        help="Redis URL of the cluster (default: $POLYCORN_REDIS)")
    common.add_argument("--cluster", default=os.environ.get("POLYCORN_CLUSTER", DEFAULT_CLUSTER),
                        metavar="NAME", help="cluster name (default: $POLYCORN_CLUSTER or "
                        f"{DEFAULT_CLUSTER!r})")
    common.add_argument("--node-ttl", type=float, default=Timing().node_ttl, metavar="SECONDS",
                        help="heartbeat age after which a node is shown dead (default: %(default)s)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    parser = argparse.ArgumentParser(prog="polycorn-ctl", description=__doc__.split("\n")[0],
                                     epilog="exit codes: 0 done, 1 nothing to show, 2 usage, "
                                     "3 Redis unreachable, 4 redis-up/down failed")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", parents=[common, as_json], help="leader, epoch and nodes")
    sub.add_parser("nodes", parents=[common, as_json], help="the nodes")
    sub.add_parser("leader", parents=[common, as_json], help="the leader and its epoch")
    events = sub.add_parser("events", parents=[common, as_json], help="cluster events")
    events.add_argument("--since", metavar="WHEN",
                        help="a stream id (1700000000000-0) or an age (30s, 5m, 2h)")
    events.add_argument("--count", type=int, default=20, help="how many (default: %(default)s)")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    up = sub.add_parser("redis-up", help="start a private redis-server; print its URL")
    up.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    up.add_argument("--dir", default=DEFAULT_REDIS_DIR, help="data, pid and log directory "
                    "(default: %(default)s)")
    down = sub.add_parser("redis-down", help="stop the private redis-server")
    down.add_argument("--dir", default=DEFAULT_REDIS_DIR, help="its directory "
                      "(default: %(default)s)")
    return parser


def open_store(args: argparse.Namespace) -> tuple[ClusterStore, RedisTarget]:
    if not args.redis:
        raise CtlError("no Redis URL: pass --redis URL or set POLYCORN_REDIS", EXIT_USAGE)
    try:
        target = parse_redis_url(args.redis)
    except RedisUrlError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None
    from polycorn.ha.redis_client import make_client
    from polycorn.ha.redis_store import RedisStore

    client = make_client(target, Timing(), client_name="polycorn-ctl")
    return RedisStore(client, args.cluster), target


# -- the cluster subcommands ---------------------------------------------------------------


def status_object(args, snap: ClusterSnapshot, nodes: list[NodeRecord]) -> dict:
    lease = snap.lease
    return {"cluster": args.cluster, "leader": lease.holder if lease else None,
            "epoch": lease.epoch if lease else None, "highest_epoch": snap.epoch,
            "nodes": [n.as_json(snap.now_ms) for n in nodes]}


def node_table(snap: ClusterSnapshot, nodes: list[NodeRecord]) -> list[str]:
    rows = [("NODE", "STATE", "RELEASE", "WORKERS", "PID", "ADDRESS", "HEARTBEAT")]
    for n in nodes:
        j = n.as_json(snap.now_ms)
        star = " *" if snap.lease and snap.lease.holder == j["node_id"] else ""
        rows.append((j["node_id"] + star, j["state"], j["release"],
                     f"{j['workers']}/{j['workers_configured']} (max {j['max_workers']})",
                     str(j["pid"]), j["address"], f"{j['heartbeat_age']:.1f}s ago"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def cmd_status(args, store: ClusterStore, target: RedisTarget) -> int:
    snap, nodes = store.nodes(int(args.node_ttl * 1000))
    live = [n for n in nodes if n.alive]
    if args.json:
        print(json.dumps(status_object(args, snap, nodes)))
    else:
        leader = (f"leader {snap.lease.holder} (epoch {snap.lease.epoch})" if snap.lease
                  else "no leader")
        if args.command == "status":
            print(f"cluster {args.cluster} at {target.display()}: {leader}; {len(live)} of "
                  f"{len(nodes)} nodes alive")
        if nodes:
            print("\n".join(node_table(snap, nodes)))
    if not live:
        raise CtlError(f"cluster {args.cluster!r} has no live nodes at {target.display()}",
                       EXIT_EMPTY)
    return EXIT_OK


def cmd_leader(args, store: ClusterStore, target: RedisTarget) -> int:
    snap = store.snapshot()
    lease = snap.lease
    if args.json:
        print(json.dumps({"cluster": args.cluster, "leader": lease.holder if lease else None,
                          "epoch": lease.epoch if lease else None,
                          "highest_epoch": snap.epoch}))
    elif lease:
        print(f"{lease.holder} epoch {lease.epoch}")
    if lease is None:
        raise CtlError(f"cluster {args.cluster!r} has no leader at {target.display()}",
                       EXIT_EMPTY)
    return EXIT_OK


def since_id(store: ClusterStore, since: str) -> str:
    """A stream id to read after: given as an id, or computed from an age."""
    if re.match(r"^\d+(-\d+)?$", since):
        return since if "-" in since else f"{since}-0"
    match = _DURATION.match(since)
    if not match:
        raise CtlError(f"--since {since!r}: want a stream id or an age like 30s, 5m, 2h",
                       EXIT_USAGE)
    now_ms = store.snapshot().now_ms
    return f"{now_ms - int(float(match[1]) * _UNIT_MS[match[2]])}-0"


def cmd_events(args, store: ClusterStore, target: RedisTarget) -> int:
    if args.since:
        events = store.read_events(after=since_id(store, args.since), count=args.count)
    else:
        events = store.latest_events(args.count)
    for event in events:
        _print_event(event, args.json)
    last = events[-1].id if events else (store.latest_events(1) or [Event("", "", id="0-0")])[0].id
    while args.follow:
        for event in store.read_events(after=last, count=100, block_ms=FOLLOW_BLOCK_MS):
            _print_event(event, args.json)
            last = event.id
    return EXIT_OK


def _print_event(event: Event, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"id": event.id, "time_ms": event.time_ms, "event": event.kind,
                          "node": event.node, "epoch": event.epoch, "reason": event.reason,
                          **event.extra}), flush=True)
    else:
        print(event.describe(), flush=True)


# -- local Redis -------------------------------------------------------------------------


def cmd_redis_up(args) -> int:
    from polycorn.ha.redis_up import RedisUpError, redis_up

    try:
        print(redis_up(Path(args.dir), args.port))
    except RedisUpError as exc:
        raise CtlError(str(exc), EXIT_REDIS_UP) from None
    return EXIT_OK


def cmd_redis_down(args) -> int:
    from polycorn.ha.redis_up import RedisUpError, redis_down

    try:
        print(f"stopped redis-server (pid {redis_down(Path(args.dir))})")
    except RedisUpError as exc:
        raise CtlError(str(exc), EXIT_REDIS_UP) from None
    return EXIT_OK


CLUSTER_COMMANDS = {"status": cmd_status, "nodes": cmd_status, "leader": cmd_leader,
                    "events": cmd_events}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "redis-up":
            return cmd_redis_up(args)
        if args.command == "redis-down":
            return cmd_redis_down(args)
        store, target = open_store(args)
        try:
            return CLUSTER_COMMANDS[args.command](args, store, target)
        except StoreUnavailable as exc:
            raise CtlError(f"cannot use Redis at {target.display()}: {exc}", EXIT_REDIS) from None
        finally:
            store.close()
    except CtlError as exc:
        print(f"polycorn-ctl: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
