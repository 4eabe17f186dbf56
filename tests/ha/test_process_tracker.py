"""The one process tracker (polycorn.ha.process_tracker) with real processes: it kills
what it started and what those started, by pid, finds a run's processes again from its
ledger, and never signals a pid that now belongs to another process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from polycorn.ha.process_tracker import ProcessTracker, alive, descendants, stop_pid
from support.procs import wait_until

# A child that starts a grandchild in the background, says its pid and waits.
PARENT = ("import subprocess, sys, time; "
          "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
          "print(p.pid, flush=True); time.sleep(60)")
# Ignores SIGTERM: only SIGKILL ends it.
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")


def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def test_kill_all_takes_children_and_grandchildren(tmp_path):
    tracker = ProcessTracker(tmp_path)
    proc = tracker.spawn([sys.executable, "-c", PARENT], log_path=tmp_path / "parent.log")
    grandchild = int(wait_until(lambda: (tmp_path / "parent.log").read_text().strip(), 10,
                                what="the grandchild's pid"))
    assert grandchild in descendants(proc.pid)
    assert tracker.sweep() >= {proc.pid, grandchild}
    tracker.kill_all()
    assert gone(proc.pid) and not alive(grandchild)
    assert not tracker.sweep()


def test_a_fresh_tracker_finds_an_interrupted_run_from_its_ledger(tmp_path):
    first = ProcessTracker(tmp_path)
    proc = first.spawn([sys.executable, "-c", "import time; time.sleep(60)"],
                       log_path=tmp_path / "sleep.log")
    try:
        assert (tmp_path / "pids.jsonl").exists()
        second = ProcessTracker(tmp_path)  # knows nothing but the run directory
        assert second.tag == first.tag and proc.pid in second.sweep()
        second.kill_all()
        proc.wait(5)  # ours to reap
        assert gone(proc.pid)
    finally:
        first.kill_all()


def test_without_a_run_directory_nothing_is_written_and_nothing_is_tagged(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # a ledger would land in no directory, not here
    tracker = ProcessTracker()
    proc = tracker.spawn([sys.executable, "-c", "import time; time.sleep(60)"],
                         log_path=tmp_path / "sleep.log")
    try:
        assert proc.pid in tracker and tracker.live() == {proc.pid}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sleep.log"]
        with pytest.raises(ValueError):
            tracker.proc_name("n1")
    finally:
        tracker.kill_all()
    assert gone(proc.pid)


def test_a_pid_is_signalled_only_while_it_is_the_process_seen(tmp_path):
    tracker = ProcessTracker()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tracker.remember(proc.pid)
    start = tracker.seen[proc.pid]
    tracker.seen[proc.pid] = start - 1  # as if the pid now named a later process
    assert tracker.live() == set()
    tracker.kill_all(wait=0.5)
    assert alive(proc.pid)  # not ours any more: left alone
    proc.kill()
    proc.wait(5)


def test_stop_pid_terminates_and_falls_back_to_sigkill_after_the_bound(tmp_path):
    tracker = ProcessTracker()
    try:
        polite = tracker.spawn([sys.executable, "-c", "import time; time.sleep(60)"],
                               log_path=tmp_path / "polite.log")
        started = time.monotonic()
        assert stop_pid(polite.pid, timeout=5)
        assert time.monotonic() - started < 2.0  # SIGTERM ended it, no wait for the bound
        assert polite.wait(5) == -15
        stubborn = tracker.spawn([sys.executable, "-c", STUBBORN],
                                 log_path=tmp_path / "stubborn.log")
        wait_until(lambda: "ready" in (tmp_path / "stubborn.log").read_text(), 10,
                   what="the SIGTERM handler installed")
        started = time.monotonic()
        assert stop_pid(stubborn.pid, timeout=0.5)
        took = time.monotonic() - started
        assert 0.5 <= took < 3.0
        assert stubborn.wait(5) == -9
    finally:
        tracker.kill_all()
