"""Every bad input ends in one line that names the problem and Gunicorn's exit status:
2 for a command line not understood, 1 for an unusable configuration or a run-time
failure, 3 when a worker cannot boot, 4 when the app cannot be loaded. The same bad
inputs given to a real Gunicorn 27 exit with the same statuses."""

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
    assert_one_line_error(run("-b", "127.0.0.1:99999", "testapp"), {1}, "99999")


def test_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert_one_line_error(run("-b", f"127.0.0.1:{port}", "testapp"), {1}, "in use")


def test_missing_module():
    result = run("-b", f"127.0.0.1:{free_port()}", "no_such_module_here:app")
    assert_one_line_error(result, {3}, "no_such_module_here")


def test_app_not_callable(tmp_path):
    (tmp_path / "notcallable.py").write_text("application = 42\n")
    result = run("-b", f"127.0.0.1:{free_port()}", "notcallable:application", cwd=tmp_path)
    assert_one_line_error(result, {4}, "callable")


def test_unwritable_pid_file(tmp_path):
    result = run("-b", f"127.0.0.1:{free_port()}", "-p", str(tmp_path / "no" / "dir" / "x.pid"),
                 "testapp")
    assert_one_line_error(result, {1}, "pid file")


def test_bad_config_file(tmp_path):
    conf = tmp_path / "bad.conf.py"
    conf.write_text("workers = (\n")
    assert_one_line_error(run("-c", str(conf), "testapp"), {1}, "bad.conf.py")


@pytest.mark.parametrize("args,words", [
    (("-w", "many"), "workers"),
    (("-k", "nosuchworker"), "nosuchworker"),
    (("-t", "-5"), "timeout"),
])
def test_bad_values(args, words):
    assert_one_line_error(run(*args, "testapp"), {1}, words)


def test_import_error_inside_the_app_stops_the_master(tmp_path):
    (tmp_path / "broken.py").write_text("import not_a_real_dependency\napplication = None\n")
    result = run("-b", f"127.0.0.1:{free_port()}", "broken:application", cwd=tmp_path)
    assert_one_line_error(result, {3}, "not_a_real_dependency")


def test_a_worker_crashing_at_boot_stops_the_master_instead_of_spinning(tmp_path):
    conf = tmp_path / "crash.conf.py"
    conf.write_text("def post_worker_init(worker):\n    raise RuntimeError('no database')\n")
    result = run("-c", str(conf), "-b", f"127.0.0.1:{free_port()}", "testapp:application")
    assert_one_line_error(result, {3}, "no database")
    assert result.stderr.count("Booting worker") == 1


@pytest.mark.parametrize("spec,status", [("broken:application", 3),
                                         ("notcallable:application", 4)])
def test_preload_exits_as_a_worker_would(tmp_path, spec, status):
    # Gunicorn says 1 for both with --preload; the cause, not the flag, decides here.
    (tmp_path / "broken.py").write_text("import not_a_real_dependency\n")
    (tmp_path / "notcallable.py").write_text("application = 42\n")
    result = run("--preload", "-b", f"127.0.0.1:{free_port()}", spec, cwd=tmp_path)
    assert_one_line_error(result, {status}, spec.partition(":")[0]
                          if status == 3 else "callable")


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


# -- the same bad inputs, given to Gunicorn 27

GUNICORN_CASES = {
    # name: (arguments, files written into the app directory)
    "unknown option": (["--no-such-thing", "ok:application"], {}),
    "module not found": (["no_such_module_here:application"], {}),
    "import error inside the app": (["broken:application"],
                                    {"broken.py": "import not_a_real_dependency\n"}),
    "attribute missing": (["ok:nope"], {}),
    "not callable": (["notcallable:application"], {"notcallable.py": "application = 42\n"}),
    "a hook raises before the worker is ready": (
        ["-c", "crash.conf.py", "ok:application"],
        {"crash.conf.py": "def post_worker_init(worker):\n    raise RuntimeError('no db')\n"}),
    "config file syntax error": (["-c", "bad.conf.py", "ok:application"],
                                 {"bad.conf.py": "workers = (\n"}),
    "bad value in the config file": (["-c", "val.conf.py", "ok:application"],
                                     {"val.conf.py": "workers = 'many'\n"}),
    "negative timeout": (["-t", "-5", "ok:application"], {}),
    "pid file in a missing directory": (["-p", "/nonexistent/dir/x.pid", "ok:application"], {}),
}
OK_APP = "def application(environ, start_response):\n    return []\n"


@pytest.mark.parametrize("case", sorted(GUNICORN_CASES))
def test_exit_status_is_gunicorns(tmp_path, case):
    args, files = GUNICORN_CASES[case]
    (tmp_path / "ok.py").write_text(OK_APP)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    bind = ["-b", f"127.0.0.1:{free_port()}"]
    gunicorn = subprocess.run([sys.executable, "-m", "gunicorn", "--no-control-socket", *bind,
                               *args], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    ours = run(*bind, *args, cwd=tmp_path)
    assert ours.returncode == gunicorn.returncode, (ours.stderr, gunicorn.stderr)
    assert ours.returncode != 0 and "Traceback" not in ours.stderr
