"""Fills the Lua templates with the event names of ha/events.py.

A template names an event as `${NODE_JOINED}` (an events.py constant), which
becomes that name as a quoted Lua string; `${STATE_EVENTS}` becomes a Lua
table from node state to its event. An unknown name fails at import, never in Redis.
"""

from __future__ import annotations

from string import Template

from polycorn.ha import events as ev

# Server time in milliseconds, as an exact decimal string (a Lua number would be
# formatted with %.14g and could lose digits).
NOW_MS = """
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
"""


def _lua_string(name: str) -> str:
    if not ev.EVENT_NAME.match(name):  # a name never needs escaping inside '...'
        raise ValueError(f"not an event name: {name!r}")
    return f"'{name}'"


def event_constants() -> dict[str, str]:
    """Every event name events.py defines, by its constant's name."""
    return {k: v for k, v in vars(ev).items()
            if k.isupper() and isinstance(v, str) and ev.EVENT_NAME.match(v)}


def render(template: str) -> str:
    """The script text: each `${CONSTANT}` replaced by its quoted event name."""
    values = {k: _lua_string(v) for k, v in event_constants().items()}
    values["STATE_EVENTS"] = "{" + ", ".join(
        f"{state} = {_lua_string(kind)}" for state, kind in sorted(ev.STATE_EVENTS.items())) + "}"
    return Template(template).substitute(values)
