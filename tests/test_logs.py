"""Logging: the error log's format and targets, the access log's Gunicorn atoms against a
known request, reopen() after a log rotation, capture_output and logconfig_dict."""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
import sys
import textwrap

import pytest
from polycorn.server.config.errors import ConfigError
from polycorn.server.config.loader import load_config
from polycorn.server.logs import ACCESS_LOGGER, ERROR_LOGGER, AccessLogger, reopen, setup_logging

LINE_PREFIX = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] "
CLF_TIME = r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"


@pytest.fixture(autouse=True)
def restore_logging():
    """setup_logging changes global loggers: put them back as they were."""
    saved = {}
    for name in (ERROR_LOGGER, ACCESS_LOGGER):
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate)
    enabled = [logger for logger in logging.Logger.manager.loggerDict.values()
               if isinstance(logger, logging.Logger) and not logger.disabled]
    yield
    for logger in enabled:  # disable_existing_loggers=True disables every other logger
        logger.disabled = False
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def config(*args: str):
    return load_config([*args, "app:app"], {})


# -- error log

def test_error_log_file_format_and_level(tmp_path):
    path = tmp_path / "error.log"
    setup_logging(config("--error-logfile", str(path), "--log-level", "warning"))
    log = logging.getLogger(ERROR_LOGGER)
    log.info("not shown")
    log.warning("shown %s", 1)
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(LINE_PREFIX + r"\[WARNING\] shown 1", lines[0]), lines[0]
    assert f"[{os.getpid()}]" in lines[0]


def test_error_log_defaults_to_stderr(capsys):
    setup_logging(config())
    logging.getLogger(ERROR_LOGGER).info("hello stderr")
    captured = capsys.readouterr()
    assert re.fullmatch(LINE_PREFIX + r"\[INFO\] hello stderr\n", captured.err)
    assert captured.out == ""


def test_setting_up_again_replaces_handlers(tmp_path):
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    setup_logging(config("--error-logfile", str(first), "--access-logfile", str(first)))
    setup_logging(config("--error-logfile", str(second), "--access-logfile", str(second)))
    assert len(logging.getLogger(ERROR_LOGGER).handlers) == 1
    assert len(logging.getLogger(ACCESS_LOGGER).handlers) == 1
    logging.getLogger(ERROR_LOGGER).warning("once")
    assert first.read_text() == "" and second.read_text().count("once") == 1


def test_unwritable_error_log_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^errorlog: cannot open '.*/missing/e.log': "
                                          r"No such file or directory$"):
        setup_logging(config("--error-logfile", str(tmp_path / "missing" / "e.log")))


def test_configuration_warnings_are_logged(tmp_path):
    path = tmp_path / "error.log"
    setup_logging(config("--error-logfile", str(path), "--log-syslog"))
    assert "[WARNING] syslog (--log-syslog) from the command line is ignored" in \
        path.read_text()


def test_logconfig_dict_is_applied_after_the_defaults(tmp_path):
    path = tmp_path / "custom.log"
    conf = tmp_path / "c.py"
    conf.write_text(textwrap.dedent(f"""
        logconfig_dict = {{
            "formatters": {{"bare": {{"format": "custom %(levelname)s %(message)s"}}}},
            "handlers": {{"file": {{"class": "logging.FileHandler", "filename": {str(path)!r},
                                    "formatter": "bare"}}}},
            "loggers": {{"polycorn.error": {{"handlers": ["file"], "level": "ERROR"}}}},
        }}
    """))
    setup_logging(load_config(["-c", str(conf), "app:app"], {}))
    log = logging.getLogger(ERROR_LOGGER)
    log.warning("dropped")
    log.error("kept")
    assert path.read_text() == "custom ERROR kept\n"


# -- Gunicorn's logger names

def test_gunicorn_logger_names_are_ours_with_the_real_handlers(tmp_path):
    path = tmp_path / "error.log"
    setup_logging(config("--error-logfile", str(path), "--log-level", "debug"))
    gunicorn_error = logging.getLogger("gunicorn.error")
    assert gunicorn_error is logging.getLogger(ERROR_LOGGER)
    assert logging.getLogger("gunicorn.access") is logging.getLogger(ACCESS_LOGGER)
    # The Flask recipe: app.logger.handlers = getLogger("gunicorn.error").handlers
    assert [h.baseFilename for h in gunicorn_error.handlers] == [str(path)]
    assert gunicorn_error.level == logging.DEBUG
    app_logger = logging.getLogger("flask.app.recipe")
    app_logger.handlers = gunicorn_error.handlers
    app_logger.propagate = False
    app_logger.setLevel(gunicorn_error.level)
    try:
        app_logger.debug("from the app")
    finally:  # the list is shared with our logger's: let go of it
        app_logger.handlers, app_logger.propagate = [], True
    assert path.read_text().endswith("[DEBUG] from the app\n")
    # a child of the Gunicorn name reaches our handlers too
    logging.getLogger("gunicorn.error.plugin").warning("from a child")
    assert path.read_text().endswith("[WARNING] from a child\n")


GUNICORN_STYLE_DICT = """
logconfig_dict = {{
    "version": 1,
    "disable_existing_loggers": {disable},
    "handlers": {{
        "err": {{"class": "logging.FileHandler", "filename": {err!r}, "formatter": "generic"}},
        "acc": {{"class": "logging.FileHandler", "filename": {acc!r}, "formatter": "bare"}},
    }},
    "formatters": {{
        "generic": {{"format": "G %(levelname)s %(message)s"}},
        "bare": {{"format": "A %(message)s"}},
    }},
    "loggers": {{
        "gunicorn.error": {{"level": "DEBUG", "handlers": ["err"], "propagate": False}},
        "gunicorn.access": {{"level": "INFO", "handlers": ["acc"], "propagate": False}},
    }},
}}
"""


@pytest.mark.parametrize("disable", [False, True])
def test_a_logconfig_dict_written_for_gunicorn_configures_our_loggers(tmp_path, disable):
    err, acc = tmp_path / "err.log", tmp_path / "acc.log"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(GUNICORN_STYLE_DICT.format(disable=disable, err=str(err), acc=str(acc)))
    setup_logging(load_config(["-c", str(conf), "app:app"], {}))
    logging.getLogger(ERROR_LOGGER).debug("debug line")
    logging.getLogger(ERROR_LOGGER).getChild("cluster").info("agent line")
    logging.getLogger(ACCESS_LOGGER).info("GET / 200")
    assert err.read_text() == "G DEBUG debug line\nG INFO agent line\n"
    assert acc.read_text() == "A GET / 200\n"


def test_a_gunicorn_dict_may_use_gunicorns_default_handlers_and_formatter(tmp_path, capsys):
    conf = tmp_path / "c.py"
    conf.write_text('logconfig_dict = {"loggers": {"gunicorn.error": '
                    '{"level": "WARNING", "handlers": ["error_console"]}}}\n')
    setup_logging(load_config(["-c", str(conf), "app:app"], {}))
    logging.getLogger("gunicorn.error").info("hidden")
    logging.getLogger("gunicorn.error").warning("through error_console")
    assert re.fullmatch(LINE_PREFIX + r"\[WARNING\] through error_console\n",
                        capsys.readouterr().err)


def test_a_gunicorn_logconfig_file_configures_our_loggers(tmp_path):
    err = tmp_path / "err.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(textwrap.dedent(f"""
        [loggers]
        keys=root, gunicorn.error

        [handlers]
        keys=err

        [formatters]
        keys=plain

        [logger_root]
        level=INFO
        handlers=

        [logger_gunicorn.error]
        level=INFO
        handlers=err
        propagate=0
        qualname=gunicorn.error

        [handler_err]
        class=logging.FileHandler
        formatter=plain
        args=({str(err)!r},)

        [formatter_plain]
        format=INI %(message)s
    """))
    setup_logging(config("--log-config", str(ini)))
    logging.getLogger(ERROR_LOGGER).info("via fileConfig")
    assert err.read_text() == "INI via fileConfig\n"


def test_bad_logconfig_dict_is_a_config_error(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("logconfig_dict = {'handlers': {'h': {'class': 'no.such.Handler'}}}\n")
    with pytest.raises(ConfigError, match="^logging configuration: ValueError"):
        setup_logging(load_config(["-c", str(conf), "app:app"], {}))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_log_files_are_given_to_the_worker_user(tmp_path):
    path = tmp_path / "error.log"
    setup_logging(config("--error-logfile", str(path), "-u", "65534", "-g", "65534"))
    assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)


# -- reopen (USR1)

def test_reopen_after_rotation_writes_to_the_new_file_once(tmp_path):
    error_path, access_path = tmp_path / "error.log", tmp_path / "access.log"
    setup_logging(config("--error-logfile", str(error_path), "--access-logfile",
                         str(access_path)))
    error_log = logging.getLogger(ERROR_LOGGER)
    handlers = list(error_log.handlers) + list(logging.getLogger(ACCESS_LOGGER).handlers)
    error_log.warning("before")
    os.rename(error_path, tmp_path / "error.log.1")
    os.rename(access_path, tmp_path / "access.log.1")
    reopen()
    error_log.warning("after")
    logging.getLogger(ACCESS_LOGGER).info("access after")
    assert "before" in (tmp_path / "error.log.1").read_text()
    assert "after" not in (tmp_path / "error.log.1").read_text()
    assert error_path.read_text().count("after") == 1 and "before" not in error_path.read_text()
    assert access_path.read_text() == "access after\n"
    assert list(error_log.handlers) + list(logging.getLogger(ACCESS_LOGGER).handlers) == handlers


def test_reopen_with_stream_handlers_only_is_harmless(capsys):
    setup_logging(config())
    reopen()
    logging.getLogger(ERROR_LOGGER).warning("still here")
    assert "still here" in capsys.readouterr().err


def test_capture_output_sends_stdio_to_the_error_log_and_follows_reopen(tmp_path):
    # dup2 on fds 1 and 2 must not touch the test runner's own: run it in a child.
    script = textwrap.dedent(f"""
        import os, sys
        from polycorn.server.config.loader import load_config
        from polycorn.server.logs import setup_logging, reopen
        cfg = load_config(["--capture-output", "--error-logfile", {str(tmp_path / "e.log")!r},
                           "app:app"], {{}})
        setup_logging(cfg)
        print("printed", flush=True)
        os.write(2, b"raw fd 2\\n")
        os.rename({str(tmp_path / "e.log")!r}, {str(tmp_path / "e.log.1")!r})
        reopen()
        print("after rotation", flush=True)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert (tmp_path / "e.log.1").read_text() == "printed\nraw fd 2\n"
    assert (tmp_path / "e.log").read_text() == "after rotation\n"


# -- access log atoms

ENVIRON = {
    "REMOTE_ADDR": "192.0.2.7",
    "REQUEST_METHOD": "GET",
    "RAW_URI": "/shop/items?id=5",
    "PATH_INFO": "/shop/items",
    "QUERY_STRING": "id=5",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_REFERER": "http://example.test/",
    "HTTP_USER_AGENT": "curl/8.0",
    "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"alice:secret").decode(),
    "HTTP_X_FORWARDED_FOR": "203.0.113.9",
    "CONTENT_TYPE": "text/plain",
    "wsgi.url_scheme": "http",
}
HEADERS = [("Content-Type", "text/html"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def access_line(fmt: str | None, environ=ENVIRON, status="200 OK", headers=HEADERS,
                length: int | None = 1234, request_time: float = 1.2345678) -> str:
    args = ["--access-logfile", "-"] + (["--access-logformat", fmt] if fmt else [])
    logger = AccessLogger(config(*args))
    return logger.format % logger.atoms(environ, status, headers, length, request_time)


def test_default_format_is_apache_combined():
    line = access_line(None)
    match = re.fullmatch(r'192\.0\.2\.7 - alice (?P<t>' + CLF_TIME + r') "GET /shop/items\?id=5 '
                         r'HTTP/1\.1" 200 1234 "http://example\.test/" "curl/8\.0"', line)
    assert match, line


@pytest.mark.parametrize("atom, expected", [
    ("h", "192.0.2.7"), ("l", "-"), ("u", "alice"), ("r", "GET /shop/items?id=5 HTTP/1.1"),
    ("s", "200"), ("m", "GET"), ("U", "/shop/items"), ("q", "id=5"), ("H", "HTTP/1.1"),
    ("B", "1234"), ("b", "1234"), ("f", "http://example.test/"), ("a", "curl/8.0"),
    ("T", "1"), ("M", "1234"), ("D", "1234567"), ("L", "1.234568"),
    ("{x-forwarded-for}i", "203.0.113.9"), ("{X-Forwarded-For}i", "203.0.113.9"),
    ("{content-type}i", "text/plain"), ("{accept}i", "-"),
    ("{content-type}o", "text/html"), ("{set-cookie}o", "a=1, b=2"), ("{etag}o", "-"),
    ("{remote_addr}e", "192.0.2.7"), ("{wsgi.url_scheme}e", "http"), ("{nothing}e", "-"),
    ("nosuchatom", "-"),
])
def test_each_atom(atom, expected):
    assert access_line(f"%({atom})s") == expected


def test_pid_atom():
    # not in the table above: a pid in a test id differs between xdist workers
    assert access_line("%(p)s") == f"<{os.getpid()}>"


def test_time_atom_is_common_log_format():
    assert re.fullmatch(CLF_TIME, access_line("%(t)s"))


def test_numeric_atoms_format_as_numbers():
    assert access_line("%(T)d %(D)d %(B)d", request_time=2.5, length=10) == "2 2500000 10"


def test_missing_values_and_no_body():
    line = access_line("%(h)s|%(u)s|%(f)s|%(a)s|%(b)s|%(B)s|%(q)s", environ={}, length=None)
    assert line == "-|-|-|-|-|0|"


def test_bad_basic_auth_is_no_user():
    assert access_line("%(u)s", environ={"HTTP_AUTHORIZATION": "Basic !!!"}) == "-"
    assert access_line("%(u)s", environ={"HTTP_AUTHORIZATION": "Bearer abc"}) == "-"


def test_values_are_escaped_so_no_line_or_field_can_be_forged():
    environ = dict(ENVIRON, HTTP_USER_AGENT='evil"agent\n127.0.0.1 - - fake\x1b[31m\\')
    line = access_line('"%(a)s"', environ=environ)
    assert line == '"evil\\"agent\\x0a127.0.0.1 - - fake\\x1b[31m\\\\"'
    assert "\n" not in line


def test_log_writes_one_line_to_the_access_logger(tmp_path):
    path = tmp_path / "access.log"
    setup_logging(config("--access-logfile", str(path), "--access-logformat", "%(s)s %(U)s 100%%"))
    AccessLogger(config("--access-logfile", str(path), "--access-logformat",
                        "%(s)s %(U)s 100%%")).log(ENVIRON, "404 Not Found", [], 0, 0.01)
    assert path.read_text() == "404 /shop/items 100%\n"


class Untouchable(dict):
    """An environ that fails the test if anything reads it."""

    def __getitem__(self, key):
        raise AssertionError("environ was read")

    get = __getitem__
    __contains__ = __getitem__

    def items(self):
        raise AssertionError("environ was read")


def test_disabled_access_log_does_no_work():
    logger = AccessLogger(config())
    assert logger.enabled is False
    logger.log(Untouchable(), "200 OK", [], 1, 0.1)  # returns before looking at anything


def test_only_the_atoms_in_the_format_are_computed():
    logger = AccessLogger(config("--access-logfile", "-", "--access-logformat", "%(s)s %(T)s"))
    assert logger.atoms(Untouchable(), "201 Created", [], None, 3.0) == {"s": "201", "T": 3}


def test_a_failing_atom_never_fails_the_request(capsys):
    setup_logging(config())
    logger = AccessLogger(config("--access-logfile", "-", "--access-logformat", "%(h)s"))
    logger.log(Untouchable(), "200 OK", [], 1, 0.1)
    assert "access log failed" in capsys.readouterr().err
