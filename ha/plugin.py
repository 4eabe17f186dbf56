"""The entry point the server discovers (group polycorn.plugins): settings plus,
when --redis is given, one sidecar process running the cluster agent.

Import cost is the standard library and polycorn.server only: redis-py is imported
inside the agent process after the fork, never in the master.
"""

from __future__ import annotations

import functools
from typing import Any

from polycorn.ha.settings import SETTINGS, ClusterConfig, ClusterConfigError, cluster_config
from polycorn.server.config.errors import ConfigError
from polycorn.server.sidecar import Channel, Sidecar

AGENT_SIDECAR = "cluster-agent"


def _run_agent(config: ClusterConfig, channel: Channel) -> None:
    from polycorn.ha.agent import run_agent  # in the sidecar process only

    run_agent(config, channel)


class ClusterPlugin:
    name = "cluster"
    settings = SETTINGS

    def sidecars(self, cfg: Any) -> list[Sidecar]:
        try:
            config = cluster_config(cfg)
        except ClusterConfigError as exc:
            raise ConfigError(f"cluster: {exc}") from None
        if config is None:
            return []  # stand-alone: the node runs exactly as without the plug-in
        return [Sidecar(AGENT_SIDECAR, functools.partial(_run_agent, config), title="agent")]


plugin = ClusterPlugin()
