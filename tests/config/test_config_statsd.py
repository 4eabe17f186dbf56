"""--statsd-host, --statsd-prefix, --dogstatsd-tags and --enable-backlog-metric: real
settings read as Gunicorn reads them (its own validator is the reference), from the
command line, GUNICORN_CMD_ARGS and a config file; bad values are ConfigErrors."""

from __future__ import annotations

import pytest
from gunicorn.config import validate_statsd_address as gunicorn_statsd_address
from polycorn.server.config.errors import ConfigError
from polycorn.server.config.loader import load_config

SAME_AS_GUNICORN = ["localhost", "localhost:9125", "127.0.0.1:8125", "StatsD.Example:1",
                    "[::1]:9125", "[::1]", "unix:/run/statsd.sock", "unix:///run/statsd.sock",
                    "unix:8125", "tcp://10.0.0.1:8125", "", "  10.1.2.3:99  "]


@pytest.mark.parametrize("text", SAME_AS_GUNICORN)
def test_statsd_host_parses_as_gunicorn_parses_it(text):
    cfg = load_config(["--statsd-host", text, "app:app"], {})
    assert cfg.statsd_host == gunicorn_statsd_address(text)


def test_statsd_settings_default_off():
    cfg = load_config(["app:app"], {})
    assert (cfg.statsd_host, cfg.statsd_prefix, cfg.dogstatsd_tags,
            cfg.enable_backlog_metric) == (None, "", "", False)
    assert cfg.warnings == []


def test_statsd_settings_from_gunicorn_cmd_args_and_a_config_file(tmp_path):
    cfg = load_config(["app:app"], {"GUNICORN_CMD_ARGS": "--statsd-host 10.0.0.1:9125 "
                                    "--statsd-prefix shop --dogstatsd-tags env:prod,app:web "
                                    "--enable-backlog-metric"})
    assert (cfg.statsd_host, cfg.statsd_prefix, cfg.dogstatsd_tags,
            cfg.enable_backlog_metric) == (("10.0.0.1", 9125), "shop", "env:prod,app:web", True)
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("statsd_host = 'unix:/run/statsd.sock'\nstatsd_prefix = 'shop.'\n"
                    "dogstatsd_tags = 'env:prod'\nenable_backlog_metric = True\n")
    cfg = load_config(["-c", str(conf), "app:app"], {})
    assert (cfg.statsd_host, cfg.statsd_prefix, cfg.dogstatsd_tags,
            cfg.enable_backlog_metric) == ("/run/statsd.sock", "shop.", "env:prod", True)
    assert cfg.warnings == []


@pytest.mark.parametrize("args, fragment", [
    (["--statsd-host", "localhost:port"], "'port' is not a port number"),
    (["--statsd-host", "localhost:0"], "'0' is not a port number (1-65535)"),
    (["--statsd-host", "localhost:70000"], "'70000' is not a port number (1-65535)"),
    (["--statsd-host", "[::1"], "is not [IPV6]:PORT"),
    (["--statsd-host", "unix:"], "empty unix socket path"),
    (["--statsd-host", "fd://3"], "not a file descriptor"),
    (["--statsd-prefix", "my app"], "is not a statsd prefix"),
    (["--statsd-prefix", "a:b"], "is not a statsd prefix"),
    (["--statsd-prefix", "caf\u00e9"], "is not a statsd prefix"),
    (["--dogstatsd-tags", "env:prod|x"], "is not a list of dogstatsd tags"),
    (["--dogstatsd-tags", "env:prod,#x"], "is not a list of dogstatsd tags"),
])
def test_bad_statsd_values_are_config_errors(args, fragment):
    with pytest.raises(ConfigError, match=r"^invalid value for (statsd|dogstatsd)") as info:
        load_config([*args, "app:app"], {})
    assert fragment in str(info.value)


def test_a_config_file_value_of_the_wrong_type_is_refused(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("statsd_host = ('localhost', 8125)\n")
    with pytest.raises(ConfigError, match="statsd_host.*is not a string"):
        load_config(["-c", str(conf), "app:app"], {})
