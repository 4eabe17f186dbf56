"""The cluster layer's settings (merged into polycorn's command line and config
file through the plug-in) and the ClusterConfig the agent runs with.

Importing this touches only the standard library and polycorn.server, because the
plug-in is loaded in the master, which must never hold a Redis client before it forks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from polycorn.ha.keys import check_name
from polycorn.ha.redis_url import RedisTarget, RedisUrlError, parse_redis_url
from polycorn.ha.registry import default_node_id, default_release
from polycorn.ha.timing import Timing, TimingError
from polycorn.server.config.setting import Setting
from polycorn.server.config.validators import non_negative_int, optional_str, positive_seconds

SECTION = "cluster"
NODE_ID_ENV = "POLYCORN_NODE_ID"  # carries a generated node id across a USR2 re-exec
DEFAULT_CLUSTER = "default"
_DEFAULT_TIMING = Timing()


def _redis_url(value: Any) -> str | None:
    text = optional_str(value)
    if text:
        parse_redis_url(text)  # RedisUrlError is a ValueError: reported as a bad value
    return text or None


def _name(kind: str):
    def validate(value: Any) -> str | None:
        text = optional_str(value)
        return check_name(kind, text) if text else None
    validate.__name__ = f"{kind.replace(' ', '_')}_name"
    return validate


def _advertise(value: Any) -> str | None:
    text = optional_str(value)
    if text:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r} is not HOST:PORT")
    return text or None


def _timer(name: str, flag: str, default: float, help_text: str) -> Setting:
    return Setting(name, (flag,), default, positive_seconds, help_text, section=SECTION,
                   metavar="SECONDS")


SETTINGS: tuple[Setting, ...] = (
    Setting("redis", ("--redis",), None, _redis_url,
            "Redis URL of the cluster: redis://[:password@]host:port/db, rediss://..., "
            "unix:///path?db=N or sentinel://[:password@]host:port[,host:port...]/SERVICE[/db]. "
            "Without it the node runs stand-alone.", section=SECTION, metavar="URL"),
    Setting("cluster", ("--cluster",), DEFAULT_CLUSTER, _name("cluster name"),
            "Name of the cluster this node joins (nodes of one cluster share one Redis).",
            section=SECTION, metavar="NAME"),
    Setting("node_id", ("--node-id",), None, _name("node id"),
            "This node's id in the cluster (default: hostname and a short random suffix, "
            "kept across USR2 upgrades).", section=SECTION, metavar="ID"),
    Setting("advertise", ("--advertise",), None, _advertise,
            "HOST:PORT other nodes and operators should use to reach this node "
            "(default: the first bound address).", section=SECTION, metavar="HOST:PORT"),
    Setting("release", ("--release",), None, optional_str,
            "Release/version string this node shows (default: the basename of the resolved "
            "working directory, i.e. the release id under a releases/<id> + current layout).",
            section=SECTION, metavar="STRING"),
    _timer("cluster_heartbeat", "--cluster-heartbeat", _DEFAULT_TIMING.heartbeat,
           "Seconds between a node's registry heartbeats."),
    _timer("node_ttl", "--node-ttl", _DEFAULT_TIMING.node_ttl,
           "Seconds without a heartbeat after which a node is dead."),
    _timer("leader_lease", "--leader-lease", _DEFAULT_TIMING.lease,
           "Seconds the leader's lease lives in Redis."),
    _timer("leader_renew", "--leader-renew", _DEFAULT_TIMING.renew,
           "Seconds between the leader's lease renewals."),
    _timer("leader_step_down", "--leader-step-down", _DEFAULT_TIMING.step_down,
           "Seconds after its last successful renewal at which a leader stops leading "
           "(must be shorter than the lease)."),
    _timer("redis_connect_timeout", "--redis-connect-timeout", _DEFAULT_TIMING.connect_timeout,
           "Seconds to wait for a Redis connection."),
    _timer("redis_read_timeout", "--redis-read-timeout", _DEFAULT_TIMING.read_timeout,
           "Seconds to wait for one Redis reply."),
    Setting("redis_retries", ("--redis-retries",), _DEFAULT_TIMING.retries, non_negative_int,
            "Retries of one Redis call after a connection error or timeout.",
            section=SECTION, metavar="INT"),
)


@dataclass(frozen=True)
class ClusterConfig:
    """Everything the agent needs, checked once in the master at start-up."""

    cluster: str
    redis_url: str
    target: RedisTarget
    node_id: str
    release: str
    advertise: str | None
    timing: Timing
    metrics_address: str = ""  # HOST:PORT of --metrics-bind, advertised in the registry


def metrics_address(bind: Any) -> str:
    """--metrics-bind as the registry shows it ("" when off). The setting belongs to the
    metrics plug-in (issue 17) when it is installed, so it is read with getattr: a
    (host, port) pair, or already HOST:PORT. The dashboard scrapes it (docs/dashboard.md)."""
    if not bind:
        return ""
    if isinstance(bind, tuple | list):
        host, port = bind
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(bind)


class ClusterConfigError(ValueError):
    """A bad combination of cluster settings (one line)."""


def timing_from(cfg: Any) -> Timing:
    return Timing(heartbeat=float(cfg.cluster_heartbeat), node_ttl=float(cfg.node_ttl),
                  lease=float(cfg.leader_lease), renew=float(cfg.leader_renew),
                  step_down=float(cfg.leader_step_down),
                  connect_timeout=float(cfg.redis_connect_timeout),
                  read_timeout=float(cfg.redis_read_timeout), retries=int(cfg.redis_retries))


def cluster_config(cfg: Any, environ: dict[str, str] | None = None) -> ClusterConfig | None:
    """The agent's configuration, or None when no --redis was given (stand-alone node).

    A generated node id is written to `environ` (os.environ by default) so the
    master's USR2 re-exec, which inherits it, registers as the same node.
    """
    if not getattr(cfg, "redis", None):
        return None
    env = os.environ if environ is None else environ
    try:
        target = parse_redis_url(cfg.redis)
        timing = timing_from(cfg).check()
        node_id = cfg.node_id or env.get(NODE_ID_ENV) or default_node_id()
        check_name("node id", node_id)
    except (RedisUrlError, TimingError, ValueError) as exc:
        raise ClusterConfigError(str(exc)) from None
    env[NODE_ID_ENV] = node_id
    return ClusterConfig(cluster=cfg.cluster or DEFAULT_CLUSTER, redis_url=cfg.redis,
                         target=target, node_id=node_id,
                         release=cfg.release or default_release(),
                         advertise=cfg.advertise, timing=timing,
                         metrics_address=metrics_address(getattr(cfg, "metrics_bind", None)))
