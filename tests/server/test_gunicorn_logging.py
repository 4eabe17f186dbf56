"""Logging written for Gunicorn, through a running server: the Flask recipe that copies
getLogger("gunicorn.error").handlers, and a logconfig_dict naming gunicorn.error and
gunicorn.access, both reach Polycorn's real error and access logs."""

from __future__ import annotations

import textwrap

from support.http import get
from support.procs import wait_until

FLASK_RECIPE = '''
import logging

from flask import Flask

app = Flask(__name__)
if __name__ != "__main__":
    # The common recipe: run the app's log through Gunicorn's handlers and level.
    gunicorn_logger = logging.getLogger("gunicorn.error")
    app.logger.handlers = gunicorn_logger.handlers
    app.logger.setLevel(gunicorn_logger.level)


@app.get("/")
def index():
    app.logger.debug("flask debug line")
    app.logger.warning("flask warning line")
    return "ok"
'''


def test_the_flask_recipe_logs_through_the_error_log(polycorn, port, tmp_path):
    (tmp_path / "recipe.py").write_text(FLASK_RECIPE)
    errors = tmp_path / "error.log"
    polycorn("-b", f"127.0.0.1:{port}", "--error-logfile", str(errors), "--log-level", "debug",
             "recipe:app", wait_port=port, cwd=tmp_path)
    assert get(port, "/")[0] == 200
    wait_until(lambda: "flask warning line" in errors.read_text(), 5, what="the app's line")
    text = errors.read_text()
    assert "[DEBUG] flask debug line" in text  # the level came from gunicorn.error too
    assert "[WARNING] flask warning line" in text


def test_a_gunicorn_logconfig_dict_routes_the_error_and_access_logs(polycorn, port, tmp_path):
    errors, access = tmp_path / "err.log", tmp_path / "access.log"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(textwrap.dedent(f"""
        import logging.handlers  # config files hold imports and helpers: no warning for them

        LOG_DIR = {str(tmp_path)!r}
        logconfig_dict = {{
            "version": 1,
            "disable_existing_loggers": True,
            "formatters": {{"plain": {{"format": "%(levelname)s %(message)s"}}}},
            "handlers": {{
                "error_file": {{"class": "logging.FileHandler", "formatter": "plain",
                               "filename": LOG_DIR + "/err.log"}},
                "access_file": {{"class": "logging.FileHandler", "formatter": "plain",
                                "filename": LOG_DIR + "/access.log"}},
            }},
            "loggers": {{
                "gunicorn.error": {{"level": "INFO", "handlers": ["error_file"],
                                   "propagate": False}},
                "gunicorn.access": {{"level": "INFO", "handlers": ["access_file"],
                                    "propagate": False}},
            }},
        }}
    """))
    polycorn("-c", str(conf), "-b", f"127.0.0.1:{port}", "hello:application", wait_port=port)
    assert get(port, "/logged")[0] == 200
    wait_until(lambda: access.exists() and "/logged" in access.read_text(), 5,
               what="the access line")
    assert access.read_text().startswith('INFO 127.0.0.1 - - [')
    assert "INFO Booting worker with pid" in errors.read_text()
    assert "is not a setting" not in errors.read_text()
