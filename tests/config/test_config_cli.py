"""The command line: Gunicorn's flags map to Gunicorn's setting names, usage errors
are one-line ConfigErrors, -v and -h print and exit 0."""

from __future__ import annotations

import pytest
from gunicorn.config import make_settings
from polycorn.server.config.cli import build_parser, parse_command_line
from polycorn.server.config.errors import ConfigError
from polycorn.server.config.loader import load_config
from polycorn.server.config.settings import SETTINGS

from polycorn import __version__

ENV: dict[str, str] = {}  # no PORT, WEB_CONCURRENCY or *_CMD_ARGS from the test runner


def parse(*args: str):
    return parse_command_line(build_parser(SETTINGS), args)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        parse("-v")
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"polycorn (version {__version__})"


def test_help_lists_gunicorn_flags(capsys):
    with pytest.raises(SystemExit) as info:
        parse("--help")
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--bind", "--workers", "--worker-class", "--keep-alive", "--access-logformat",
                 "--handoff", "--max-workers", "--upgrade", "--deregister-delay"):
        assert flag in out
    assert "0 = twice --workers" in out  # the meaning of the max_workers default is stated
    assert "0 = drain at once" in out


def test_unknown_option_is_a_one_line_error():
    with pytest.raises(ConfigError) as info:
        parse("--no-such-option", "app:app")
    assert str(info.value) == "unrecognized arguments: --no-such-option"
    assert info.value.exit_status == 2


def test_missing_option_value():
    with pytest.raises(ConfigError, match="argument -w/--workers: expected one argument"):
        parse("-w")


def test_two_apps_are_an_error():
    with pytest.raises(ConfigError, match="unrecognized arguments: b:app"):
        parse("a:app", "b:app")


def test_only_given_options_are_collected():
    line = parse("-w", "3", "app:app")
    assert line.values == {"workers": "3"}
    assert line.app_spec == "app:app"
    assert parse().values == {} and parse().app_spec is None


@pytest.mark.parametrize("args, name, expected", [
    (["-b", "127.0.0.1:9000"], "bind", ["127.0.0.1:9000"]),
    (["--bind", "unix:/tmp/p.sock"], "bind", ["unix:/tmp/p.sock"]),
    (["-b", "[::1]:9000", "-b", "fd://3"], "bind", ["[::1]:9000", "fd://3"]),
    (["-w", "4"], "workers", 4),
    (["--workers=5"], "workers", 5),
    (["-k", "event"], "worker_class", "event"),
    (["--worker-class", "gthread"], "worker_class", "thread"),
    (["--threads", "8"], "threads", 8),
    (["-t", "60"], "timeout", 60),
    (["--timeout", "0.5"], "timeout", 0.5),
    (["--graceful-timeout", "10"], "graceful_timeout", 10),
    (["--keep-alive", "5"], "keepalive", 5),
    (["--max-requests", "1000"], "max_requests", 1000),
    (["--max-requests-jitter", "50"], "max_requests_jitter", 50),
    (["--preload"], "preload_app", True),
    (["-p", "/tmp/p.pid"], "pidfile", "/tmp/p.pid"),
    (["--pid", "/tmp/q.pid"], "pidfile", "/tmp/q.pid"),
    (["--access-logfile", "-"], "accesslog", "-"),
    (["--access-logformat", "%(h)s %(s)s"], "access_log_format", "%(h)s %(s)s"),
    (["--error-logfile", "/tmp/e.log"], "errorlog", "/tmp/e.log"),
    (["--log-file", "/tmp/f.log"], "errorlog", "/tmp/f.log"),
    (["--log-level", "DEBUG"], "loglevel", "debug"),
    (["--chdir", "/"], "chdir", "/"),
    (["--pythonpath", "a,b"], "pythonpath", "a,b"),
    (["-e", "A=1", "--env", "B=2=3"], "raw_env", ["A=1", "B=2=3"]),
    (["-u", "0"], "user", 0),
    (["-g", "0"], "group", 0),
    (["-u", "root", "-g", "root"], "user", 0),
    (["-m", "007"], "umask", 0o7),
    (["--umask", "0o027"], "umask", 0o27),
    (["--backlog", "64"], "backlog", 64),
    (["--limit-request-line", "0"], "limit_request_line", 0),
    (["--limit-request-fields", "50"], "limit_request_fields", 50),
    (["--limit-request-field_size", "100"], "limit_request_field_size", 100),
    (["--limit-request-field-size", "200"], "limit_request_field_size", 200),
    (["--forwarded-allow-ips", "*"], "forwarded_allow_ips", ["*"]),
    (["--forwarded-allow-ips", "10.0.0.0/8, 192.168.1.1"], "forwarded_allow_ips",
     ["10.0.0.0/8", "192.168.1.1"]),
    (["--proxy-allow-from", "10.1.2.3"], "proxy_allow_ips", ["10.1.2.3"]),
    (["-n", "shop"], "proc_name", "shop"),
    (["-D"], "daemon", True),
    (["--reload"], "reload", True),
    (["--check-config"], "check_config", True),
    (["--print-config"], "print_config", True),
    (["--permit-obsolete-folding"], "permit_obsolete_folding", True),
    (["--no-sendfile"], "sendfile", False),
    (["--reuse-port"], "reuse_port", True),
    (["--worker-connections", "50"], "worker_connections", 50),
    (["--handoff", "/run/shop.sock"], "handoff", "/run/shop.sock"),
    (["--masters", "2"], "masters", 2),
    (["--health-check", "/health"], "health_check", "/health"),
    (["--upgrade-timeout", "90"], "upgrade_timeout", 90),
    (["--max-workers", "8"], "max_workers", 8),
    (["--deregister-delay", "2.5"], "deregister_delay", 2.5),
    (["--deregister-delay", "0"], "deregister_delay", 0),
    (["--upgrade", "/tmp/p.pid"], "upgrade", "/tmp/p.pid"),
])
def test_flag_sets_setting(args, name, expected):
    cfg = load_config([*args, "app:app"], ENV)
    assert getattr(cfg, name) == expected
    assert cfg.source(name) == "the command line"


def test_options_and_app_in_any_order():
    cfg = load_config(["-w", "2", "app:app", "-b", "127.0.0.1:1"], ENV)
    assert (cfg.app_spec, cfg.workers, cfg.bind) == ("app:app", 2, ["127.0.0.1:1"])


# Gunicorn's own parser is the reference: every flag and action we share must match it.
GUNICORN = make_settings()
SHARED = [s for s in SETTINGS if s.name in GUNICORN and GUNICORN[s.name].cli]
# Deliberate differences: an extra spelling, and Gunicorn's store_const/nargs="?" options.
FLAG_EXTRAS = {"limit_request_field_size": ("--limit-request-field-size",)}
ACTION_DIFFERS = {"sendfile", "proxy_protocol"}


@pytest.mark.parametrize("setting", SHARED, ids=lambda s: s.name)
def test_flags_match_gunicorn(setting):
    reference = GUNICORN[setting.name]
    assert setting.flags == tuple(reference.cli) + FLAG_EXTRAS.get(setting.name, ())
    if setting.name not in ACTION_DIFFERS:
        assert setting.action == reference.action


def test_realistic_gunicorn_command_lines_parse_unchanged():
    lines = [
        "-w 4 -k gthread --threads 8 -b 0.0.0.0:8000 --timeout 120 --access-logfile - "
        "--error-logfile - --log-level info myproject.wsgi:application",
        "--bind unix:/run/app.sock --workers 3 --max-requests 1000 --max-requests-jitter 50 "
        "--preload --no-control-socket -n app app:app",
        "-c gunicorn.conf.py --capture-output --enable-stdio-inheritance app:create_app()",
        "--forwarded-allow-ips=* --keep-alive 75 --graceful-timeout 20 -e DJANGO_DEBUG=0 "
        "--statsd-host localhost:8125 --reuse-port app",
    ]
    parser = build_parser(SETTINGS)
    for line in lines:
        parse_command_line(parser, line.split())
