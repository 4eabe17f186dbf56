"""The one error type of configuration: a bad value, a bad combination, a bad file.

Its message is a single line meant for the operator; `exit_status` is the code the
command line exits with (2, as argparse does for usage errors).
"""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot be used; str(exc) is a one-line reason."""

    exit_status = 2

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.details = details  # e.g. the formatted traceback of a failing config file
