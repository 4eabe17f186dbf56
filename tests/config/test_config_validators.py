"""Every validator: what it accepts and the one-line message naming setting and value."""

from __future__ import annotations

import os
import pwd

import pytest
from polycorn.server.config import validators as v
from polycorn.server.config.errors import ConfigError
from polycorn.server.config.loader import load_config


def error_for(*args: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config([*args, "app:app"], {})
    message = str(info.value)
    assert "\n" not in message
    return message


# One row per check: the command line, then the exact message.
BAD_COMMAND_LINES = [
    (["-w", "0"], "invalid value for workers (-w/--workers) from the command line: "
                  "'0' is below the minimum of 1"),
    (["-w", "two"], "invalid value for workers (-w/--workers) from the command line: "
                    "'two' is not an integer"),
    (["--threads", "0"], "invalid value for threads (--threads) from the command line: "
                         "'0' is below the minimum of 1"),
    (["--backlog", "0"], "invalid value for backlog (--backlog) from the command line: "
                         "'0' is below the minimum of 1"),
    (["--max-requests", "-1"], "invalid value for max_requests (--max-requests) from the "
                               "command line: '-1' is below the minimum of 0"),
    (["--limit-request-line", "x"], "invalid value for limit_request_line "
                                    "(--limit-request-line) from the command line: "
                                    "'x' is not an integer"),
    (["-t", "-1"], "invalid value for timeout (-t/--timeout) from the command line: "
                   "'-1' must be a finite number of seconds >= 0"),
    (["-t", "soon"], "invalid value for timeout (-t/--timeout) from the command line: "
                     "'soon' is not a number of seconds"),
    (["--keep-alive", "nan"], "invalid value for keepalive (--keep-alive) from the command "
                              "line: 'nan' must be a finite number of seconds >= 0"),
    (["--graceful-timeout", "inf"], "invalid value for graceful_timeout (--graceful-timeout) "
                                    "from the command line: 'inf' must be a finite number of "
                                    "seconds >= 0"),
    (["--upgrade-timeout", "0"], "invalid value for upgrade_timeout (--upgrade-timeout) from "
                                 "the command line: '0' must be more than 0 seconds"),
    (["--deregister-delay", "-1"], "invalid value for deregister_delay (--deregister-delay) "
                                   "from the command line: '-1' must be a finite number of "
                                   "seconds >= 0"),
    (["--deregister-delay", "soon"], "invalid value for deregister_delay (--deregister-delay) "
                                     "from the command line: 'soon' is not a number of "
                                     "seconds"),
    (["--masters", "0"], "invalid value for masters (--masters) from the command line: "
                         "'0' is below the minimum of 1"),
    (["--max-workers", "-2"], "invalid value for max_workers (--max-workers) from the command "
                              "line: '-2' is below the minimum of 0"),
    (["-k", "gevent"], "invalid value for worker_class (-k/--worker-class) from the command "
                       "line: unknown worker class 'gevent' (use sync, thread, event, asgi); for "
                       "many concurrent connections use -k event (WSGI) or -k asgi (ASGI)"),
    (["-k", "fast"], "invalid value for worker_class (-k/--worker-class) from the command "
                     "line: unknown worker class 'fast' (use sync, thread, event, asgi)"),
    (["-b", "127.0.0.1:99999"], "invalid value for bind (-b/--bind) from the command line: "
                                "bad bind address '127.0.0.1:99999': port must be 0-65535"),
    (["-b", "fd://x"], "invalid value for bind (-b/--bind) from the command line: "
                       "bad bind address 'fd://x': fd://N needs a number"),
    (["-m", "0999"], "invalid value for umask (-m/--umask) from the command line: "
                     "'0999' is not a umask (an octal number such as 0o022)"),
    (["-m", "0o1000"], "invalid value for umask (-m/--umask) from the command line: "
                       "'0o1000' is not a umask between 0 and 0o777"),
    (["-u", "no-such-user-pc"], "invalid value for user (-u/--user) from the command line: "
                                "no such user: 'no-such-user-pc'"),
    (["-g", "no-such-group-pc"], "invalid value for group (-g/--group) from the command "
                                 "line: no such group: 'no-such-group-pc'"),
    (["--chdir", "/no/such/dir"], "invalid value for chdir (--chdir) from the command line: "
                                  "can't chdir to '/no/such/dir': no such directory"),
    (["-e", "NOEQUALS"], "invalid value for raw_env (-e/--env) from the command line: "
                         "'NOEQUALS' is not KEY=VALUE"),
    (["-e", "=x"], "invalid value for raw_env (-e/--env) from the command line: "
                   "'=x' is not KEY=VALUE"),
    (["--log-level", "loud"], "invalid value for loglevel (--log-level) from the command "
                              "line: 'loud' is not a log level (one of debug, info, warning, "
                              "error, critical)"),
    (["--access-logformat", "%(h"], "invalid value for access_log_format (--access-logformat)"
                                    " from the command line: '%(h' is not a valid log format: "
                                    "incomplete format key"),
    (["--access-logformat", "100%"], "invalid value for access_log_format "
                                     "(--access-logformat) from the command line: '100%' is "
                                     "not a valid log format: incomplete format"),
    (["--forwarded-allow-ips", "10.0.0.1/8"], "invalid value for forwarded_allow_ips "
                                              "(--forwarded-allow-ips) from the command line: "
                                              "'10.0.0.1/8' is not an IP address or network: "
                                              "10.0.0.1/8 has host bits set"),
    (["--proxy-allow-from", "proxy.local"], "invalid value for proxy_allow_ips "
                                            "(--proxy-allow-from) from the command line: "
                                            "'proxy.local' is not an IP address or network: "
                                            "'proxy.local' does not appear to be an IPv4 or "
                                            "IPv6 network"),
    (["--health-check", "health"], "invalid value for health_check (--health-check) from the "
                                   "command line: 'health' is not a request path (it must "
                                   "start with '/')"),
]


@pytest.mark.parametrize("args, message", BAD_COMMAND_LINES, ids=lambda x: str(x)[:40])
def test_bad_command_line_values(args, message):
    assert error_for(*args) == message


@pytest.mark.parametrize("source, message", [
    ("workers = True", "True is not an integer"),
    ("workers = 2.5", "2.5 is not an integer"),
    ("timeout = '1s'", "'1s' is not a number of seconds"),
    ("timeout = True", "True is not a number of seconds"),
    ("daemon = 'maybe'", "'maybe' is not a boolean (use true or false)"),
    ("daemon = 1", "1 is not a boolean (use true or false)"),
    ("bind = 8000", "8000 is not a string or a list of strings"),
    ("bind = ['127.0.0.1:1', '']", "'' must be a non-empty string"),
    ("pidfile = 5", "5 is not a string (int)"),
    ("wsgi_app = ['a:b']", "['a:b'] is not a string (list)"),
    ("errorlog = ''", "'' must be a non-empty string"),
    ("worker_class = object", "is not a worker name: Polycorn runs its own workers"),
    ("secure_scheme_headers = 'X-Proto'", "'X-Proto' is not a dict"),
    ("user = 1.5", "1.5 is not a user name or id"),
    ("group = None", "None is not a group name or id"),
    ("umask = 'rw'", "'rw' is not a umask"),
    ("health_check = '/he alth'", "'/he alth' is not a request path"),
    ("on_starting = 5", "5 is not callable"),
    ("on_starting = 'nodots'", "'nodots' is not an import path (module.function)"),
    ("on_starting = 'no_such_mod_pc.func'", "cannot import 'no_such_mod_pc'"),
    ("on_starting = 'os.no_such_func'", "module 'os' has no 'no_such_func'"),
])
def test_bad_config_file_values(tmp_path, source, message):
    conf = tmp_path / "c.py"
    conf.write_text(source + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(["-c", str(conf), "app:app"], {})
    name = source.split(" =")[0]
    assert str(info.value).startswith(f"invalid value for {name}")
    assert f"from config file {conf}: " in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("022", 0o22), ("0022", 0o22), ("0o027", 0o27), ("18", 18), ("0x12", 0x12),
    (0o777, 0o777),
    ("777", None),  # no leading 0: decimal 777, above 0o777 (511)
])
def test_umask_spellings(text, expected):
    if expected is None:
        with pytest.raises(ValueError):
            v.umask(text)
    else:
        assert v.umask(text) == expected


def test_booleans():
    for word in ("true", "True", "yes", "on", "1"):
        assert v.as_bool(word) is True
    for word in ("false", "FALSE", "no", "off", "0"):
        assert v.as_bool(word) is False


def test_seconds_keep_their_type():
    assert v.seconds("30") == 30 and isinstance(v.seconds("30"), int)
    assert v.seconds("0.25") == 0.25 and v.seconds(1.5) == 1.5


def test_users_and_groups_by_name_and_id():
    me = pwd.getpwuid(os.geteuid())
    assert v.user_id(me.pw_name) == me.pw_uid
    assert v.user_id(str(me.pw_uid)) == me.pw_uid
    assert v.user_id(12345) == 12345  # an id need not exist, as in Gunicorn
    assert v.group_id("0") == 0


def test_worker_class_aliases():
    for name in ("gthread", "gunicorn.workers.gthread.ThreadWorker", "egg:gunicorn#gthread"):
        assert v.worker_class(name) == "thread"
    assert v.worker_class("gunicorn.workers.sync.SyncWorker") == "sync"
    assert v.worker_class(" event ") == "event"


def test_log_levels_are_case_insensitive_with_warn_alias():
    assert v.log_level("WARN") == "warning"
    assert v.log_level("Critical") == "critical"


def test_address_lists_accept_lists_and_star():
    assert v.ip_network_list(["10.0.0.0/8", "::1"]) == ["10.0.0.0/8", "::1"]
    assert v.ip_network_list("*") == ["*"]
    assert v.ip_network_list("") == []


def test_health_check_empty_means_off():
    assert v.url_path("") is None and v.url_path("/healthz?full=1") == "/healthz?full=1"


def test_access_log_format_accepts_numeric_atoms():
    assert v.access_log_format("%(T)d %(D)s %({x-forwarded-for}i)s") == \
        "%(T)d %(D)s %({x-forwarded-for}i)s"
