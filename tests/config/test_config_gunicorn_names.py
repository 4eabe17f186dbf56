"""Every setting of the installed Gunicorn (27) is known here: supported, ignored with a
warning that says why, or refused with the reason. The list is read from Gunicorn
itself, so a setting a new Gunicorn adds fails this test until it is placed.

Config files hold imports and helpers too (Gunicorn skips unknown names): only a name
close to a setting's (a likely typo) is reported, and --check-config exits 2 for it.
"""

from __future__ import annotations

import io
import os
import sys
import textwrap

import pytest
from gunicorn import __version__ as gunicorn_version
from gunicorn.config import KNOWN_SETTINGS
from polycorn.server.config.check import run_check
from polycorn.server.config.cli import build_parser
from polycorn.server.config.compat import IGNORED, REFUSED
from polycorn.server.config.errors import ConfigError
from polycorn.server.config.loader import all_settings, load_config
from polycorn.server.plugins import discover
from support.procs import EXAMPLES

GUNICORN = {setting.name: setting for setting in KNOWN_SETTINGS}
OURS = {setting.name: setting for setting in all_settings(discover())}


def test_the_installed_gunicorn_is_the_one_this_table_follows():
    assert int(gunicorn_version.split(".")[0]) >= 27
    assert len(GUNICORN) > 100  # read from Gunicorn, not a copy that could go stale


@pytest.mark.parametrize("name", sorted(GUNICORN))
def test_every_gunicorn_setting_is_known(name):
    assert name in OURS, f"Gunicorn's {name!r} is neither supported, ignored nor refused"
    ours = OURS[name]
    if ours.section in (IGNORED, REFUSED):
        assert ours.help.startswith(("Ignored by Polycorn: ", "Not supported: "))
        assert len(ours.help) > 30, ours.help  # the reason, not just the verdict


@pytest.mark.parametrize("name", sorted(n for n in GUNICORN if GUNICORN[n].cli))
def test_every_gunicorn_flag_is_accepted(name):
    ours = set(OURS[name].flags)
    assert set(GUNICORN[name].cli) <= ours, (name, GUNICORN[name].cli, ours)


def test_every_gunicorn_flag_parses_on_our_command_line():
    parser = build_parser(list(OURS.values()))
    for setting in KNOWN_SETTINGS:
        for flag in setting.cli or ():
            assert parser._option_string_actions.get(flag) is not None, flag


def write(path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


IGNORED_SAMPLES = {"syslog_addr": "'udp://localhost:514'", "http_parser": "'fast'",
                   "dirty_timeout": "10", "ssl_version": "'TLSv1_2'",
                   "http2_max_frame_size": "32768"}


@pytest.mark.parametrize("name", sorted(IGNORED_SAMPLES))
def test_an_ignored_gunicorn_setting_warns_with_the_reason(tmp_path, name):
    conf = write(tmp_path / "c.py", f"{name} = {IGNORED_SAMPLES[name]}\n")
    cfg = load_config(["-c", conf, "app:app"], {})
    notes = [w for w in cfg.warnings if w.startswith(name)]
    assert len(notes) == 1 and "is ignored: " in notes[0], cfg.warnings
    assert cfg.typos == []


REFUSED_SAMPLES = {"http2_cleartext": "'both'",
                   "dirty_apps": "['app.ml:Model']", "dirty_workers": "2",
                   "paste": "'dev.ini'"}


@pytest.mark.parametrize("name", sorted(REFUSED_SAMPLES))
def test_a_refused_gunicorn_setting_is_an_error_with_the_reason(tmp_path, name):
    conf = write(tmp_path / "c.py", f"{name} = {REFUSED_SAMPLES[name]}\n")
    with pytest.raises(ConfigError, match=f"invalid value for {name}.*is not supported: "):
        load_config(["-c", conf, "app:app"], {})


def test_header_map_in_a_config_file_is_the_real_setting(tmp_path):
    conf = write(tmp_path / "c.py", "header_map = 'refuse'\nforwarder_headers = 'SCRIPT_NAME'\n")
    cfg = load_config(["-c", conf, "app:app"], {})
    assert (cfg.header_map, cfg.forwarder_headers, cfg.warnings) == ("refuse", ["SCRIPT_NAME"], [])
    with pytest.raises(ConfigError, match="header_map.*'refused' is not one of drop, refuse"):
        load_config(["--header-map", "refused", "app:app"], {})


CONF_WITH_HELPERS = """
    import multiprocessing
    import os
    from pathlib import Path

    BASE = Path(__file__).parent
    CORES = multiprocessing.cpu_count()
    log_dir = os.environ.get("LOG_DIR", "/tmp")
    def helper(value):
        return value * 2
    class Settings:
        pass

    workers = helper(2)
    header_map = "refuse"
"""


def test_imports_and_helpers_are_not_reported(tmp_path):
    cfg = load_config(["-c", write(tmp_path / "c.py", CONF_WITH_HELPERS), "app:app"], {})
    assert (cfg.workers, cfg.header_map) == (4, "refuse")
    assert cfg.warnings == [] and cfg.typos == []


@pytest.mark.parametrize("typo,meant", [("header_mapp", "header_map"), ("worker", "workers"),
                                        ("keep_alive", "keepalive"), ("access_log", "accesslog"),
                                        ("def post_forks(server, worker):\n    pass",
                                         "post_fork")])
def test_a_near_miss_of_a_setting_name_is_a_typo(tmp_path, typo, meant):
    text = typo if typo.startswith("def ") else f"{typo} = 1"
    cfg = load_config(["-c", write(tmp_path / "c.py", text + "\n"), "app:app"], {})
    assert len(cfg.typos) == 1 and f"did you mean {meant!r}" in cfg.typos[0]
    assert cfg.typos[0] in cfg.warnings  # the server logs it at start


@pytest.fixture
def isolated_process(monkeypatch):
    """run_check changes directory, sys.path and os.environ: restore all three."""
    monkeypatch.chdir(os.getcwd())
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(os, "environ", dict(os.environ))


def test_check_config_exits_2_for_a_typo_and_0_for_helpers(isolated_process, tmp_path):
    helpers = write(tmp_path / "ok.py", CONF_WITH_HELPERS)
    typo = write(tmp_path / "typo.py", "worker = 4\nheader_mapp = 'refuse'\n")
    out, err = io.StringIO(), io.StringIO()
    cfg = load_config(["-c", helpers, "--chdir", str(EXAMPLES), "--check-config",
                       "hello:application"], {})
    assert run_check(cfg, out, err) == 0 and err.getvalue() == ""
    cfg = load_config(["-c", typo, "--chdir", str(EXAMPLES), "--check-config",
                       "hello:application"], {})
    assert run_check(cfg, out, err) == 2
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("polycorn: warning: config file") and "'worker'" in lines[0]
    assert "'header_mapp'" in lines[1] and "did you mean 'header_map'" in lines[1]
    assert lines[-1].startswith("polycorn: error: the config file names 2 setting(s)")
