"""--proxy-protocol and --proxy-allow-from read as Gunicorn 27 reads them: its modes and
spellings, the bare flag, config-file booleans, its defaults and its refusals."""

from __future__ import annotations

import textwrap

import pytest
from gunicorn.config import Config as GunicornConfig
from polycorn.server.config.errors import ConfigError
from polycorn.server.config.loader import load_config

ENV: dict[str, str] = {}


def gunicorn_value(args: list[str]) -> str:
    cfg = GunicornConfig()
    parser = cfg.parser()
    ns = parser.parse_args(["app:app", *args])
    value = ns.proxy_protocol
    if value is not None:
        cfg.set("proxy_protocol", value)
    return cfg.proxy_protocol


def test_defaults_are_gunicorns() -> None:
    cfg = load_config(["app:app"], ENV)
    assert cfg.proxy_protocol == "off" == GunicornConfig().proxy_protocol
    assert cfg.proxy_allow_ips == ["127.0.0.1", "::1"] == GunicornConfig().proxy_allow_ips


@pytest.mark.parametrize("args, expected", [
    (["--proxy-protocol"], "auto"),  # the bare flag, as Gunicorn reads it
    (["--proxy-protocol", "v1"], "v1"),
    (["--proxy-protocol", "v2"], "v2"),
    (["--proxy-protocol", "auto"], "auto"),
    (["--proxy-protocol", "off"], "off"),
    (["--proxy-protocol", "V2"], "v2"),
    (["--proxy-protocol=true"], "auto"),
    (["--proxy-protocol", "1"], "auto"),
    (["--proxy-protocol", "false"], "off"),
    (["--proxy-protocol", "none"], "off"),
    (["--proxy-protocol", "0"], "off"),
])
def test_command_line_modes_match_gunicorn(args: list[str], expected: str) -> None:
    cfg = load_config(["app:app", *args], ENV)
    assert cfg.proxy_protocol == expected == gunicorn_value(args)
    assert cfg.source("proxy_protocol") == "the command line"


def test_bare_flag_then_the_app_takes_the_app_as_the_mode_as_in_gunicorn() -> None:
    # argparse's optional value: Gunicorn refuses this command line too.
    with pytest.raises(ConfigError, match="'app:app' is not one of off, v1, v2, auto"):
        load_config(["--proxy-protocol", "app:app"], ENV)
    with pytest.raises(ValueError):
        gunicorn_value(["--proxy-protocol", "app:app"])


def test_bare_flag_before_other_options() -> None:
    cfg = load_config(["--proxy-protocol", "-w", "2", "app:app"], ENV)
    assert (cfg.proxy_protocol, cfg.workers, cfg.app_spec) == ("auto", 2, "app:app")


@pytest.mark.parametrize("line, expected", [
    ("proxy_protocol = True", "auto"),
    ("proxy_protocol = False", "off"),
    ("proxy_protocol = None", "off"),
    ("proxy_protocol = 'v2'", "v2"),
    ("proxy_protocol = ' Auto '", "auto"),
])
def test_config_file_values(tmp_path, line: str, expected: str) -> None:
    conf = tmp_path / "c.py"
    conf.write_text(textwrap.dedent(line) + "\n")
    cfg = load_config(["-c", str(conf), "app:app"], ENV)
    assert cfg.proxy_protocol == expected
    assert cfg.warnings == []


@pytest.mark.parametrize("args, fragment", [
    (["--proxy-protocol", "v3"], "'v3' is not one of off, v1, v2, auto"),
    (["--proxy-protocol", "yes"], "'yes' is not one of off, v1, v2, auto"),
    (["--proxy-allow-from", "10.0.0.1/8"], "has host bits set"),
    (["--proxy-allow-from", "proxy.local"], "is not an IP address or network"),
])
def test_bad_values_are_config_errors(args: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config([*args, "app:app"], ENV)


def test_a_number_in_a_config_file_is_refused(tmp_path) -> None:
    conf = tmp_path / "c.py"
    conf.write_text("proxy_protocol = 2\n")
    with pytest.raises(ConfigError, match="expected off, v1, v2 or auto, not a int"):
        load_config(["-c", str(conf), "app:app"], ENV)


@pytest.mark.parametrize("value, expected", [
    ("*", ["*"]),
    ("10.0.0.0/8, 192.168.1.1,::1", ["10.0.0.0/8", "192.168.1.1", "::1"]),
    ("2001:db8::/32", ["2001:db8::/32"]),
])
def test_allow_from_values(value: str, expected: list[str]) -> None:
    cfg = load_config(["--proxy-allow-from", value, "app:app"], ENV)
    assert cfg.proxy_allow_ips == expected
