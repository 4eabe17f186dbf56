"""-k asgi keeps Polycorn's availability: USR2 and a master's kill -9 under load, 0 failed.

The same scenarios as tests/server/test_upgrade.py and test_multimaster.py run
for the WSGI workers, with an ASGI app (lifespan on, health-checked through it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from support.load import Load
from support.procs import ROOT, alive, children, live_masters, wait_until

APPS = ROOT / "tests" / "apps"


def worker_count(pid_path) -> int:
    group = set(live_masters(pid_path).values())
    return sum(1 for pid in group for c in children(pid) if alive(c) and c not in group)


def test_usr2_under_load_loses_no_request(polycorn, port, tmp_path):
    pid_path = tmp_path / "polycorn.pid"
    server = polycorn("-k", "asgi", "-b", f"127.0.0.1:{port}", "-w", "2", "-p", str(pid_path),
                      "--health-check", "/health", "asgi_testapp:app", wait_port=port, cwd=APPS)
    with Load(port, "/pid", threads=6) as load:
        load.wait_requests(100)
        result = subprocess.run([sys.executable, "-m", "polycorn.server.main", "--upgrade",
                                 str(pid_path)], cwd=APPS, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        new_pid = int(pid_path.read_text())
        assert new_pid != server.pid
        wait_until(lambda: not alive(server.pid), 35, what="the old master to exit")
        load.wait_requests(100)
    assert load.result.failed == 0, load.result.summary()


def test_kill_9_of_either_master_loses_no_request(polycorn, port, tmp_path):
    pid_path = tmp_path / "p.pid"
    polycorn("-k", "asgi", "-b", f"127.0.0.1:{port}", "-w", "4", "--masters", "2", "--handoff",
             str(tmp_path / "handoff.sock"), "-p", str(pid_path), "asgi_testapp:app",
             wait_port=port, cwd=APPS)
    wait_until(lambda: len(live_masters(pid_path)) == 2 and worker_count(pid_path) == 4, 20,
               what="two masters with two workers each")
    with Load(port, "/pid", threads=6) as load:
        load.wait_requests(100)
        for index in (0, 1):
            victim = live_masters(pid_path)[index]
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda v=victim, i=index: live_masters(pid_path).get(i, v) != v
                       and worker_count(pid_path) == 4, 15,
                       what=f"master {index} restarted with its workers")
            assert time.monotonic() - killed_at < 15
            load.wait_requests(100)
    assert load.result.failed == 0, load.result.summary()


def test_hup_under_load_loses_no_request(polycorn, port, tmp_path):
    server = polycorn("-k", "asgi", "-b", f"127.0.0.1:{port}", "-w", "2",
                      "--health-check", "/health", "asgi_testapp:app", wait_port=port, cwd=APPS)
    with Load(port, "/pid", threads=6) as load:
        load.wait_requests(100)
        before = set(server.workers())
        server.signal(signal.SIGHUP)
        wait_until(lambda: len(server.workers()) == 2 and not set(server.workers()) & before,
                   30, what="two new workers after HUP")
        load.wait_requests(100)
    assert load.result.failed == 0, load.result.summary()
    assert {body for _, ok, body in load.result.timeline if ok} & {str(p) for p in before}
