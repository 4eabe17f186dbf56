"""The metrics settings (merged into polycorn's command line through the plug-in) and
the node's slot directory, which every master of the node and every generation must
agree on. Standard library and polycorn.server only: loaded in the master.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from polycorn.server.config.setting import Setting
from polycorn.server.config.validators import optional_str

SECTION = "metrics"
DIR_ENV = "POLYCORN_METRICS_DIR"  # carries a generated directory across USR2 and to peers


def metrics_bind(value: Any) -> tuple[str, int] | None:
    text = optional_str(value)
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


SETTINGS: tuple[Setting, ...] = (
    Setting("metrics_bind", ("--metrics-bind",), None, metrics_bind,
            "Serve the node's Prometheus metrics at http://HOST:PORT/metrics (off by "
            "default). One endpoint per node, for all its masters and workers.",
            section=SECTION, metavar="HOST:PORT"),
    Setting("metrics_dir", ("--metrics-dir",), None, optional_str,
            "Directory of the node's metric slot files (default: HANDOFF.metrics with "
            "--handoff, else a new temporary directory kept across USR2).",
            section=SECTION, metavar="DIR"),
)


def slot_directory(cfg: Any) -> str:
    """The node's slot directory: the same for every master of the node and across USR2."""
    chosen = getattr(cfg, "metrics_dir", None)
    if not chosen and getattr(cfg, "handoff", None):
        chosen = str(cfg.handoff) + ".metrics"  # every master of the node names the path
    if chosen:
        os.makedirs(chosen, mode=0o700, exist_ok=True)
        return chosen
    chosen = os.environ.get(DIR_ENV)  # made by this node's first generation (USR2)
    if not chosen:
        chosen = tempfile.mkdtemp(prefix="polycorn-metrics-")
        os.environ[DIR_ENV] = chosen  # a USR2 re-exec finds it again
    os.makedirs(chosen, mode=0o700, exist_ok=True)
    return chosen
