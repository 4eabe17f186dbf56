"""The command line, built from the settings table: Gunicorn's flags, spelled the same.

Parsing only collects what was given (every option defaults to "not given"), so the
loader can layer the config file, POLYCORN_CMD_ARGS and argv by precedence. Usage
errors raise UsageError instead of exiting, so POLYCORN_CMD_ARGS errors say so.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from polycorn.server.config.errors import UsageError
from polycorn.server.config.setting import Setting

from polycorn import __version__

PROG = "polycorn"
USAGE = "%(prog)s [OPTIONS] [APP_MODULE]"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage and exit(2)
        raise UsageError(message)


@dataclass
class CommandLine:
    """What one command line (argv or POLYCORN_CMD_ARGS) said."""

    values: dict[str, Any] = field(default_factory=dict)  # setting name -> raw value given
    app_spec: str | None = None


def _help_text(setting: Setting) -> str:
    default = setting.default
    if setting.action in ("store_true", "store_false") or default in (None, [], {}):
        text = setting.help
    else:
        text = f"{setting.help} [{default}]"
    return text.replace("%", "%%")  # argparse %-formats help strings


def build_parser(settings: Sequence[Setting]) -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, usage=USAGE)
    parser.add_argument("-v", "--version", action="version",
                        version=f"{PROG} (version {__version__})",
                        help="show the version and exit")
    parser.add_argument("app_spec", nargs="?", metavar="APP_MODULE",
                        help="the WSGI application, MODULE[:VARIABLE] or MODULE:factory(...)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for setting in settings:
        if not setting.flags:
            continue  # file-only (hooks, dicts)
        group = groups.get(setting.section)
        if group is None:
            group = groups[setting.section] = parser.add_argument_group(setting.section)
        kwargs: dict[str, Any] = {"dest": setting.name, "default": None,
                                  "help": _help_text(setting)}
        if setting.action in ("store_true", "store_false", "append"):
            kwargs["action"] = setting.action
        if setting.metavar and setting.action not in ("store_true", "store_false"):
            kwargs["metavar"] = setting.metavar
        if setting.optional_value:
            kwargs.update(nargs="?", const=setting.const)
        group.add_argument(*setting.flags, **kwargs)
    return parser


def parse_command_line(parser: argparse.ArgumentParser, args: Sequence[str]) -> CommandLine:
    """Parse args; raises UsageError on a usage error. -h and -v print and exit."""
    namespace = parser.parse_args(list(args))
    given = {name: value for name, value in vars(namespace).items()
             if value is not None and name != "app_spec"}
    return CommandLine(values=given, app_spec=namespace.app_spec)
