"""hostinfo, the host-side state reader, on a real folder and real processes: which
releases exist and in what order, which are in use, which masters are alive
(a zombie or an unrelated process under a stale pid file is not a master)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from polycorn.deploy.hostinfo import inspect, master_pid

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)", "polycorn.server.main"]


def test_master_pid_needs_a_live_polycorn_process(tmp_path):
    pidfile = tmp_path / "svc.pid"
    assert master_pid(str(pidfile)) == 0  # no file
    pidfile.write_text(f"{os.getpid()}\n")
    assert master_pid(str(pidfile)) == 0  # alive, but not polycorn: never signal it
    proc = subprocess.Popen(SLEEPER)
    try:
        pidfile.write_text(f"{proc.pid}\n")
        assert master_pid(str(pidfile)) == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while master_pid(str(pidfile)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert master_pid(str(pidfile)) == 0  # a zombie (not reaped yet) is not alive
    finally:
        proc.kill()
        proc.wait()
    pidfile.write_text("garbage\n")
    assert master_pid(str(pidfile)) == 0


def test_inspect_reads_releases_current_and_use(tmp_path):
    base = tmp_path / "shop"
    for name, created, complete in (("b", 2.0, True), ("a", 1.0, True), ("c", 3.0, False)):
        release = base / "releases" / name
        (release / "venv" / "bin").mkdir(parents=True)
        (release / "release.json").write_text(json.dumps({"id": name, "created": created}))
        if complete:
            (release / "venv" / "bin" / "python").write_text("")
            (release / "polycorn.conf.py").write_text("")
    (base / "shared").mkdir()
    (base / "current").symlink_to(base / "releases" / "b")
    runner = subprocess.Popen(SLEEPER, cwd=base / "current")  # a master running in b
    try:
        pidfile = base / "shared" / "shop.pid"
        pidfile.write_text(f"{runner.pid}\n")
        seen = inspect(str(base), [str(pidfile), str(base / "shared" / "other.pid")])
    finally:
        runner.kill()
        runner.wait()
    assert seen["layout_ok"] and seen["current"] == "b"
    assert [(r["id"], r["created"], r["complete"]) for r in seen["releases"]] == [
        ("a", 1.0, True), ("b", 2.0, True), ("c", 3.0, False)]
    assert seen["in_use"] == ["b"]
    assert seen["masters"] == {str(pidfile): runner.pid, str(base / "shared" / "other.pid"): 0}
    assert not seen["systemd"] or os.path.isdir("/run/systemd/system")


def test_inspect_without_a_layout(tmp_path):
    seen = inspect(str(tmp_path / "nothing"), [])
    assert (seen["base_exists"], seen["layout_ok"], seen["current"], seen["releases"]) == \
        (False, False, None, [])
