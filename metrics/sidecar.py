"""The metrics sidecar: serves GET /metrics for the whole node from the slot directory.

It runs beside the cluster agent in the master that runs sidecars (the one owning
the hand-off path under --masters N), so there is one endpoint per node. Its HTTP
server is prometheus_client's (a thread in this process, never in the master). It
holds no counts of its own: everything is in the slot files, so when its master
dies and another master's sidecar takes the port, the totals carry on. The port may
still be held by the sidecar it replaces (a USR2, a master's death): it retries
until it gets it. EOF on the channel means its master is gone: it exits.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from polycorn.metrics.aggregate import Aggregator
from polycorn.server.sidecar import Channel, ChannelClosed

log = logging.getLogger("polycorn.error")

FOLD_INTERVAL = 1.0  # seconds between two folds of dead processes' files between scrapes
BIND_RETRY = 0.1


def run_metrics(bind: tuple[str, int], directory: str, channel: Channel) -> None:
    from polycorn.metrics.exposition import NodeCollector
    from prometheus_client import CollectorRegistry, start_http_server

    _install_signals()
    aggregator = Aggregator(directory)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(aggregator))
    host, port = bind
    waited_since = None
    while True:
        try:
            server, _thread = start_http_server(port, addr=host, registry=registry)
            break
        except OSError as exc:
            if waited_since is None:
                waited_since = time.monotonic()
                log.info("metrics: %s:%s busy (%s); retrying until it is free (pid %s)",
                         host, port, exc.strerror, os.getpid())
            if not _master_alive(channel, BIND_RETRY):
                return
    log.info("metrics: serving http://%s:%s/metrics from %s (pid %s)", host, port,
             directory, os.getpid())
    try:
        while _master_alive(channel, FOLD_INTERVAL):
            aggregator.collect()  # fold the dead between scrapes, so files never pile up
    finally:
        server.shutdown()
        server.server_close()
    log.info("metrics: master gone; stopping (pid %s)", os.getpid())


def _install_signals() -> None:
    """Reset what the master installed (its handlers write to its own pipe): the master's
    stop signals end this process; its other signals mean nothing here."""
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN,
                signal.SIGTTOU, signal.SIGWINCH):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, _stop)


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(0)  # unwinds run_metrics: the HTTP server is shut down on the way


def _master_alive(channel: Channel, timeout: float) -> bool:
    """Wait up to timeout for a message (all are ignored); False on EOF."""
    try:
        channel.recv(timeout)
    except ChannelClosed:
        return False
    return True
