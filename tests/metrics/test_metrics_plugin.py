"""The metrics plug-in as the master loads it: its settings, the slot directory every
master of a node agrees on, and no prometheus_client in the master (nor its workers)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from polycorn.metrics.settings import DIR_ENV, metrics_bind, slot_directory
from polycorn.server.config.loader import load_config
from polycorn.server.plugins import discover

MASTER_SIDE = """
import sys
from polycorn.server.config.loader import load_config
from polycorn.server.instrument import configure
from polycorn.server.plugins import discover
plugins = discover()
cfg = load_config(["--metrics-bind", "127.0.0.1:9101", "--metrics-dir", sys.argv[1],
                   "hello:application"], {}, plugins=plugins)
configure(cfg)
sidecars = [s for p in plugins for s in p.sidecars(cfg)]
assert [s.name for s in sidecars] == ["metrics"], sidecars
bad = sorted(m for m in sys.modules if m.startswith("prometheus_client"))
print(bad)
sys.exit(1 if bad else 0)
"""


def test_the_master_never_imports_prometheus_client(tmp_path):
    run = subprocess.run([sys.executable, "-c", MASTER_SIDE, str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(("text", "parsed"), [
    ("127.0.0.1:9101", ("127.0.0.1", 9101)), ("[::1]:9101", ("::1", 9101)), ("", None)])
def test_metrics_bind_reads_host_and_port(text, parsed):
    assert metrics_bind(text) == parsed


@pytest.mark.parametrize("text", ["9101", "host:", "host:0", "host:70000", ":9101"])
def test_metrics_bind_refuses_what_is_not_host_port(text):
    with pytest.raises(ValueError, match="HOST:PORT"):
        metrics_bind(text)


def test_every_master_of_a_node_and_every_generation_finds_one_directory(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv(DIR_ENV, "")  # unset, and restored to what it was after the test
    plugins = discover()
    handoff = tmp_path / "node.sock"
    cfg = load_config(["--metrics-bind", "127.0.0.1:9101", "--handoff", str(handoff),
                       "hello:application"], {}, plugins=plugins)
    assert slot_directory(cfg) == f"{handoff}.metrics"
    assert os.environ[DIR_ENV] == ""  # the hand-off path names it: nothing to pass on
    alone = load_config(["--metrics-bind", "127.0.0.1:9101", "hello:application"], {},
                        plugins=plugins)
    made = slot_directory(alone)  # a new temporary directory, passed on to a USR2 re-exec
    assert os.environ[DIR_ENV] == made and slot_directory(alone) == made
    os.rmdir(made)
    monkeypatch.setenv(DIR_ENV, "")
