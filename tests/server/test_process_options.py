"""Process options with real processes: daemon, user/group, env, pythonpath, error log, WINCH."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import signal
import socket
import subprocess
import sys

import pytest
from support.http import get
from support.procs import ROOT, alive, children, descendants, kill_all, port_open, wait_until

APPS = ROOT / "tests" / "apps"


def test_daemon_detaches_and_winch_stops_its_workers(port, tmp_path):
    pid_path = tmp_path / "d.pid"
    result = subprocess.run([sys.executable, "-m", "polycorn.server.main", "-D", "-w", "2",
                             "-b", f"127.0.0.1:{port}", "-p", str(pid_path),
                             "--error-logfile", str(tmp_path / "error.log"),
                             "testapp:application"], cwd=APPS, timeout=20)
    assert result.returncode == 0  # the foreground process returns at once
    master = wait_until(lambda: pid_path.exists() and int(pid_path.read_text() or 0), 10,
                        what="the pid file")
    try:
        wait_until(lambda: port_open(port), 10, what="the daemon to serve")
        assert os.getsid(master) != os.getsid(0)  # a session of its own: detached from ours
        wait_until(lambda: len(children(master)) == 2, 10, what="two workers")
        os.kill(master, signal.SIGWINCH)
        wait_until(lambda: not children(master), 10, what="WINCH to stop the workers")
        assert alive(master)
        assert "Handling signal: winch" in (tmp_path / "error.log").read_text()
    finally:
        kill_all([master, *descendants(master)])


def test_daemon_reports_its_start_to_the_shell(port, tmp_path):
    """-D detaches before on_starting and bind (Gunicorn's order), yet the command still
    ends with the bind error and status 1, or returns 0 once the pid file is written."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", port))
    busy.listen()
    pid_path = tmp_path / "d.pid"
    argv = [sys.executable, "-m", "polycorn.server.main", "-D", "-b", f"127.0.0.1:{port}",
            "-p", str(pid_path), "testapp:application"]
    with busy:
        failed = subprocess.run(argv, cwd=APPS, capture_output=True, text=True, timeout=20)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        f"polycorn: error: cannot listen on 127.0.0.1:{port}: address already in use")
    assert not pid_path.exists()
    started = subprocess.run(argv, cwd=APPS, capture_output=True, text=True, timeout=20)
    master = int(pid_path.read_text()) if pid_path.exists() else 0
    try:
        assert started.returncode == 0, started.stderr
        assert master and alive(master)  # written before the command returned
        assert os.getsid(master) != os.getsid(0)
        wait_until(lambda: port_open(port), 10, what="the daemon to serve")
    finally:
        if master:
            kill_all([master, *descendants(master)])


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
def test_workers_run_as_the_given_user_and_group(polycorn, port, tmp_path):
    nobody = pwd.getpwnam("nobody")
    # --preload: the checkout may sit in a directory that nobody cannot read.
    server = polycorn("-b", f"127.0.0.1:{port}", "-u", "nobody", "-g", str(nobody.pw_gid),
                      "--preload", "testapp:application", wait_port=port, cwd=APPS)
    worker = int(get(port, "/pid")[1])
    status = open(f"/proc/{worker}/status").read()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    gid_line = next(line for line in status.splitlines() if line.startswith("Gid:"))
    assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
    assert gid_line.split()[1] == str(nobody.pw_gid)
    assert os.stat(f"/proc/{server.pid}").st_uid == 0  # the master keeps its user


def groups_of(pid: int) -> set[int]:
    status = open(f"/proc/{pid}/status").read()
    line = next(line for line in status.splitlines() if line.startswith("Groups:"))
    return {int(g) for g in line.split()[1:]}


def a_user_with_supplementary_groups() -> tuple[pwd.struct_passwd, set[int]] | None:
    """Any local user who is a member of a group other than its own (e.g. postgres in
    ssl-cert), or None."""
    for group in grp.getgrall():
        for member in group.gr_mem:
            try:
                user = pwd.getpwnam(member)
            except KeyError:
                continue
            if group.gr_gid != user.pw_gid:
                return user, {group.gr_gid}
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
@pytest.mark.parametrize("initgroups", [True, False])
def test_initgroups_gives_workers_every_group_of_their_user(polycorn, port, initgroups):
    found = a_user_with_supplementary_groups()
    if found is None:
        pytest.skip("no local user belongs to a group besides its own")
    user, extra = found
    flag = ("--initgroups",) if initgroups else ()
    polycorn("-b", f"127.0.0.1:{port}", "-u", user.pw_name, "-g", str(user.pw_gid), *flag,
             "--preload", "testapp:application", wait_port=port, cwd=APPS)
    worker = int(get(port, "/pid")[1])
    groups = groups_of(worker)
    if initgroups:  # os.initgroups: the user's groups plus -g
        assert extra | {user.pw_gid} <= groups, groups
    else:  # none: not root's, not the user's
        assert groups == set(), groups


def test_reuse_port_lets_another_socket_bind_the_same_port(polycorn, port):
    def can_bind_beside() -> bool:
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                other.bind(("127.0.0.1", port))  # never listens: takes no connection
            except OSError as exc:
                assert exc.errno == errno.EADDRINUSE
                return False
            return True

    server = polycorn("-b", f"127.0.0.1:{port}", "testapp:application", wait_port=port,
                      cwd=APPS)
    assert not can_bind_beside()  # no SO_REUSEPORT unless asked
    server.stop()
    wait_until(lambda: not port_open(port), 10, what="the port to close")
    polycorn("-b", f"127.0.0.1:{port}", "--reuse-port", "-w", "2", "testapp:application",
             wait_port=port, cwd=APPS)
    assert can_bind_beside()
    assert get(port, "/pid")[0] == 200  # still one listener, bound once, serving


def test_env_and_pythonpath(polycorn, port, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "envapp.py").write_text(
        "import os\n"
        "def application(environ, start_response):\n"
        "    body = os.environ.get('GREETING', '-').encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n")
    polycorn("-b", f"127.0.0.1:{port}", "-e", "GREETING=bonjour", "--pythonpath", str(lib),
             "envapp:application", wait_port=port, cwd=tmp_path)
    assert get(port, "/")[1] == b"bonjour"


def test_error_and_access_logs_go_to_their_files(polycorn, port, tmp_path):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    polycorn("-b", f"127.0.0.1:{port}", "--error-logfile", str(error_log), "--access-logfile",
             str(access_log), "--access-logformat", '%(m)s %(U)s %(s)s %({x-test}i)s',
             "testapp:application", wait_port=port, cwd=APPS)
    get(port, "/version", headers={"X-Test": "seen"})
    wait_until(lambda: access_log.exists() and access_log.read_text().strip(), 5,
               what="the access line")
    assert access_log.read_text().strip() == "GET /version 200 seen"
    assert f"Listening at: http://127.0.0.1:{port}" in error_log.read_text()
