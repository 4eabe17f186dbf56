"""USR2 and HUP under steady load: zero failed requests, automatic rollback of bad releases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from polycorn.server import proctitle
from support.http import get
from support.load import Load
from support.procs import (
    ROOT,
    alive,
    descendants,
    named_pids,
    port_open,
    switch_release,
    unique_name,
    wait_until,
)

TESTAPP = (ROOT / "tests" / "apps" / "testapp.py").read_text()


def make_release(base: Path, name: str, *, version: str, broken_import: bool = False,
                 health: int = 200) -> Path:
    rel = base / "releases" / name
    rel.mkdir(parents=True)
    code = TESTAPP.replace('int(os.environ.get("HEALTH_STATUS", "200"))', str(health))
    if broken_import:
        code += f"\nraise ImportError('release {name} is broken')\n"
    (rel / "testapp.py").write_text(code)
    (rel / "VERSION").write_text(version)
    return rel



def ctl_upgrade(pid_path: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polycorn.server.main", "--upgrade", str(pid_path)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def site(tmp_path, polycorn, port):
    """A Capistrano-style site with release A live, served from `current`."""
    base = tmp_path / "site"
    switch_to = make_release(base, "A", version="A")
    switch_release(base, switch_to)
    pid_path = tmp_path / "polycorn.pid"

    def start(*extra: str):
        return polycorn("-b", f"127.0.0.1:{port}", "-w", "2", "-p", str(pid_path),
                        "--health-check", "/health", "--chdir", str(base / "current"), *extra,
                        "testapp:application", wait_port=port, cwd=base / "current",
                        env={"PWD": str(base / "current")})
    return base, pid_path, start


def the_service(name: str) -> list[int]:
    """Every process of the service: masters of all generations, workers (by proc name)."""
    return named_pids(name)


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def test_usr2_to_a_new_release_under_load(site, port):
    base, pid_path, start = site
    server = start()
    with Load(port) as load:
        load.wait_requests(50)
        switch_release(base, make_release(base, "B", version="B"))
        result = ctl_upgrade(pid_path, base)
        assert result.returncode == 0, result.stderr
        new_pid = int(pid_path.read_text())
        assert new_pid != server.pid
        if proctitle.available():  # the new master re-executed sys.orig_argv, not its title
            assert proctitle.parse(cmdline(new_pid)) == ("master", server.name)
        wait_until(lambda: not alive(server.pid), 35, what="the old master to exit")
        mark = len(load.result.timeline)
        load.wait_requests(100)
    res = load.result
    assert res.failed == 0, res.summary()
    assert {body for _, ok, body in res.timeline[mark:]} == {"B"}
    assert set(the_service(server.name)) == {new_pid, *descendants(new_pid)}


def test_env_a_new_release_drops_is_not_inherited_through_usr2(site, port, tmp_path):
    """-e/--env changes os.environ in the master; the successor is exec'd from the
    environment before it, so a KEY the new configuration no longer sets is gone."""
    base, pid_path, start = site
    conf = tmp_path / "polycorn.conf.py"
    conf.write_text('raw_env = ["APP_VERSION=from-env"]\n')
    start("-c", str(conf))
    assert get(port, "/version")[1] == b"from-env"
    conf.write_text("workers = 2\n")  # the next release's configuration: no raw_env
    result = ctl_upgrade(pid_path, base)
    assert result.returncode == 0, result.stderr
    # The VERSION file, not the old -e value (old workers may answer while they drain).
    wait_until(lambda: get(port, "/version")[1] == b"A", 15, what="release A's own version")
    conf.write_text('raw_env = ["APP_VERSION=again"]\n')
    assert ctl_upgrade(pid_path, base).returncode == 0
    wait_until(lambda: get(port, "/version")[1] == b"again", 15, what="the new -e value")


@pytest.mark.parametrize("bad", ["import", "health"])
def test_usr2_to_a_broken_release_rolls_back(site, port, bad):
    base, pid_path, start = site
    server = start()
    with Load(port) as load:
        load.wait_requests(50)
        rel = make_release(base, "C", version="C", broken_import=bad == "import",
                           health=500 if bad == "health" else 200)
        switch_release(base, rel)
        result = ctl_upgrade(pid_path, base)
        load.wait_requests(100)
    assert result.returncode == 1
    assert "rolled back" in result.stderr
    assert ("broken" if bad == "import" else "answered 500") in result.stderr
    assert load.result.failed == 0, load.result.summary()
    assert set(load.result.bodies) == {"A"}
    assert int(pid_path.read_text()) == server.pid
    assert "upgrade rolled back" in server.log()
    # The failed generation is gone entirely.
    wait_until(lambda: set(the_service(server.name)) == {server.pid, *descendants(server.pid)}, 10,
               what="the failed generation to be gone")


def make_venv(path: Path) -> Path:
    """A virtualenv of its own that sees this checkout's polycorn (through a .pth file)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site_packages = next(path.glob("lib/python*/site-packages"))
    parent = [p for p in sys.path if p.endswith("site-packages")]
    # addsitedir (not a bare path line) so the parent's own .pth files, such as
    # an editable install's finder, are processed too.
    (site_packages / "parent.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in parent))
    return path / "bin" / "python"


@pytest.mark.parametrize("launcher", ["python -m", "console script"])
def test_usr2_follows_the_current_symlink_to_a_new_virtualenv(tmp_path, polycorn, port, launcher):
    base = tmp_path / "site"
    for name in ("A", "B"):
        rel = make_release(base, name, version=name)
        python = make_venv(rel / "venv")
        # What pip writes: a script whose shebang names the release's own interpreter.
        script = rel / "venv" / "bin" / "polycorn"
        script.write_text(f"#!{python}\nfrom polycorn.server.main import main\nmain()\n")
        script.chmod(0o755)
        (rel / "testapp.py").write_text((rel / "testapp.py").read_text() + (
            "\nimport sys as _sys\n_plain = application\n"
            "def application(environ, start_response):\n"
            "    if environ['PATH_INFO'] == '/prefix':\n"
            "        return _reply(start_response, '200 OK', os.path.realpath(_sys.prefix).encode())\n"
            "    return _plain(environ, start_response)\n"))
    switch_release(base, base / "releases" / "A")
    pid_path = tmp_path / "p.pid"
    current = base / "current"
    bin_dir = current / "venv" / "bin"
    command = ([str(bin_dir / "python"), "-m", "polycorn.server.main"] if launcher == "python -m"
               else [str(bin_dir / "polycorn")])
    name = unique_name()
    proc = subprocess.Popen(
        [*command, "-n", name, "-b", f"127.0.0.1:{port}", "-p", str(pid_path),
         "--chdir", str(current), "testapp:application"],
        cwd=current, env={**os.environ, "PWD": str(current)}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port), 15, what="release A")
        assert get(port, "/prefix")[1].decode().endswith("releases/A/venv")
        switch_release(base, base / "releases" / "B")
        result = ctl_upgrade(pid_path, base)
        assert result.returncode == 0, result.stderr
        assert get(port, "/version")[1] == b"B"
        assert get(port, "/prefix")[1].decode().endswith("releases/B/venv")
    finally:
        for pid in the_service(name):
            os.kill(pid, signal.SIGKILL)
        proc.wait(5)


def test_hup_under_load_and_hup_to_a_broken_app(site, port):
    base, pid_path, start = site
    server = start()
    app = base / "current" / "testapp.py"
    with Load(port) as load:
        load.wait_requests(50)
        first = set(server.workers())
        server.signal(signal.SIGHUP)
        wait_until(lambda: not (set(server.workers()) & first) and len(server.workers()) == 2, 20,
                   what="new workers after HUP")
        load.wait_requests(50)
        serving = set(server.workers())
        app.write_text(app.read_text() + "\nraise ImportError('broken on purpose')\n")
        server.signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in server.log(), 20, what="the failed reload")
        load.wait_requests(50)
    assert load.result.failed == 0, load.result.summary()
    # The failed generation was SIGKILLed as the failure was logged; its reaping may
    # trail the log line by a loop turn. Then only the old workers are left.
    wait_until(lambda: set(server.workers()) == serving, 10, what="only the old workers")
    assert "broken on purpose" in server.log()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_twenty_upgrades_in_a_row(site, port):
    base, pid_path, start = site
    server = start()
    wait_until(lambda: len(server.workers()) == 2, 10, what="workers")
    fds_at_start = open_fds(server.pid)
    with Load(port) as load:
        load.wait_requests(20)
        for i in range(20):
            result = ctl_upgrade(pid_path, base)
            assert result.returncode == 0, f"upgrade {i}: {result.stderr}"
    assert load.result.failed == 0, load.result.summary()
    master = int(pid_path.read_text())
    wait_until(lambda: len(the_service(server.name)) == 3, 35, what="only one generation left")
    assert set(the_service(server.name)) == {master, *descendants(master)}
    assert open_fds(master) <= fds_at_start


def test_term_during_an_upgrade_rolls_it_back_and_stops(site, port):
    """A stop while the new generation boots kills it and stops the old master too; the
    reaped new master must not put the stopping one back to serving."""
    base, pid_path, start = site
    server = start("--deregister-delay", "1")
    rel = make_release(base, "B", version="B")
    (rel / "testapp.py").write_text("import time\ntime.sleep(60)\n" + (rel / "testapp.py").read_text())
    switch_release(base, rel)
    server.signal(signal.SIGUSR2)
    new_master = wait_until(lambda: [p for p in the_service(server.name)
                                     if p != server.pid and p not in server.workers()], 10,
                            what="the new master")
    wait_until(lambda: "upgrade started" in server.log(), 10, what="the upgrade")
    server.signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    assert "upgrade rolled back: the old master was asked to stop" in server.log()
    wait_until(lambda: not any(alive(p) for p in new_master), 10, what="the new master gone")
    assert not port_open(port)
