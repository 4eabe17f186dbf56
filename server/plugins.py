"""The plug-in surface: how the cluster layer (ha/) attaches to a node.

server/ never imports ha/. Plug-ins are found through the entry-point group
``polycorn.plugins``; each adds settings and may ask for sidecar processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from polycorn.server.config.setting import Setting

if TYPE_CHECKING:
    from polycorn.server.sidecar import Sidecar

log = logging.getLogger("polycorn.error")

GROUP = "polycorn.plugins"


class Plugin(Protocol):
    name: str
    settings: Sequence[Setting]

    def sidecars(self, cfg: Any) -> list[Sidecar]:
        """Sidecars to run for this configuration (empty when the plug-in is off).

        Raise ConfigError for a bad combination of values.
        """
        ...


def discover() -> list[Plugin]:
    """Load every registered plug-in; a broken one is skipped with a warning."""
    found: list[Plugin] = []
    for ep in entry_points(group=GROUP):
        try:
            found.append(ep.load())
        except Exception as exc:  # a broken optional plug-in must not stop the server
            log.warning("plug-in %s not loaded: %s", ep.name, exc)
    return found
