"""load_config: defaults (with Gunicorn's environment rules), the config file, the
environment's command line and argv, layered default < file < env < command line."""

from __future__ import annotations

import os
import sys
import textwrap
from dataclasses import dataclass

import pytest
from polycorn.server.config.errors import ConfigError
from polycorn.server.config.loader import load_config
from polycorn.server.config.setting import Setting


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    """Each test runs in an empty directory, so no stray polycorn.conf.py is picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


# -- defaults

def test_defaults_without_environment():
    cfg = load_config(["app:app"], {})
    assert cfg.bind == ["127.0.0.1:8000"]
    assert cfg.workers == 1
    assert cfg.worker_class == "sync" and cfg.worker_class_resolved == "sync"
    assert (cfg.threads, cfg.timeout, cfg.graceful_timeout, cfg.keepalive) == (1, 30, 30, 2)
    assert (cfg.max_requests, cfg.max_requests_jitter, cfg.backlog) == (0, 0, 2048)
    assert (cfg.limit_request_line, cfg.limit_request_fields,
            cfg.limit_request_field_size) == (8190, 100, 8190)
    assert cfg.forwarded_allow_ips == ["127.0.0.1", "::1"]
    assert cfg.proxy_allow_ips == ["127.0.0.1", "::1"]
    assert cfg.accesslog is None and cfg.errorlog == "-" and cfg.loglevel == "info"
    assert cfg.access_log_format == '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    assert (cfg.user, cfg.group) == (os.geteuid(), os.getegid())
    assert cfg.umask == 0 and cfg.raw_env == [] and cfg.pythonpath is None
    assert cfg.chdir == os.getcwd()
    assert (cfg.masters, cfg.upgrade_timeout, cfg.max_workers) == (1, 60, 0)
    assert cfg.max_workers_resolved == 2
    assert cfg.deregister_delay == 1.0
    assert cfg.handoff is None and cfg.health_check is None and cfg.upgrade is None
    assert cfg.config is None and cfg.sendfile is True
    assert cfg.source("workers") == "the default ($WEB_CONCURRENCY, else 1)"
    assert cfg.warnings == []


def test_port_variable_sets_the_default_bind():
    assert load_config(["app:app"], {"PORT": "5000"}).bind == ["0.0.0.0:5000"]


def test_explicit_bind_beats_port(in_tmp_dir):
    env = {"PORT": "5000"}
    assert load_config(["-b", "127.0.0.1:1", "app:app"], env).bind == ["127.0.0.1:1"]
    conf = write(in_tmp_dir / "c.py", "bind = '127.0.0.1:2'\n")
    assert load_config(["-c", conf, "app:app"], env).bind == ["127.0.0.1:2"]


def test_web_concurrency_sets_the_default_workers():
    assert load_config(["app:app"], {"WEB_CONCURRENCY": "6"}).workers == 6
    assert load_config(["-w", "2", "app:app"], {"WEB_CONCURRENCY": "6"}).workers == 2


def test_bad_web_concurrency_names_its_source():
    with pytest.raises(ConfigError) as info:
        load_config(["app:app"], {"WEB_CONCURRENCY": "lots"})
    assert str(info.value) == ("invalid value for workers (-w/--workers) from the default "
                               "($WEB_CONCURRENCY, else 1): 'lots' is not an integer")


def test_forwarded_allow_ips_variable_sets_the_default():
    assert load_config(["app:app"], {"FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == ["*"]


def test_sendfile_variable_sets_the_default():
    assert load_config(["app:app"], {"SENDFILE": "no"}).sendfile is False
    assert load_config(["app:app"], {"SENDFILE": "1"}).sendfile is True


def test_chdir_default_keeps_a_symlinked_path(in_tmp_dir, monkeypatch):
    # A deploy's `current -> releases/2` link must stay in the path so a re-exec follows it.
    (in_tmp_dir / "releases" / "2").mkdir(parents=True)
    (in_tmp_dir / "current").symlink_to(in_tmp_dir / "releases" / "2")
    monkeypatch.chdir(in_tmp_dir / "current")
    logical = str(in_tmp_dir / "current")
    assert load_config(["app:app"], {"PWD": logical}).chdir == logical
    assert load_config(["app:app"], {"PWD": "/"}).chdir == os.getcwd()  # stale PWD ignored


def test_mutable_defaults_are_not_shared():
    first = load_config(["app:app"], {})
    first.raw_env.append("X=1")
    assert load_config(["app:app"], {}).raw_env == []


# -- precedence: default < config file < environment < command line

def test_precedence_file_env_command_line(in_tmp_dir):
    conf = write(in_tmp_dir / "c.py", "workers = 2\ntimeout = 11\nkeepalive = 7\n")
    env = {"POLYCORN_CMD_ARGS": "-w 3 --timeout 12"}
    cfg = load_config(["-c", conf, "-w", "4", "app:app"], env)
    assert (cfg.workers, cfg.timeout, cfg.keepalive, cfg.backlog) == (4, 12, 7, 2048)
    assert cfg.source("workers") == "the command line"
    assert cfg.source("timeout") == "$POLYCORN_CMD_ARGS"
    assert cfg.source("keepalive") == f"config file {conf}"
    assert cfg.source("backlog") == "the default"
    assert load_config(["-c", conf, "app:app"], env).workers == 3
    assert load_config(["-c", conf, "app:app"], {}).workers == 2


def test_repeatable_options_replace_lower_layers_rather_than_merge(in_tmp_dir):
    conf = write(in_tmp_dir / "c.py", "bind = ['127.0.0.1:1', '127.0.0.1:2']\n"
                                      "raw_env = ['A=1']\n")
    cfg = load_config(["-c", conf, "-b", "127.0.0.1:3", "-e", "B=2", "app:app"], {})
    assert cfg.bind == ["127.0.0.1:3"]
    assert cfg.raw_env == ["B=2"]


def test_config_file_named_in_the_environment(in_tmp_dir):
    conf = write(in_tmp_dir / "env.conf.py", "workers = 5\n")
    assert load_config(["app:app"], {"POLYCORN_CMD_ARGS": f"-c {conf}"}).workers == 5
    other = write(in_tmp_dir / "cli.conf.py", "workers = 6\n")
    assert load_config(["-c", other, "app:app"], {"POLYCORN_CMD_ARGS": f"-c {conf}"}).workers == 6


def test_environment_may_name_the_app():
    assert load_config([], {"POLYCORN_CMD_ARGS": "env:app"}).app_spec == "env:app"
    assert load_config(["cli:app"], {"POLYCORN_CMD_ARGS": "env:app"}).app_spec == "cli:app"


def test_environment_quoting_is_shell_like():
    cfg = load_config(["app:app"], {"POLYCORN_CMD_ARGS": "--access-logformat '%(h)s %(s)s'"})
    assert cfg.access_log_format == "%(h)s %(s)s"


def test_environment_errors_name_the_variable():
    with pytest.raises(ConfigError, match=r"^\$POLYCORN_CMD_ARGS: unrecognized arguments: --x$"):
        load_config(["app:app"], {"POLYCORN_CMD_ARGS": "--x"})
    with pytest.raises(ConfigError, match=r"^\$POLYCORN_CMD_ARGS: No closing quotation"):
        load_config(["app:app"], {"POLYCORN_CMD_ARGS": "-n 'open"})
    with pytest.raises(ConfigError, match=r"from \$POLYCORN_CMD_ARGS: 'x' is not an integer"):
        load_config(["app:app"], {"POLYCORN_CMD_ARGS": "-w x"})


def test_gunicorn_cmd_args_is_read_when_polycorn_cmd_args_is_absent():
    assert load_config(["app:app"], {"GUNICORN_CMD_ARGS": "-w 7"}).workers == 7
    both = {"GUNICORN_CMD_ARGS": "-w 7", "POLYCORN_CMD_ARGS": "-w 8"}
    assert load_config(["app:app"], both).workers == 8
    assert load_config(["app:app"], {"GUNICORN_CMD_ARGS": "-w 7"}).source(
        "workers") == "$GUNICORN_CMD_ARGS"


# -- the config file

def test_default_config_file_is_polycorn_then_gunicorn(in_tmp_dir):
    assert load_config(["app:app"], {}).config is None
    write(in_tmp_dir / "gunicorn.conf.py", "workers = 2\n")
    cfg = load_config(["app:app"], {})
    assert (cfg.workers, cfg.config) == (2, str(in_tmp_dir / "gunicorn.conf.py"))
    write(in_tmp_dir / "polycorn.conf.py", "workers = 3\n")
    cfg = load_config(["app:app"], {})
    assert (cfg.workers, cfg.config) == (3, str(in_tmp_dir / "polycorn.conf.py"))


def test_file_prefix_and_python_module(in_tmp_dir, monkeypatch):
    conf = write(in_tmp_dir / "c.py", "workers = 4\n")
    assert load_config(["-c", f"file:{conf}", "app:app"], {}).workers == 4
    write(in_tmp_dir / "conf_module_for_test.py", "workers = 9\nwsgi_app = 'mod:app'\n")
    monkeypatch.delitem(sys.modules, "conf_module_for_test", raising=False)
    cfg = load_config(["-c", "python:conf_module_for_test"], {"PWD": str(in_tmp_dir)})
    assert (cfg.workers, cfg.app_spec) == (9, "mod:app")
    assert str(in_tmp_dir) not in sys.path  # the import path is restored
    sys.modules.pop("conf_module_for_test", None)


def test_python_module_that_does_not_exist():
    with pytest.raises(ConfigError, match="config file python:no_such_conf_mod: "
                                          "ModuleNotFoundError"):
        load_config(["-c", "python:no_such_conf_mod", "app:app"], {})


def test_missing_config_file():
    with pytest.raises(ConfigError, match=r"^config file 'nope.py' not found$"):
        load_config(["-c", "nope.py", "app:app"], {})


def test_config_file_that_raises(in_tmp_dir):
    conf = write(in_tmp_dir / "c.py", "workers = 2\nraise RuntimeError('bad config')\n")
    with pytest.raises(ConfigError) as info:
        load_config(["-c", conf, "app:app"], {})
    assert str(info.value) == f"config file {conf}: RuntimeError: bad config (line 2)"
    assert "Traceback" in info.value.details


def test_config_file_with_a_syntax_error(in_tmp_dir):
    conf = write(in_tmp_dir / "c.py", "workers = 2\nbind = [\n")
    with pytest.raises(ConfigError, match=r"SyntaxError: .*\(line 2\)$"):
        load_config(["-c", conf, "app:app"], {})


def test_config_file_value_is_validated_with_its_source(in_tmp_dir):
    conf = write(in_tmp_dir / "c.py", "workers = 'many'\n")
    with pytest.raises(ConfigError) as info:
        load_config(["-c", conf, "app:app"], {})
    assert str(info.value) == (f"invalid value for workers (-w/--workers) from config file "
                               f"{conf}: 'many' is not an integer")


def test_deregister_delay_from_the_config_file(in_tmp_dir):
    conf = write(in_tmp_dir / "c.py", "deregister_delay = 0.25\n")
    assert load_config(["-c", conf, "app:app"], {}).deregister_delay == 0.25
    conf = write(in_tmp_dir / "c.py", "deregister_delay = -2\n")
    with pytest.raises(ConfigError) as info:
        load_config(["-c", conf, "app:app"], {})
    assert "deregister_delay (--deregister-delay) from config file" in str(info.value)


def test_unknown_names_are_ignored_and_near_misses_warned(in_tmp_dir):
    conf = write(in_tmp_dir / "c.py", """
        import multiprocessing
        CORES = multiprocessing.cpu_count()
        helper_value = 3
        worker = 2            # a typo of workers
        _private = 1
        workers = 2
    """)
    cfg = load_config(["-c", conf, "app:app"], {})
    assert cfg.workers == 2
    assert cfg.warnings == [f"config file {conf}: 'worker' is not a setting "
                            f"(did you mean 'workers'?); ignored"]


def test_app_from_the_config_file_and_the_command_line_wins(in_tmp_dir):
    conf = write(in_tmp_dir / "c.py", "wsgi_app = 'file:app'\n")
    assert load_config(["-c", conf], {}).app_spec == "file:app"
    assert load_config(["-c", conf, "cli:app"], {}).app_spec == "cli:app"


def test_an_app_is_required_except_for_the_upgrade_command():
    with pytest.raises(ConfigError, match="no application module specified"):
        load_config([], {})
    assert load_config(["--upgrade", "/run/p.pid"], {}).app_spec is None


def test_loading_does_not_change_the_process(in_tmp_dir):
    cwd, environ, path = os.getcwd(), dict(os.environ), list(sys.path)
    load_config(["--chdir", "/", "-e", "POLYCORN_TEST_VAR=1", "--pythonpath", "/x",
                 "app:app"], {})
    assert (os.getcwd(), dict(os.environ), sys.path) == (cwd, environ, path)


# -- computed values

def test_worker_class_resolution():
    def resolved(*args):
        return load_config([*args, "app:app"], {}).worker_class_resolved
    assert resolved() == "sync"
    assert resolved("--threads", "4") == "thread"  # Gunicorn: sync with threads is gthread
    assert resolved("-k", "gthread") == "thread"
    assert resolved("-k", "thread", "--threads", "1") == "thread"
    assert resolved("-k", "event", "--threads", "4") == "event"


def test_max_workers():
    assert load_config(["-w", "3", "app:app"], {}).max_workers_resolved == 6
    assert load_config(["-w", "3", "--max-workers", "4", "app:app"], {}).max_workers_resolved == 4
    with pytest.raises(ConfigError, match=r"max_workers \(2\) is below workers \(3\)"):
        load_config(["-w", "3", "--max-workers", "2", "app:app"], {})


def test_proc_name_resolution():
    assert load_config(["app:app"], {}).proc_name_resolved == "app:app"
    assert load_config(["-n", "shop", "app:app"], {}).proc_name_resolved == "shop"
    assert load_config(["--upgrade", "p.pid"], {}).proc_name_resolved == "polycorn"


def test_env_and_pythonpath_lists():
    cfg = load_config(["-e", "A=1", "-e", "B=x=y", "-e", "A=2", "--pythonpath", "a, ,b",
                       "app:app"], {})
    assert cfg.env == {"A": "2", "B": "x=y"}
    assert cfg.pythonpath_list == ["a", "b"]


def test_argv_is_kept_for_a_re_exec():
    argv = ["-w", "2", "app:app"]
    assert load_config(argv, {}).argv == argv


def test_settings_iterates_every_setting_once():
    cfg = load_config(["app:app"], {})
    names = [setting.name for setting, _ in cfg.settings()]
    assert len(names) == len(set(names))
    assert {"bind", "workers", "on_starting", "post_request", "handoff", "statsd_host"} <= set(names)


def test_set_validates_and_attributes_are_read_only():
    cfg = load_config(["app:app"], {})
    cfg.set("workers", "5")
    assert cfg.workers == 5 and cfg.source("workers") == "code"
    with pytest.raises(ConfigError, match="'x' is not an integer"):
        cfg.set("workers", "x")
    with pytest.raises(ConfigError, match="no setting named 'nope'"):
        cfg.set("nope", 1)
    with pytest.raises(AttributeError, match="use cfg.set"):
        cfg.workers = 3
    with pytest.raises(AttributeError, match="no setting named 'nope'"):
        cfg.nope  # noqa: B018


# -- Gunicorn settings accepted for compatibility

def test_ignored_gunicorn_settings_warn():
    cfg = load_config(["--log-syslog", "--no-control-socket", "app:app"], {})
    assert cfg.warnings == ["syslog (--log-syslog) from the command line is ignored: "
                            "no syslog output; use logconfig_dict with a SysLogHandler"]


@pytest.mark.parametrize("args, fragment", [
    (["--paste", "dev.ini"], "PasteDeploy"),
    (["--http-protocols", "h2,h1"], "only HTTP/1.x"),
    (["--protocol", "uwsgi"], "no uwsgi protocol"),
])
def test_refused_gunicorn_settings_are_errors(args, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config([*args, "app:app"], {})


# -- plug-ins

@dataclass
class FakePlugin:
    name: str
    settings: tuple[Setting, ...]

    def sidecars(self, cfg):
        return []


REDIS = Setting("redis_url", ("--redis-url",), None, lambda value: value, "Redis URL.",
                section="cluster", metavar="URL")


def test_plugin_settings_are_merged(in_tmp_dir):
    plugin = FakePlugin("ha", (REDIS,))
    cfg = load_config(["--redis-url", "redis://127.0.0.1:1", "app:app"], {}, plugins=[plugin])
    assert cfg.redis_url == "redis://127.0.0.1:1"
    conf = write(in_tmp_dir / "c.py", "redis_url = 'redis://file'\n")
    assert load_config(["-c", conf, "app:app"], {}, plugins=[plugin]).redis_url == "redis://file"
    assert load_config(["app:app"], {}, plugins=[plugin]).redis_url is None


def test_plugin_redefining_a_setting_is_an_error():
    clash = Setting("workers", ("--workers2",), 1, int, "clash")
    with pytest.raises(ConfigError, match="plug-in 'ha' redefines setting 'workers'"):
        load_config(["app:app"], {}, plugins=[FakePlugin("ha", (clash,))])
