"""Process titles for people, the Gunicorn way: `polycorn: master [NAME]`.

Roles are master, worker and, for a sidecar, its title (the cluster agent's is
"agent"); NAME is -n/--name (Gunicorn's proc_name), else the application spec.
Titles need `setproctitle` (the `proctitle` extra); without it nothing changes.

A title rewrites /proc/PID/cmdline (and the memory that held the environment,
so /proc/PID/environ is no longer the environment either), so no tool may find a
master by its arguments: signals go by pid file and stamp (identity.py), and
people and test harnesses find processes by title (`parse`, `is_named`). A new
master (USR2, a restarted peer) re-executes sys.orig_argv, Python's own copy of
the command line, never the title.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable

PREFIX = "polycorn: "
MODULE = "polycorn.server.main"
_TITLE = re.compile(r"polycorn: (\S+) \[(.*)\]\Z", re.S)
_NAME_OPTIONS = ("-n", "--name")

_setproctitle: Callable[[str], None] | None = None
_prepared = False


def prepare() -> None:
    """Call first thing in the server, before anything changes os.environ (LISTEN_FDS
    and our own variables are removed later): setproctitle takes over the memory of
    the environment block on first use (Gunicorn does the same, its issue 3430). Only
    the server does: a tool that merely reads titles (parse, name_of) imports this
    module without touching its own process."""
    global _setproctitle, _prepared
    if _prepared:
        return
    _prepared = True
    try:
        from setproctitle import getproctitle, setproctitle
    except ImportError:  # the extra is not installed: titles stay as the kernel set them
        return
    getproctitle()
    _setproctitle = setproctitle


def available() -> bool:
    """Is setproctitle installed (so the server sets titles)? Without initialising it."""
    return importlib.util.find_spec("setproctitle") is not None


def title(role: str, name: str) -> str:
    return f"{PREFIX}{role} [{name}]"


def set_title(role: str, name: str) -> None:
    prepare()
    if _setproctitle is not None:
        _setproctitle(title(role, name))


def parse(cmdline: bytes) -> tuple[str, str] | None:
    """(role, name) of a /proc/PID/cmdline that holds a polycorn title; else None."""
    text = cmdline.split(b"\0", 1)[0].decode(errors="replace")
    match = _TITLE.match(text)
    return (match.group(1), match.group(2)) if match else None


def name_of(cmdline: bytes) -> str | None:
    """The proc name of a polycorn process from its /proc/PID/cmdline: its title's, or,
    before it has one (just executed, or setproctitle missing), the -n/--name among the
    arguments of a `polycorn` or `python -m polycorn.server.main` command (whole
    arguments, never a substring). None for any other process."""
    parsed = parse(cmdline)
    if parsed is not None:
        return parsed[1]
    args = [a.decode(errors="replace") for a in cmdline.split(b"\0")]
    runs_polycorn = (os.path.basename(args[0]) == "polycorn" or args[1:3] == ["-m", MODULE]
                     or (len(args) > 1 and os.path.basename(args[1]) == "polycorn"))
    if not runs_polycorn:
        return None
    for i, arg in enumerate(args):
        if arg in _NAME_OPTIONS and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--name="):
            return arg.split("=", 1)[1]
        if arg.startswith("-n") and len(arg) > 2:  # -nNAME
            return arg[2:]
    return None


def is_named(cmdline: bytes, name: str) -> bool:
    return name_of(cmdline) == name
