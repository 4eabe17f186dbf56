"""The entry point the server discovers (group polycorn.plugins): the metrics settings,
the sink every process of the node reports to, and with --metrics-bind one sidecar
that serves /metrics.

Import cost is the standard library and polycorn.server only: prometheus_client is
imported in the sidecar process after the fork, never in the master.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from polycorn.metrics.settings import SETTINGS, slot_directory
from polycorn.metrics.sink import MetricsSink
from polycorn.server.config.errors import ConfigError
from polycorn.server.instrument import register_sink
from polycorn.server.sidecar import Channel, Sidecar

METRICS_SIDECAR = "metrics"


def metrics_sink(cfg: Any) -> MetricsSink | None:
    """The sink --metrics-bind asks for (built in the master; each process opens its
    own slot file on first report)."""
    if getattr(cfg, "metrics_bind", None) is None:
        return None
    from polycorn.server.master.state import worker_class
    from polycorn.server.workers.thread import ThreadWorker

    # Rare calls (master, agent) always take the lock; the request path only needs it
    # when a worker's threads share the slot file.
    return MetricsSink(slot_directory(cfg), threaded=issubclass(worker_class(cfg), ThreadWorker))


def _run(bind: tuple[str, int], directory: str, channel: Channel) -> None:
    from polycorn.metrics.sidecar import run_metrics  # prometheus_client: here only

    run_metrics(bind, directory, channel)


class MetricsPlugin:
    name = "metrics"
    settings = SETTINGS

    def sidecars(self, cfg: Any) -> list[Sidecar]:
        bind = getattr(cfg, "metrics_bind", None)
        if bind is None:
            return []
        # Found, not imported: imported here, its modules would be in every worker
        # forked from the master (measured: +6 MiB private memory per worker).
        if importlib.util.find_spec("prometheus_client") is None:
            raise ConfigError("--metrics-bind needs prometheus_client: pip install "
                              "'polycorn[metrics]'")
        return [Sidecar(METRICS_SIDECAR, functools.partial(_run, bind, slot_directory(cfg)),
                        title="metrics")]


register_sink(metrics_sink)
plugin = MetricsPlugin()
