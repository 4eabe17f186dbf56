"""The files a master writes: their modes, and that it removes them when it stops."""

from __future__ import annotations

import json
import os
import signal
import stat

from support.http import get
from support.procs import ROOT, wait_until

APPS = ROOT / "tests" / "apps"


def _umask_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("Umask:"))
    return int(line.split()[1], 8)


def test_pid_and_status_files_are_0644_and_removed_at_stop(polycorn, port, tmp_path):
    """The default --umask is 0 (Gunicorn's): it must not make the master's own files
    world-writable. The status file (PIDFILE.m0) goes with the pid file at stop: a
    stale one names a pid the kernel may reuse."""
    pid_path = tmp_path / "p.pid"
    old = os.umask(0o022)
    try:
        server = polycorn("-b", f"127.0.0.1:{port}", "-p", str(pid_path), "testapp:application",
                          wait_port=port, cwd=APPS)
    finally:
        os.umask(old)
    assert get(port, "/version")[0] == 200
    status_path = wait_until(lambda: (p := tmp_path / "p.pid.m0").exists() and p, 10,
                             what="the status file")
    assert stat.S_IMODE(pid_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(status_path.stat().st_mode) == 0o644
    assert json.loads(status_path.read_text())["pid"] == server.pid
    assert _umask_of(server.pid) == 0o022  # the master keeps the umask it was started with
    server.signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    assert not pid_path.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("p.pid")) == []


def test_pid_file_is_0644_even_under_a_permissive_umask(polycorn, port, tmp_path):
    pid_path = tmp_path / "p.pid"
    old = os.umask(0)
    try:
        polycorn("-b", f"127.0.0.1:{port}", "-p", str(pid_path), "testapp:application",
                 wait_port=port, cwd=APPS)
    finally:
        os.umask(old)
    # The pid file follows the bound port: wait for it rather than read it at once.
    wait_until(pid_path.exists, 10, what="the pid file")
    assert stat.S_IMODE(pid_path.stat().st_mode) == 0o644
    status_path = wait_until(lambda: (p := tmp_path / "p.pid.m0").exists() and p, 10,
                             what="the status file")  # written once the loop starts
    assert stat.S_IMODE(status_path.stat().st_mode) == 0o644


def test_umask_option_shapes_the_unix_socket_file(polycorn, tmp_path):
    """Gunicorn's --umask: the mode of the Unix socket files it binds, nothing more."""
    sock = tmp_path / "s.sock"
    pid_path = tmp_path / "p.pid"
    old = os.umask(0o022)
    try:
        server = polycorn("-b", f"unix:{sock}", "-m", "007", "-p", str(pid_path),
                          "testapp:application", cwd=APPS)
    finally:
        os.umask(old)
    wait_until(lambda: pid_path.exists() and sock.exists(), 15, what="the socket file")
    assert stat.S_IMODE(sock.stat().st_mode) == 0o770
    assert _umask_of(server.pid) == 0o022
