"""polycorn-ctl: look at a cluster in Redis, ask its leader for work, run a private Redis.

    polycorn-ctl status [--json]          leader, epoch, every node, the rollout running
    polycorn-ctl nodes [--json]           the nodes only
    polycorn-ctl leader [--json]          the leader and its epoch
    polycorn-ctl events [--since S] [--count N] [--follow] [--json]
    polycorn-ctl drain NODE | undrain NODE [--timeout S] [--no-wait]
    polycorn-ctl forget NODE              a dead node that will not return: owe it nothing
    polycorn-ctl upgrade [--max-unavailable K] [--nodes N,..] [--timeout S] [--wait]
    polycorn-ctl upgrade --abort
    polycorn-ctl rollout [--json]         the current or last rolling upgrade
    polycorn-ctl redis-up [--port P] [--dir D]     prints the URL of a private redis-server
    polycorn-ctl redis-down [--dir D]              (D: ~/.local/state/polycorn/redis)
    polycorn-ctl haproxy config|sync|status ...   the HAProxy front (ha/haproxy/cli.py)
    polycorn-ctl dashboard [--bind HOST:PORT] [--allow-actions --token-file F]
                                          a live page of the cluster (ha/dashboard/)

The cluster subcommands take --redis (or $POLYCORN_REDIS) and --cluster (or
$POLYCORN_CLUSTER, default "default"). Exit codes (common.py): 0 done; 1
nothing to show or do; 2 usage error, bad URL or unknown node; 3 Redis unreachable
or failing; 4 redis-up/redis-down failed; 5 a request did not complete (rollout
failed or aborted, drain not seen in time); 6 a rollout is already running; 7
HAProxy's runtime API unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from polycorn.ha.ctl import actions
from polycorn.ha.ctl.common import (
    EXIT_EMPTY,
    EXIT_OK,
    EXIT_REDIS,
    EXIT_REDIS_UP,
    EXIT_USAGE,
    CtlError,
)
from polycorn.ha.ctl.status import node_table, rollout_line, status_object
from polycorn.ha.dashboard import cli as dashboard_cli
from polycorn.ha.events import Event
from polycorn.ha.haproxy import cli as haproxy_cli
from polycorn.ha.redis_url import RedisTarget, RedisUrlError, parse_redis_url
from polycorn.ha.rollout import DEFAULT_NODE_TIMEOUT, RolloutState
from polycorn.ha.settings import DEFAULT_CLUSTER
from polycorn.ha.store import ClusterStore, StoreUnavailable
from polycorn.ha.timing import Timing

FOLLOW_BLOCK_MS = 500  # below the read timeout, so a blocking read never times out
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


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
                                     "3 Redis unreachable, 4 redis-up/down failed, 5 request "
                                     "not completed, 6 a rollout is already running, 7 "
                                     "HAProxy unreachable")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", parents=[common, as_json], help="leader, epoch and nodes")
    sub.add_parser("nodes", parents=[common, as_json], help="the nodes")
    sub.add_parser("leader", parents=[common, as_json], help="the leader and its epoch")
    events = sub.add_parser("events", parents=[common, as_json], help="cluster events")
    events.add_argument("--since", metavar="WHEN",
                        help="a stream id (1700000000000-0) or an age (30s, 5m, 2h)")
    events.add_argument("--count", type=int, default=20, help="how many (default: %(default)s)")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    _add_requests(sub, common, as_json)
    haproxy_cli.add_parser(sub, common)
    dashboard_cli.add_parser(sub, common)
    up = sub.add_parser("redis-up", help="start a private redis-server; print its URL")
    up.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    up.add_argument("--dir", default=None, help="data, pid and log directory (default: "
                    "$XDG_STATE_HOME/polycorn/redis, i.e. ~/.local/state/polycorn/redis)")
    down = sub.add_parser("redis-down", help="stop the private redis-server")
    down.add_argument("--dir", default=None, help="its directory (default: as redis-up's)")
    return parser


def _add_requests(sub, common: argparse.ArgumentParser, as_json: argparse.ArgumentParser) -> None:
    """The subcommands that ask the leader for work (actions.py)."""
    for verb, text in (("drain", "take a node out of rotation: health path 503, keeps "
                        "serving"), ("undrain", "put a drained node back")):
        p = sub.add_parser(verb, parents=[common], help=text)
        p.add_argument("node", metavar="NODE", help="node id")
        p.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS",
                       help="how long to wait for the node to report it (default: %(default)s)")
        p.add_argument("--no-wait", action="store_true", help="only record the request")
    forget = sub.add_parser("forget", parents=[common], help="a dead node that will not "
                            "return: stop owing its capacity")
    forget.add_argument("node", metavar="NODE", help="node id")
    up = sub.add_parser("upgrade", parents=[common], help="rolling upgrade of the cluster "
                        "(the health-gated USR2 of each node)")
    up.add_argument("--max-unavailable", type=int, default=1, metavar="K",
                    help="nodes upgrading at once, at most (default: %(default)s)")
    up.add_argument("--nodes", action="append", metavar="N1,N2",
                    help="only these nodes, in this order (default: every live node)")
    up.add_argument("--timeout", type=float, default=DEFAULT_NODE_TIMEOUT, metavar="SECONDS",
                    help="for one node to have a new master ready (default: %(default)s)")
    up.add_argument("--wait", action="store_true", help="show progress until the end; exit 5 "
                    "when it halts")
    up.add_argument("--abort", action="store_true", help="stop the running rollout")
    sub.add_parser("rollout", parents=[common, as_json], help="the current or last rollout")


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


def cmd_status(args, store: ClusterStore, target: RedisTarget) -> int:
    view = store.cluster_state(int(args.node_ttl * 1000))
    status = status_object(args.cluster, view)
    live = [n for n in status["nodes"] if n["alive"]]
    if args.json:
        print(json.dumps(status))
    else:
        lease = view.snap.lease
        leader = f"leader {lease.holder} (epoch {lease.epoch})" if lease else "no leader"
        if args.command == "status":
            print(f"cluster {args.cluster} at {target.display()}: {leader}; {len(live)} of "
                  f"{len(status['nodes'])} nodes alive")
        if status["nodes"]:
            print("\n".join(node_table(view, status["nodes"])))
        if args.command == "status" and view.rollout is not None \
                and view.rollout.state is RolloutState.RUNNING:
            print(rollout_line(view.rollout, view.now_ms))
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
    from polycorn.ha.redis_launcher import RedisLaunchError, default_dir, redis_up

    try:
        print(redis_up(Path(args.dir) if args.dir else default_dir(), args.port))
    except RedisLaunchError as exc:
        raise CtlError(str(exc), EXIT_REDIS_UP) from None
    return EXIT_OK


def cmd_redis_down(args) -> int:
    from polycorn.ha.redis_launcher import RedisLaunchError, default_dir, redis_down

    try:
        directory = Path(args.dir) if args.dir else default_dir()
        print(f"stopped redis-server (pid {redis_down(directory)})")
    except RedisLaunchError as exc:
        raise CtlError(str(exc), EXIT_REDIS_UP) from None
    return EXIT_OK


CLUSTER_COMMANDS = {"status": cmd_status, "nodes": cmd_status, "leader": cmd_leader,
                    "events": cmd_events,
                    "drain": lambda a, s, t: actions.cmd_drain(a, s),
                    "undrain": lambda a, s, t: actions.cmd_drain(a, s),
                    "forget": lambda a, s, t: actions.cmd_forget(a, s),
                    "upgrade": lambda a, s, t: actions.cmd_upgrade(a, s),
                    "rollout": lambda a, s, t: actions.cmd_rollout(a, s)}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "redis-up":
            return cmd_redis_up(args)
        if args.command == "redis-down":
            return cmd_redis_down(args)
        if args.command == "haproxy":
            return haproxy_cli.main(args, open_store)
        if args.command == "dashboard":
            return dashboard_cli.main(args, open_store)
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
