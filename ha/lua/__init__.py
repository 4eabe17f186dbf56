"""The Lua scripts behind every compare-and-set the cluster relies on.

Each script runs atomically inside Redis, so an invariant holds even with two
nodes believing they lead. The scripts are templates: every event name they log
is a `${NAME}` placeholder filled at import from ha/events.py (see render.py), so
the names are written once. `SCRIPTS` maps each script's name to its text.
"""

from __future__ import annotations

from polycorn.ha.lua import duties, lease, registry, state

SCRIPTS: dict[str, str] = {
    name: getattr(module, name)
    for module in (lease, registry, duties, state) for name in module.__all__
}
