"""USR2 across wire versions, with two real releases of Polycorn itself.

`releases/old` is the tree of 5588dfb (the last release before the typed messages:
wire version 1, dicts with no version field), taken with `git archive` from the
repository these tests run in; `releases/new` is this working tree. Both are laid
out as the installed package is (pyproject's package-dir: polycorn.server is the
server/ folder) and run from a `current` symlink on PYTHONPATH, so a USR2 after a
switch re-executes the master with the other release's code. The app reports which
release's code its worker runs (the real path of polycorn.server) and whether it has
the typed messages.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from support.load import Load
from support.procs import ROOT, alive, switch_release, wait_until

OLD_COMMIT = "5588dfb"  # today's main when the typed messages were written: wire version 1

APP = '''\
import os, sys

def _code():
    server = sys.modules["polycorn.server"]
    release = os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.realpath(server.__file__)))))
    wire = "v2" if "polycorn.server.messages" in sys.modules else "v1"
    return f"{release} {wire}".encode()

def application(environ, start_response):
    body = _code() if environ["PATH_INFO"] == "/code" else b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

# A successor that speaks a wire version no release reads: it takes the sockets,
# says "ready" in version 99 and waits to be promoted or killed.
FUTURE_MAIN = '''\
import json, os, socket, sys, time
sock = socket.socket(fileno=int(os.environ["POLYCORN_UPGRADE_FD"]))
data, fds, _, _ = socket.recv_fds(sock, 65536, 64)
sys.stderr.write(f"future master {os.getpid()} got {len(fds)} fds\\n")
sock.sendall(json.dumps({"type": "ready", "pid": os.getpid(), "version": 99}).encode() + b"\\n")
time.sleep(120)
'''


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, timeout=60)


def old_tree() -> bytes:
    """The tar of the old release's package folders, or skip (with why)."""
    if shutil.which("git") is None:
        pytest.skip("no git: cannot take the old release's tree")
    if _git("rev-parse", "--verify", "--quiet", f"{OLD_COMMIT}^{{commit}}").returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout holding {OLD_COMMIT} (the wire version 1 "
                    "release): nothing to cross with")
    return _git("archive", "--format=tar", OLD_COMMIT, "polycorn", "server", "ha").stdout


def lay_out(rel: Path, folders: dict[str, Path]) -> Path:
    """releases/<name>/polycorn/{__init__.py,server,ha}: the package-dir mapping by hand."""
    pkg = rel / "polycorn"
    pkg.mkdir(parents=True)
    shutil.copy(folders["polycorn"] / "__init__.py", pkg / "__init__.py")
    for name in ("server", "ha"):
        shutil.copytree(folders[name], pkg / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (rel / "crossapp.py").write_text(APP)
    return rel



@pytest.fixture
def site(tmp_path, polycorn, port):
    """releases/old (5588dfb), releases/new (this tree), `current` -> old; start(): a
    master started from `current` with PYTHONPATH=current, as a deploy runs it."""
    tar = old_tree()
    base = tmp_path / "site"
    unpacked = tmp_path / "old-tree"
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        # The "data" filter (3.11.4+) refuses links out of the tree; our own archive.
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(unpacked, **extra)
    old = lay_out(base / "releases" / "old", {n: unpacked / n for n in ("polycorn", "server", "ha")})
    new = lay_out(base / "releases" / "new", {n: ROOT / n for n in ("polycorn", "server", "ha")})
    assert not (old / "polycorn" / "server" / "messages.py").exists()
    assert (new / "polycorn" / "server" / "messages.py").exists()
    current = base / "current"
    pid_path = tmp_path / "polycorn.pid"

    def start(rel: Path):
        switch_release(base, rel)
        return polycorn("-b", f"127.0.0.1:{port}", "-w", "2", "-p", str(pid_path),
                        "--upgrade-timeout", "30", "--chdir", str(current),
                        "crossapp:application", wait_port=port, cwd=current,
                        env={"PWD": str(current), "PYTHONPATH": str(current)})
    return base, old, new, pid_path, start


def read_pid(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def usr2_to(base: Path, rel: Path, master: int, pid_path: Path, server) -> int:
    """Switch `current` to rel, USR2 the master; the promoted successor's pid."""
    switch_release(base, rel)
    os.kill(master, signal.SIGUSR2)

    def promoted() -> int:
        if "upgrade rolled back" in server.log():
            raise AssertionError(f"the upgrade to {rel.name} rolled back:\n{server.log()}")
        pid = read_pid(pid_path)
        return pid if pid not in (0, master) else 0
    try:
        successor = wait_until(promoted, 40, what=f"the {rel.name} master to be promoted")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{server.log()}") from None
    wait_until(lambda: not alive(master), 35, what=f"the old master {master} to drain and exit")
    server.seen.remember(successor)
    assert os.path.realpath(f"/proc/{successor}/cwd") == str(rel)
    assert f"upgrade promoted: new master pid {successor}" in server.log()
    return successor


def bodies_since(load: Load, mark: int) -> set[str]:
    return {body for _, ok, body in load.result.timeline[mark:]}


def test_usr2_from_the_wire_v1_release_to_this_one_and_back_promotes(site, port):
    base, old, new, pid_path, start = site
    server = start(old)
    started = time.monotonic()
    with Load(port, "/code") as load:
        load.wait_requests(50)
        assert bodies_since(load, 0) == {"old v1"}
        to_new = usr2_to(base, new, server.pid, pid_path, server)
        mark = len(load.result.timeline)
        load.wait_requests(100)
        assert bodies_since(load, mark) == {"new v2"}
        # The rollback: the typed release hands over to the version 1 one.
        back = usr2_to(base, old, to_new, pid_path, server)
        mark = len(load.result.timeline)
        load.wait_requests(100)
        assert bodies_since(load, mark) == {"old v1"}
    took = time.monotonic() - started
    print(f"\ncross-release USR2 old -> new -> old: {took:.1f}s, {load.result.summary()}")
    assert back != server.pid and alive(back)
    assert load.result.failed == 0, load.result.summary()
    assert "refused" not in server.log()


def test_a_successor_of_an_unknown_wire_version_is_refused_and_the_master_keeps_serving(
        site, port, tmp_path):
    base, _old, new, pid_path, start = site
    future = base / "releases" / "future"
    (future / "polycorn" / "server").mkdir(parents=True)
    (future / "polycorn" / "__init__.py").write_text("")
    (future / "polycorn" / "server" / "__init__.py").write_text("")
    (future / "polycorn" / "server" / "main.py").write_text(FUTURE_MAIN)
    server = start(new)
    with Load(port, "/code") as load:
        load.wait_requests(50)
        switch_release(base, future)
        began = time.monotonic()
        server.signal(signal.SIGUSR2)
        wait_until(lambda: "upgrade rolled back" in server.log(), 15,
                   what="the version 99 successor to be rolled back")
        took = time.monotonic() - began
        mark = len(load.result.timeline)
        load.wait_requests(100)
    log = server.log()
    future_pid = int(log.split("future master ")[1].split()[0])
    assert (f"refused a 'ready' message of wire version 99: wire version 99 is not one this "
            f"release reads (1, 2); rolling back the new master {future_pid} "
            "(upgrade attempt 1)") in log
    assert (f"upgrade rolled back: the new master {future_pid} sent a message this release "
            "cannot read") in log
    assert took < 10, f"refused at once, not at the 30 s readiness timeout ({took:.1f}s)"
    wait_until(lambda: not alive(future_pid), 5, what="the refused successor to be killed")
    assert read_pid(pid_path) == server.pid and alive(server.pid)
    assert load.result.failed == 0, load.result.summary()
    assert bodies_since(load, mark) == {"new v2"}
