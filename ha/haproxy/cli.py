"""`polycorn-ctl haproxy config|sync|status`: the front's subcommands.

    polycorn-ctl haproxy config [--bind HOST:PORT] [--slots N] [--runtime-api unix:PATH]
                                [--backend NAME] [--health-path PATH] [--state-file PATH]
    polycorn-ctl haproxy sync   [--runtime-api unix:PATH] [--backend NAME] [--state-file PATH]
    polycorn-ctl haproxy status [--runtime-api unix:PATH] [--backend NAME] [--json]

All take --cluster and --redis (config only prints them into its header). The
runtime API path defaults to /run/haproxy/polycorn-CLUSTER.sock, and the state file
to the same path with .state: config and sync agree without being told.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from polycorn.ha.ctl.common import EXIT_HAPROXY, EXIT_OK, EXIT_REDIS, EXIT_USAGE, CtlError
from polycorn.ha.haproxy import config as cfg
from polycorn.ha.redis_url import RedisUrlError, parse_redis_url
from polycorn.ha.timing import Timing


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    front = sub.add_parser("haproxy", help="the registry-driven HAProxy front: config, sync, "
                           "status")
    verbs = front.add_subparsers(dest="verb", required=True, metavar="VERB")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--runtime-api", metavar="unix:PATH", help="HAProxy's admin socket "
                       "(default: unix:/run/haproxy/polycorn-CLUSTER.sock)")
    where.add_argument("--backend", default=cfg.DEFAULT_BACKEND, metavar="NAME",
                       help="the backend of slots (default: %(default)s)")
    where.add_argument("--state-file", metavar="PATH", help="HAProxy's server-state-file "
                       "(default: the socket's path with .state)")
    c = verbs.add_parser("config", parents=[common, where], help="print a haproxy.cfg")
    c.add_argument("--bind", default=cfg.DEFAULT_BIND, metavar="HOST:PORT",
                   help="where HAProxy listens (default: %(default)s)")
    c.add_argument("--slots", type=int, default=cfg.DEFAULT_SLOTS, metavar="N",
                   help="server slots: the most nodes the backend holds (default: "
                   "%(default)s)")
    c.add_argument("--health-path", default=cfg.DEFAULT_HEALTH_PATH, metavar="PATH",
                   help="the nodes' --health-check path, which answers 503 while a node is "
                   "drained (default: %(default)s)")
    verbs.add_parser("sync", parents=[common, where], help="keep the backend in step with "
                     "the registry (runs until TERM)")
    s = verbs.add_parser("status", parents=[common, where], help="HAProxy's view of each "
                         "slot beside the registry's")
    s.add_argument("--json", action="store_true", help="print JSON")


def options(args: argparse.Namespace) -> cfg.FrontOptions:
    redis = "URL"
    if args.redis:
        try:
            redis = parse_redis_url(args.redis).display()  # no password in a config file
        except RedisUrlError as exc:
            raise CtlError(str(exc), EXIT_USAGE) from None
    try:
        opts = cfg.FrontOptions(
            cluster=args.cluster, redis=redis, bind=getattr(args, "bind", cfg.DEFAULT_BIND),
            slots=getattr(args, "slots", cfg.DEFAULT_SLOTS),
            runtime_api=args.runtime_api or "", backend=args.backend,
            health_path=getattr(args, "health_path", cfg.DEFAULT_HEALTH_PATH),
            state_file=args.state_file or "")
        opts.socket_path  # noqa: B018 - validates --runtime-api
        return opts
    except cfg.ConfigError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None


def main(args: argparse.Namespace, open_store) -> int:
    """Run one verb; `open_store(args)` gives (store, target) as for every subcommand."""
    opts = options(args)
    if args.verb == "config":
        try:
            sys.stdout.write(cfg.render(opts))
        except cfg.ConfigError as exc:
            raise CtlError(str(exc), EXIT_USAGE) from None
        return EXIT_OK
    from polycorn.ha.haproxy.runtime import RuntimeApi

    api = RuntimeApi(opts.socket_path)
    if args.verb == "sync":
        return run_sync(args, opts, api, open_store)
    return run_status(args, opts, api, open_store)


def run_sync(args, opts: cfg.FrontOptions, api, open_store) -> int:
    from polycorn.ha.haproxy.feed import RegistryFeed
    from polycorn.ha.haproxy.sync import Sync
    from polycorn.server.logs import DATE_FORMAT, ERROR_FORMAT

    logging.basicConfig(level=logging.INFO, format=ERROR_FORMAT, datefmt=DATE_FORMAT,
                        stream=sys.stderr)
    timing = Timing(node_ttl=args.node_ttl)
    store, _target = open_store(args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    feed = RegistryFeed(store, int(timing.node_ttl * 1000))
    try:
        Sync(api, feed, opts.backend, timing, opts.state_path).run(stop)
    finally:
        store.close()
    logging.getLogger("polycorn.haproxy").info("sync stopped")
    return EXIT_OK


def run_status(args, opts: cfg.FrontOptions, api, open_store) -> int:
    from polycorn.ha.haproxy.nodes import front_nodes
    from polycorn.ha.haproxy.resolve import Resolver
    from polycorn.ha.haproxy.runtime import RuntimeApiError
    from polycorn.ha.haproxy.servers import StateFormatError, parse_servers_state, parse_stat
    from polycorn.ha.haproxy.status import status_rows, status_table
    from polycorn.ha.store import StoreUnavailable

    try:
        servers = parse_servers_state(api.show_servers_state(opts.backend), opts.backend)
        stats = parse_stat(api.show_stat(opts.backend))
    except (RuntimeApiError, StateFormatError) as exc:
        raise CtlError(f"HAProxy at unix:{opts.socket_path}: {exc}", EXIT_HAPROXY) from None
    store, target = open_store(args)
    registry_error = ""
    try:
        nodes, problems = front_nodes(store.cluster_state(int(args.node_ttl * 1000)),
                                      Resolver().resolve)
    except StoreUnavailable as exc:
        nodes, problems, registry_error = [], {}, f"cannot read Redis at {target.display()}: {exc}"
    finally:
        store.close()
    rows = status_rows(servers, stats, nodes)
    if args.json:
        print(json.dumps({"cluster": args.cluster, "backend": opts.backend,
                          "slots": len(servers), "rows": rows, "unresolved": problems,
                          "registry_error": registry_error or None}))
    else:
        used = sum(1 for r in rows if r["slot"])
        print(f"backend {opts.backend} at unix:{opts.socket_path}: {used} of {len(servers)} "
              f"slots used; cluster {args.cluster}")
        print("\n".join(status_table(rows)))
        for node_id, why in sorted(problems.items()):
            print(f"{node_id}: left out, {why}")
    if registry_error:
        raise CtlError(registry_error, EXIT_REDIS)
    return EXIT_OK
