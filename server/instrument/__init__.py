"""The instrumentation layer: one place the server reports what it does, many sinks.

The server calls an Observer at its events (a request finished, the worker count,
the listen backlog, a warning or error logged, a lifecycle event such as an
upgrade promoted); sinks (statsd here, Prometheus later) subclass Observer and
turn the calls into their own metrics, so each thing is counted once. Standard
library only; ha/ reports its own events (node dead, leader changed) through it.
"""

from polycorn.server.instrument.layer import configure, current, register_sink
from polycorn.server.instrument.observer import (
    HANDOFF_OWNER_CHANGED,
    LEADER_CHANGED,
    MASTER_RESTARTED,
    NODE_DEAD,
    RELOAD_FAILED,
    RELOAD_PROMOTED,
    UPGRADE_PROMOTED,
    UPGRADE_ROLLED_BACK,
    Instruments,
    Observer,
)

__all__ = ["HANDOFF_OWNER_CHANGED", "LEADER_CHANGED", "MASTER_RESTARTED", "NODE_DEAD", "RELOAD_FAILED", "RELOAD_PROMOTED", "UPGRADE_PROMOTED",
           "UPGRADE_ROLLED_BACK", "Instruments", "Observer", "configure", "current",
           "register_sink"]
