"""One setting: its Gunicorn config-file name, command-line flags and validator.

The table of settings (settings.py) and every plug-in's settings use this one
shape, so the command line, the config file and POLYCORN_CMD_ARGS treat them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str  # Gunicorn's config-file name, e.g. "workers"
    flags: tuple[str, ...]  # command-line spellings, e.g. ("-w", "--workers"); () = file only
    default: Any
    validate: Callable[[Any], Any]  # converts a string or a value; raises ValueError(message)
    help: str
    action: str | None = None  # argparse action: None (store), "store_true", "append"
    section: str = "server"
    metavar: str | None = None
    # A flag whose value may be left out (argparse nargs="?"): given bare it means `const`
    # (Gunicorn's --proxy-protocol alone is "auto").
    optional_value: bool = False
    const: Any = None
