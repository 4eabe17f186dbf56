"""Every event name the Lua scripts log comes from ha/events.py (pure: no Redis).

The scripts are templates filled at import; a quoted event name written into a
script's source would drift from events.py unseen, so the source must hold none.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from polycorn.ha import events as ev
from polycorn.ha import lua
from polycorn.ha.lua.render import event_constants, render
from polycorn.ha.registry import NodeState

LUA_DIR = Path(lua.__file__).parent
NAMES = set(event_constants().values())
# what an XADD logs as its 'event' field: a quoted literal, a local, or an ARGV
EVENT_FIELD = re.compile(r"'event',\s*([^,\s]+)")


def test_the_scripts_source_writes_no_event_name_itself():
    for path in sorted(LUA_DIR.glob("*.py")):
        quoted = set(re.findall(r"'([a-z][a-z0-9_]*)'", path.read_text()))
        assert not quoted & NAMES, f"{path.name} repeats {sorted(quoted & NAMES)}"
        assert "'node_' .." not in path.read_text()


def test_every_event_a_script_logs_is_a_name_of_events_py():
    logged = set()
    for name, text in lua.SCRIPTS.items():
        assert "${" not in text, name
        for value in EVENT_FIELD.findall(text):
            if value.startswith("'"):
                logged.add(value.strip("'"))
            else:  # a local set from templates above it, or the caller's ARGV
                assert value == "kind" or value.startswith("ARGV["), (name, value)
        logged.update(re.findall(r"\bkind = '([a-z_]+)'", text))  # ISSUE_UPGRADE's two
        for table in re.findall(r"local kind = \(\{(.*?)\}\)", text):  # HEARTBEAT's
            logged.update(re.findall(r"= '([a-z_]+)'", table))
    assert logged <= NAMES
    # the scripts log every cluster-side event they should (spot checks)
    assert {ev.LEADER_ELECTED, ev.NODE_DEAD, ev.ROLLOUT_NODE_REISSUED, ev.NODE_READY} <= logged


def test_each_serving_state_has_its_event_and_booting_none():
    assert set(ev.STATE_EVENTS) == {s.value for s in NodeState} - {"booting"}
    assert all(kind == f"node_{state}" for state, kind in ev.STATE_EVENTS.items())


def test_an_unknown_placeholder_fails_at_render():
    with pytest.raises(KeyError):
        render("redis.call('XADD', KEYS[1], '*', 'event', ${NO_SUCH_EVENT})")
    assert render("return ${NODE_DEAD}") == "return 'node_dead'"
