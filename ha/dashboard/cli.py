"""`polycorn-ctl dashboard`: serve the cluster's page until TERM or Ctrl-C.

    polycorn-ctl dashboard [--bind HOST:PORT] [--allow-remote]
                           [--allow-actions (--token-file PATH | $POLYCORN_DASHBOARD_TOKEN)]
                           --cluster NAME --redis URL

Read-only unless --allow-actions, which needs a token (refused at start without one).
Binds loopback only unless --allow-remote (a warning is logged then).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from polycorn.ha.ctl.common import EXIT_OK, EXIT_REDIS, EXIT_USAGE, CtlError
from polycorn.ha.dashboard import guard

DEFAULT_BIND = "127.0.0.1:8470"
log = logging.getLogger("polycorn.dashboard")


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("dashboard", parents=[common], help="serve a live page of the cluster "
                       "(nodes, leader, rollout, events)")
    p.add_argument("--bind", default=DEFAULT_BIND, metavar="HOST:PORT",
                   help="where to serve the page (default: %(default)s)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --bind such as 0.0.0.0:8470 (plain HTTP: put "
                   "it behind TLS)")
    p.add_argument("--allow-actions", action="store_true",
                   help="show drain/undrain/upgrade buttons; needs a token")
    p.add_argument("--token-file", metavar="PATH",
                   help=f"the actions' token (default: ${guard.TOKEN_ENV}); at least "
                   f"{guard.MIN_TOKEN} characters")


def checked_options(args: argparse.Namespace) -> tuple[guard.Bind, str]:
    """The bind and the token, or a usage error before anything starts."""
    if args.token_file and not args.allow_actions:
        raise CtlError("--token-file without --allow-actions: the dashboard is read-only",
                       EXIT_USAGE)
    try:
        bind = guard.parse_bind(args.bind)
        token = guard.load_token(args.token_file) if args.allow_actions else ""
    except guard.GuardError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None
    if not bind.loopback and not args.allow_remote:
        raise CtlError(f"--bind {args.bind} is not a loopback address: pass --allow-remote "
                       "to serve it beyond this host", EXIT_USAGE)
    if args.allow_actions and not token:
        raise CtlError(f"--allow-actions needs a token: --token-file PATH or "
                       f"${guard.TOKEN_ENV}", EXIT_USAGE)
    return bind, token


def main(args: argparse.Namespace, open_store) -> int:
    from polycorn.ha.dashboard.hub import Hub
    from polycorn.ha.dashboard.server import DashboardServer
    from polycorn.ha.store import StoreUnavailable
    from polycorn.server.logs import DATE_FORMAT, ERROR_FORMAT

    bind, token = checked_options(args)
    logging.basicConfig(level=logging.INFO, format=ERROR_FORMAT, datefmt=DATE_FORMAT,
                        stream=sys.stderr)
    store, target = open_store(args)
    try:
        store.snapshot()  # a wrong URL is an error now, not a page that never fills
    except StoreUnavailable as exc:
        store.close()
        raise CtlError(f"cannot use Redis at {target.display()}: {exc}", EXIT_REDIS) from None
    ttl_ms = int(args.node_ttl * 1000)
    hub = Hub(store, args.cluster, ttl_ms, target.display(), args.allow_actions)
    try:
        server = DashboardServer(bind, hub, store, ttl_ms, token)
    except OSError as exc:
        store.close()
        raise CtlError(f"cannot listen on {args.bind}: {exc.strerror or exc}",
                       EXIT_USAGE) from None
    host, port = server.server_address[:2]
    if not bind.loopback:
        log.warning("dashboard: serving %s:%d beyond this host (--allow-remote)%s", host, port,
                    "; actions are allowed, and a token over plain HTTP can be read on the "
                    "way: put TLS in front" if args.allow_actions else "")
    hub.start()
    stopping = threading.Event()

    def stop(*_) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    log.info("dashboard of cluster %s (Redis %s) at http://%s:%d/ (%s); pid %d",
             args.cluster, target.display(), host if ":" not in host else f"[{host}]", port,
             "actions allowed with the token" if args.allow_actions else "read-only",
             os.getpid())
    try:
        server.serve_forever(poll_interval=0.25)
    finally:
        hub.stop()
        server.server_close()
        store.close()
        log.info("dashboard stopped")
    return EXIT_OK
