"""Every bad input ends in one line that names the problem and exit status 1 or 2."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from support.http import get
from support.procs import ROOT, free_port

APPS = ROOT / "tests" / "apps"


def run(*args: str, cwd=APPS, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polycorn.server.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, status: set[int], words: str) -> None:
    assert result.returncode in status, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert words in last, result.stderr


def test_unknown_option():
    assert_one_line_error(run("--no-such-thing", "testapp"), {2}, "--no-such-thing")


def test_bad_address():
    assert_one_line_error(run("-b", "127.0.0.1:99999", "testapp"), {1, 2}, "99999")


def test_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert_one_line_error(run("-b", f"127.0.0.1:{port}", "testapp"), {1}, "in use")


def test_missing_module():
    result = run("-b", f"127.0.0.1:{free_port()}", "no_such_module_here:app")
    assert_one_line_error(result, {1}, "no_such_module_here")


def test_app_not_callable(tmp_path):
    (tmp_path / "notcallable.py").write_text("application = 42\n")
    result = run("-b", f"127.0.0.1:{free_port()}", "notcallable:application", cwd=tmp_path)
    assert_one_line_error(result, {1}, "callable")


def test_unwritable_pid_file(tmp_path):
    result = run("-b", f"127.0.0.1:{free_port()}", "-p", str(tmp_path / "no" / "dir" / "x.pid"),
                 "testapp")
    assert_one_line_error(result, {1}, "pid file")


def test_bad_config_file(tmp_path):
    conf = tmp_path / "bad.conf.py"
    conf.write_text("workers = (\n")
    assert_one_line_error(run("-c", str(conf), "testapp"), {2}, "bad.conf.py")


@pytest.mark.parametrize("args,words", [
    (("-w", "many"), "workers"),
    (("-k", "nosuchworker"), "nosuchworker"),
    (("-t", "-5"), "timeout"),
])
def test_bad_values(args, words):
    assert_one_line_error(run(*args, "testapp"), {2}, words)


def test_import_error_inside_the_app_stops_the_master(tmp_path):
    (tmp_path / "broken.py").write_text("import not_a_real_dependency\napplication = None\n")
    result = run("-b", f"127.0.0.1:{free_port()}", "broken:application", cwd=tmp_path)
    assert_one_line_error(result, {1}, "not_a_real_dependency")


def test_a_worker_crashing_at_boot_stops_the_master_instead_of_spinning(tmp_path):
    conf = tmp_path / "crash.conf.py"
    conf.write_text("def post_worker_init(worker):\n    raise RuntimeError('no database')\n")
    result = run("-c", str(conf), "-b", f"127.0.0.1:{free_port()}", "testapp:application")
    assert_one_line_error(result, {1}, "no database")
    assert result.stderr.count("Booting worker") == 1


def test_a_worker_crashing_after_ready_is_respawned_with_back_off(polycorn, port, tmp_path):
    (tmp_path / "crashy.py").write_text(
        "import os\n"
        "def application(environ, start_response):\n"
        "    os._exit(9)  # every request kills its worker\n")
    server = polycorn("-b", f"127.0.0.1:{port}", "crashy:application", wait_port=port,
                      cwd=tmp_path)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            get(port, "/", timeout=0.5)
        except OSError:
            pass  # the request dies with its worker, as it must
    starts = server.log().count("Booting worker")
    assert 2 <= starts <= 10, starts  # without back-off: hundreds in 3 s
    assert "next start in" in server.log()
