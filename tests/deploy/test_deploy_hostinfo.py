"""hostinfo, the host-side state reader, on a real folder and real processes: which
releases exist and in what order, which are in use, which masters are alive
(only a process matching the stamp beside its pid file is a master: not a zombie, not
an unrelated process under a stale pid file, whatever its command line says)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from polycorn.deploy import hostinfo
from polycorn.deploy.hostinfo import inspect, master_pid
from polycorn.server import identity

# A process that is not a master although "polycorn" is in its command line (as in
# `tail -f /var/log/polycorn.log`, or any process run from a checkout named polycorn).
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)", "polycorn.server.main"]


def write_pidfile(path, pid: int, **stamp) -> None:
    """A pid file as a master writes it: the bare pid, and its stamp beside it."""
    path.write_text(f"{pid}\n")
    Path(f"{path}.identity").write_text(json.dumps({**identity.stamp(pid), **stamp}))


def test_master_pid_trusts_the_stamp_not_the_command_line(tmp_path):
    pidfile = tmp_path / "svc.pid"
    assert master_pid(str(pidfile)) == 0  # no file
    proc = subprocess.Popen(SLEEPER)
    try:
        pidfile.write_text(f"{proc.pid}\n")
        os.utime(pidfile, (time.time() - 3600,) * 2)  # written before the process started:
        assert master_pid(str(pidfile)) == 0  # a stale bare pid file, its pid reused since
        pidfile.write_text(f"{proc.pid}\n")  # a release before stamps wrote it, now
        assert master_pid(str(pidfile)) == proc.pid
        write_pidfile(pidfile, proc.pid)
        assert master_pid(str(pidfile)) == proc.pid
        start = identity.start_time(proc.pid)
        write_pidfile(pidfile, proc.pid, start=start - 1)  # the pid was reused since
        assert master_pid(str(pidfile)) == 0
        write_pidfile(pidfile, proc.pid, boot="another-boot")  # written before a reboot
        assert master_pid(str(pidfile)) == 0
        write_pidfile(pidfile, proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while master_pid(str(pidfile)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert master_pid(str(pidfile)) == 0  # a zombie (not reaped yet) is not alive
    finally:
        proc.kill()
        proc.wait()
    Path(f"{pidfile}.identity").write_text("garbage\n")
    assert master_pid(str(pidfile)) == 0


def test_signal_masters_spares_a_process_that_took_a_stale_pid(tmp_path):
    """`hostinfo --signal TERM`, the daemon stop of the deploy, as the host runs it."""
    stale, live = tmp_path / "stale.pid", tmp_path / "live.pid"
    bystander, master = subprocess.Popen(SLEEPER), subprocess.Popen(SLEEPER)
    try:
        write_pidfile(stale, bystander.pid, start=identity.start_time(bystander.pid) - 1)
        write_pidfile(live, master.pid)
        source = Path(hostinfo.__file__).read_text()
        done = subprocess.run([sys.executable, "-c", source, "--signal", "TERM", str(stale),
                               str(live)], capture_output=True, text=True, timeout=30,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {str(stale): 0, str(live): master.pid}
        assert master.wait(5) == -signal.SIGTERM
        assert bystander.poll() is None  # never signalled
    finally:
        for proc in (bystander, master):
            proc.kill()
            proc.wait()


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
        write_pidfile(pidfile, runner.pid)
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
