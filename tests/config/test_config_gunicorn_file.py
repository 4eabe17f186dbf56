"""A real-world gunicorn.conf.py, settings and every hook, read unchanged; hook arity
is checked as Gunicorn checks it."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from gunicorn.config import Config as GunicornConfig
from polycorn.server.config.errors import ConfigError
from polycorn.server.config.hooks import HOOK_PARAMS
from polycorn.server.config.loader import load_config, read_config_file

FIXTURE = Path(__file__).parent / "fixtures" / "gunicorn.conf.py"


@pytest.fixture
def cfg():
    return load_config(["-c", str(FIXTURE)], {})


def test_settings_are_read(cfg):
    assert cfg.bind == ["127.0.0.1:8123", "unix:/tmp/polycorn-fixture.sock"]
    assert cfg.workers == multiprocessing.cpu_count() * 2 + 1
    assert (cfg.worker_class, cfg.threads, cfg.worker_class_resolved) == ("thread", 4, "thread")
    assert (cfg.timeout, cfg.graceful_timeout, cfg.keepalive) == (120, 20, 5)
    assert (cfg.max_requests, cfg.max_requests_jitter, cfg.preload_app) == (1000, 50, True)
    assert cfg.env == {"DJANGO_SETTINGS_MODULE": "shop.settings", "FEATURE": "on"}
    assert cfg.umask == 0o007 and cfg.forwarded_allow_ips == ["*"]
    assert cfg.accesslog == "-" and cfg.loglevel == "warning"
    assert cfg.proc_name_resolved == "shop" and cfg.pidfile == "/tmp/shop.pid"
    assert cfg.app_spec == "shop.wsgi:application"
    assert cfg.config == str(FIXTURE)


def test_values_match_what_gunicorn_reads_from_the_same_file(cfg):
    reference = GunicornConfig()
    for name, value in read_config_file(str(FIXTURE)).items():
        if name in reference.settings:
            reference.set(name, value)
    same_meaning = ["bind", "backlog", "workers", "threads", "worker_connections", "timeout",
                    "graceful_timeout", "keepalive", "max_requests", "max_requests_jitter",
                    "preload_app", "raw_env", "umask", "forwarded_allow_ips",
                    "secure_scheme_headers", "accesslog", "errorlog", "loglevel",
                    "access_log_format", "proc_name", "pidfile", "limit_request_line",
                    "wsgi_app", "statsd_host"]
    for name in same_meaning:
        assert getattr(cfg, name) == getattr(reference, name), name
    assert reference.worker_class_str == "gthread" and cfg.worker_class_resolved == "thread"


def test_statsd_host_is_a_real_setting_read_as_gunicorn_reads_it(cfg):
    assert cfg.statsd_host == ("localhost", 8125)
    assert not any("statsd" in note for note in cfg.warnings)


def test_every_hook_is_configured_and_called_with_gunicorn_arguments(cfg):
    calls = cfg.on_starting.__globals__["calls"]
    calls.clear()
    for name, params in HOOK_PARAMS.items():
        assert cfg.has_hook(name), name
        getattr(cfg, name)(*params)
    assert [call[0] for call in calls] == list(HOOK_PARAMS)
    # the 3-argument post_request is adapted to the 4-argument call
    assert ("post_request", "worker", "req", "environ") in calls
    assert ("nworkers_changed", "server", "new_value", "old_value") in calls


def test_hooks_default_to_no_ops_that_has_hook_sees_through():
    cfg = load_config(["app:app"], {})
    for name, params in HOOK_PARAMS.items():
        assert not cfg.has_hook(name)
        assert getattr(cfg, name)(*params) is None
    with pytest.raises(ConfigError, match="no server hook named 'on_start'"):
        cfg.has_hook("on_start")


@pytest.mark.parametrize("name, params", [(n, p) for n, p in HOOK_PARAMS.items()
                                          if n != "post_request"])
def test_hook_with_the_wrong_arity_is_refused(tmp_path, name, params):
    wrong = ", ".join(f"a{i}" for i in range(len(params) + 1))
    conf = tmp_path / "c.py"
    conf.write_text(f"def {name}({wrong}):\n    pass\n")
    with pytest.raises(ConfigError) as info:
        load_config(["-c", str(conf), "app:app"], {})
    assert str(info.value) == (
        f"invalid value for {name} from config file {conf}: '{name}' must accept "
        f"{len(params)} argument(s): ({', '.join(params)})")


@pytest.mark.parametrize("signature", ["(worker, req)", "(worker, req, environ)",
                                       "(worker, req, environ, resp)", "(*args)"])
def test_post_request_forms(tmp_path, signature):
    conf = tmp_path / "c.py"
    conf.write_text(f"seen = []\ndef post_request{signature}:\n    seen.append(1)\n")
    hook = load_config(["-c", str(conf), "app:app"], {}).post_request
    hook("worker", "req", "environ", "resp")  # the server always passes four
    original = getattr(hook, "__wrapped__", hook)
    assert original.__globals__["seen"] == [1]


def test_post_request_with_too_many_parameters(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("def post_request(a, b, c, d, e):\n    pass\n")
    with pytest.raises(ConfigError, match=r"must accept 4 arguments: \(worker, req, environ, "
                                          r"resp\)"):
        load_config(["-c", str(conf), "app:app"], {})


def test_hooks_with_defaults_or_star_args_are_accepted(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("def when_ready(server, extra=None):\n    pass\n"
                    "def pre_fork(*args):\n    pass\n")
    cfg = load_config(["-c", str(conf), "app:app"], {})
    assert cfg.has_hook("when_ready") and cfg.has_hook("pre_fork")


def test_hook_named_by_import_path(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("on_exit = 'os.path.exists'\n")
    import os.path
    assert load_config(["-c", str(conf), "app:app"], {}).on_exit is os.path.exists
