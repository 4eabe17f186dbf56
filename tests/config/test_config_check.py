"""--check-config and --print-config: load the configuration and the app, run the health
check once, and exit as the server would (0, or Gunicorn's 1/3/4 with a one-line reason),
or 2 for a likely misspelt setting name in the config file."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from polycorn.server.config.check import format_config, run_check
from polycorn.server.config.loader import load_config
from support.procs import EXAMPLES


@pytest.fixture
def isolated_process(monkeypatch):
    """run_check changes directory, sys.path and os.environ: restore all three."""
    monkeypatch.chdir(os.getcwd())
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(os, "environ", dict(os.environ))


def check(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_check(load_config(["--chdir", str(EXAMPLES), *args], {}), out, err)
    return status, out.getvalue(), err.getvalue()


def test_good_app_exits_0_silently(isolated_process):
    assert check("--check-config", "hello:application") == (0, "", "")


def test_pythonpath_and_env_are_applied_before_loading(isolated_process, tmp_path):
    (tmp_path / "envapp.py").write_text(
        "import os\nassert os.environ['NEEDED'] == 'yes'\n"
        "def application(e, s):\n    return []\n")
    status, _, err = check("--check-config", "--pythonpath", str(tmp_path), "-e", "NEEDED=yes",
                           "envapp")
    assert (status, err) == (0, "")
    sys.modules.pop("envapp", None)


def test_bad_app_exits_4_with_one_line(isolated_process):
    status, out, err = check("--check-config", "hello:nope")
    assert status == 4 and out == ""  # Gunicorn's APP_LOAD_ERROR
    assert err == "polycorn: error: failed to find attribute 'nope' in 'hello'\n"


def test_traceback_only_at_debug(isolated_process):
    status, _, err = check("--check-config", "--log-level", "debug", "no_such_app_module_pc")
    assert status == 3  # Gunicorn's WORKER_BOOT_ERROR: the module does not import
    assert "Traceback" in err
    assert err.rstrip().endswith("polycorn: error: module 'no_such_app_module_pc' not found")


def test_print_config_lists_every_setting(isolated_process):
    status, out, _ = check("--print-config", "-w", "3", "hello:application")
    assert status == 0
    lines = out.splitlines()
    cfg = load_config(["hello:application"], {})
    assert len(lines) == len(list(cfg.settings()))
    assert any(line.split() == ["workers", "=", "3"] for line in lines)
    assert any(line.startswith("on_starting ") and line.endswith("= <_noop()>") for line in lines)
    assert [line.split()[0] for line in lines] == sorted(line.split()[0] for line in lines)


def test_format_config_aligns_values():
    text = format_config(load_config(["app:app"], {}))
    columns = {line.index("=") for line in text.splitlines()}
    assert len(columns) == 1


def run_polycorn(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_CMD_ARGS")}
    return subprocess.run([sys.executable, "-m", "polycorn.server.main", *args], cwd=EXAMPLES,
                          env=env, capture_output=True, text=True, timeout=60)


def test_command_line_check_config_end_to_end():
    assert run_polycorn("--check-config", "hello:application").returncode == 0
    bad = run_polycorn("--check-config", "hello:missing")
    assert bad.returncode == 4
    assert bad.stderr.strip().splitlines()[-1] == (
        "polycorn: error: failed to find attribute 'missing' in 'hello'")


def test_command_line_usage_errors_end_to_end():
    result = run_polycorn("--bogus", "hello")
    assert result.returncode == 2
    assert result.stderr.strip() == "polycorn: error: unrecognized arguments: --bogus"
    version = run_polycorn("-v")
    assert version.returncode == 0 and version.stdout.startswith("polycorn (version ")


HEALTH_APP = """
import os

def application(environ, start_response):
    if environ["PATH_INFO"] == "/health":
        if os.environ.get("HEALTH") == "raise":
            raise RuntimeError("database unreachable")
        status = os.environ.get("HEALTH", "200 OK")
        start_response(status, [("Content-Type", "text/plain")])
        return [b"health"]
    start_response("404 Not Found", [])
    return []
"""


@pytest.mark.parametrize("health,status,words", [
    ("200 OK", 0, None),
    ("503 Service Unavailable", 3, "polycorn: error: health check GET /health answered 503"),
    ("raise", 3, "polycorn: error: health check GET /health: the application raised "
                 "RuntimeError: database unreachable"),
])
def test_check_config_runs_the_health_check_once(tmp_path, health, status, words):
    (tmp_path / "healthapp.py").write_text(HEALTH_APP)
    result = run_polycorn("--check-config", "--chdir", str(tmp_path), "--health-check",
                          "/health", "-e", f"HEALTH={health}", "healthapp:application")
    assert result.returncode == status, result.stderr
    if words is None:
        assert result.stderr == ""
    else:
        assert result.stderr.strip().splitlines() == [words]  # one line, no traceback
