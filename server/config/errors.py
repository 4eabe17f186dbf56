"""The error types of configuration: a bad value, a bad combination, a bad file
(ConfigError), and a command line that is not understood (UsageError).

The message is a single line meant for the operator; `exit_status` is the code the
command line exits with: 1 as Gunicorn's "Error: ...", 2 as argparse's usage errors.
"""

from __future__ import annotations

from polycorn.server import exitcodes


class ConfigError(Exception):
    """The configuration cannot be used; str(exc) is a one-line reason."""

    exit_status = exitcodes.ERROR

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.details = details  # e.g. the formatted traceback of a failing config file


class UsageError(ConfigError):
    """The command line is not understood: an unknown option, a missing argument or
    application, a likely misspelt setting name."""

    exit_status = exitcodes.USAGE
