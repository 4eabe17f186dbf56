"""Pid files and status files name a master only with its stamp (pid, start time, boot id).

A pid file left by a master that died names whatever process got its pid since:
`polycorn --upgrade` must not send that process USR2 (its default action kills it),
and a new master must not refuse to start because of it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from polycorn.server import identity, pidfile
from support.procs import ROOT, alive, port_open, wait_until

APPS = ROOT / "tests" / "apps"
# Not a master, although its command line says "polycorn".
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)", "polycorn.server.main"]


def sleeper() -> subprocess.Popen:
    return subprocess.Popen(SLEEPER)


def reused(record: dict, pid: int) -> dict:
    """The record as a dead master left it, its pid now taken by another process."""
    return {**record, "pid": pid}


def test_stamp_verifies_only_the_process_that_wrote_it():
    proc = sleeper()
    try:
        stamp = identity.stamp(proc.pid)
        assert identity.verified_pid(stamp) == proc.pid
        assert identity.verified_pid({**stamp, "start": stamp["start"] + 1}) == 0
        assert identity.verified_pid({**stamp, "boot": "an-earlier-boot"}) == 0
        assert identity.verified_pid({"pid": proc.pid}) == 0  # no stamp: not trusted
        # ...unless the record's write time is known (a release before stamps wrote it):
        # then only a process that had started by then is its writer.
        started = identity.started_at(proc.pid)
        assert started is not None and abs(started - time.time()) < 60
        assert identity.verified_pid({"pid": proc.pid}, time.time()) == proc.pid
        assert identity.verified_pid({"pid": proc.pid}, started - 5) == 0  # a reused pid
        assert identity.verified_pid(reused(identity.stamp(), proc.pid)) == 0
        proc.kill()
        wait_until(lambda: identity.start_time(proc.pid) is None, 5, what="the zombie")
        assert identity.verified_pid(stamp) == 0  # a zombie runs nothing
    finally:
        proc.kill()
        proc.wait()
    assert identity.verified_pid(None) == 0 and identity.verified_pid({"pid": "x"}) == 0


def test_a_pid_file_from_a_release_before_stamps_names_its_writer_only(tmp_path):
    """Upgrading into this release: the running master's pid file has no stamp yet."""
    proc = sleeper()
    try:
        path = tmp_path / "old.pid"
        path.write_text(f"{proc.pid}\n")
        assert pidfile.running_pid(str(path)) == proc.pid
        os.utime(path, (time.time() - 3600,) * 2)  # written long before that process began
        assert pidfile.running_pid(str(path)) == 0
    finally:
        proc.kill()
        proc.wait()


def test_pid_file_stays_a_bare_pid_for_kill_and_cat(tmp_path):
    """Gunicorn's readers (`kill -s 0 "$(cat PIDFILE)"`, systemd's PIDFile=) keep working."""
    path = tmp_path / "app.pid"
    pidfile.write(str(path), os.getpid())
    assert path.read_text() == f"{os.getpid()}\n"
    done = subprocess.run(["sh", "-c", f'kill -s 0 "$(cat {path})"'], timeout=10)
    assert done.returncode == 0
    assert pidfile.running_pid(str(path)) == os.getpid()
    pidfile.remove_if_ours(str(path), os.getpid() + 1)  # not ours: kept
    assert path.exists()
    pidfile.remove_if_ours(str(path), os.getpid())
    assert not path.exists() and not Path(pidfile.stamp_path(str(path))).exists()


def test_upgrade_never_signals_a_process_that_took_a_stale_pid(polycorn, port, tmp_path):
    """A real master's status file, left behind with its pid now another process's."""
    pid_path = tmp_path / "app.pid"
    server = polycorn("-b", f"127.0.0.1:{port}", "-w", "1", "-p", str(pid_path),
                      "testapp:application", wait_port=port, cwd=APPS)
    status = Path(f"{pid_path}.m0")
    record = wait_until(lambda: identity.read_record(str(status)), 10, what="the status file")
    assert identity.verified_pid(record) == server.pid
    victim = sleeper()
    try:
        status.write_text(json.dumps(reused(record, victim.pid)))
        done = subprocess.run([sys.executable, "-m", "polycorn.server.main", "--upgrade",
                               str(pid_path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert f"pid {victim.pid} is gone or is another process now" in done.stderr
        assert victim.poll() is None  # no USR2: its default action would have killed it
        # A record from before stamps (no start time), written before the victim started,
        # is not trusted either.
        status.write_text(json.dumps({"pid": victim.pid, "index": 0, "state": "running"}))
        os.utime(status, (time.time() - 3600,) * 2)
        done = subprocess.run([sys.executable, "-m", "polycorn.server.main", "--upgrade",
                               str(pid_path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and victim.poll() is None, done.stderr
    finally:
        victim.kill()
        victim.wait()
    assert alive(server.pid)


def test_a_stale_pid_file_does_not_block_a_start_but_a_live_master_does(polycorn, port,
                                                                         tmp_path):
    pid_path = tmp_path / "app.pid"
    victim = sleeper()
    try:
        pidfile.write(str(pid_path), victim.pid)
        Path(pidfile.stamp_path(str(pid_path))).write_text(
            json.dumps(reused(identity.stamp(), victim.pid)))
        server = polycorn("-b", f"127.0.0.1:{port}", "-w", "1", "-p", str(pid_path),
                          "testapp:application", wait_port=port, cwd=APPS)
        wait_until(lambda: pidfile.running_pid(str(pid_path)) == server.pid, 10,
                   what="the new master's pid file")
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()
    second = subprocess.run([sys.executable, "-m", "polycorn.server.main", "-b",
                             f"127.0.0.1:{port}", "-p", str(pid_path), "testapp:application"],
                            cwd=APPS, capture_output=True, text=True, timeout=30)
    assert second.returncode == 1 and "already running" in second.stderr, second.stderr
    server.signal(signal.SIGTERM)
    wait_until(lambda: not alive(server.pid), 20, what="the master to stop")
    assert not pid_path.exists() and not Path(pidfile.stamp_path(str(pid_path))).exists()


# A master as `polycorn --upgrade` sees it, scripted: on USR2 it records "upgrading",
# starts its successor and exits at once; the successor records itself only later.
SCRIPTED_MASTER = r"""
import os, signal, subprocess, sys, time
from polycorn.server import identity
path, delay = sys.argv[1], float(sys.argv[2])
def record(state, pid=None):
    identity.write_record(path, {**identity.stamp(pid), "index": 0, "state": state,
                                 "attempt": 0})
SUCCESSOR = ("import sys, time\nfrom polycorn.server import identity\n"
             "time.sleep(float(sys.argv[2]))\n"
             "identity.write_record(sys.argv[1], {**identity.stamp(), 'index': 0, "
             "'state': 'running', 'attempt': 0})\ntime.sleep(60)\n")
def usr2(*_):
    record("upgrading")
    subprocess.Popen([sys.executable, "-c", SUCCESSOR, path, str(delay)],
                     start_new_session=True)
    os._exit(0)
signal.signal(signal.SIGUSR2, usr2)
record("running")
time.sleep(60)
"""


def test_an_old_master_gone_before_its_successor_recorded_itself_is_not_died(tmp_path):
    """Under load the promoted old master can exit before the new one writes the file."""
    from polycorn.server.upgrade_command import upgrade_one

    status = tmp_path / "app.pid.m0"
    master = subprocess.Popen([sys.executable, "-c", SCRIPTED_MASTER, str(status), "1.0"])
    successor = 0
    try:
        wait_until(lambda: identity.verified_pid(identity.read_record(str(status))), 10,
                   what="the scripted master's record")
        ok, message = upgrade_one(str(status), 20, sys.stdout)
        successor = int((identity.read_record(str(status)) or {}).get("pid") or 0)
        assert ok, message
        assert successor and successor != master.pid
    finally:
        master.kill()
        master.wait()
        if successor:
            os.kill(successor, signal.SIGKILL)


# Started in the master by Python itself (sitecustomize on PYTHONPATH): each TCP listen()
# is held for a while, so a pid file written only after the bind is seen missing while
# the port already answers. Nothing else changes; the delay is only what widens the race.
SLOW_LISTEN = '''
import socket, time
_listen = socket.socket.listen
def listen(self, *args):
    _listen(self, *args)
    if self.family in (socket.AF_INET, socket.AF_INET6):
        time.sleep(0.5)
socket.socket.listen = listen
'''


@pytest.mark.parametrize("masters", [1, 2])
def test_the_pid_file_exists_as_soon_as_the_port_answers(polycorn, port, tmp_path, masters):
    """Gunicorn's arbiter writes the pid file before it binds: a script that finds the
    port answering can read the pid file (the deregister test once found it missing)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_LISTEN)
    pid_path = tmp_path / "p.pid"
    group = ["--masters", "2", "--handoff", str(tmp_path / "h.sock")] if masters > 1 else []
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    server = polycorn("-b", f"127.0.0.1:{port}", "-w", "1", "-p", str(pid_path), *group,
                      "testapp:application", cwd=APPS, env={"PYTHONPATH": path})
    wait_until(lambda: port_open(port) or server.proc.poll() is not None, 15, interval=0.005,
               what="the port to answer")
    existed = pid_path.exists()  # read at once: the master is still inside its listen()
    assert server.proc.poll() is None, server.log()
    assert existed, "the port answered before the pid file was written"
    assert int(pid_path.read_text()) == server.pid
    wait_until(lambda: "ready: " in server.log(), 15, what="the master ready")


def test_a_bind_that_fails_takes_its_pid_file_back(tmp_path):
    """The pid file is written before the bind now: a master that cannot listen must not
    leave it (nor its stamp) behind."""
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        pid_path = tmp_path / "p.pid"
        done = subprocess.run(
            [sys.executable, "-m", "polycorn.server.main", "-b",
             f"127.0.0.1:{taken.getsockname()[1]}", "-p", str(pid_path),
             "testapp:application"], cwd=APPS, capture_output=True, text=True, timeout=30)
    finally:
        taken.close()
    assert done.returncode == 1 and "address already in use" in done.stderr, done.stderr
    assert not pid_path.exists() and not Path(pidfile.stamp_path(str(pid_path))).exists()
