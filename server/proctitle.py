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

import re
from collections.abc import Callable

PREFIX = "polycorn: "
_TITLE = re.compile(r"polycorn: (\S+) \[(.*)\]\Z", re.S)
_NAME_OPTIONS = ("-n", "--name")

_setproctitle: Callable[[str], None] | None
try:
    from setproctitle import getproctitle, setproctitle
    # Initialise now, at import, before anything changes os.environ (LISTEN_FDS and
    # our own variables are removed later): setproctitle takes over the memory of
    # the environment block on first use (as Gunicorn does, its issue 3430).
    getproctitle()
    _setproctitle = setproctitle
except ImportError:  # the extra is not installed: titles stay as the kernel set them
    _setproctitle = None


def available() -> bool:
    return _setproctitle is not None


def title(role: str, name: str) -> str:
    return f"{PREFIX}{role} [{name}]"


def set_title(role: str, name: str) -> None:
    if _setproctitle is not None:
        _setproctitle(title(role, name))


def parse(cmdline: bytes) -> tuple[str, str] | None:
    """(role, name) of a /proc/PID/cmdline that holds a polycorn title; else None."""
    text = cmdline.split(b"\0", 1)[0].decode(errors="replace")
    match = _TITLE.match(text)
    return (match.group(1), match.group(2)) if match else None


def is_named(cmdline: bytes, name: str) -> bool:
    """Is this polycorn process NAME: by its title, or, before it has one (just
    executed, or setproctitle missing), by `-n NAME` / `--name NAME` / `--name=NAME`
    among its arguments (exact arguments, never a substring)."""
    parsed = parse(cmdline)
    if parsed is not None:
        return parsed[1] == name
    args = [a.decode(errors="replace") for a in cmdline.split(b"\0")]
    return f"--name={name}" in args or f"-n{name}" in args or any(
        a in _NAME_OPTIONS and b == name for a, b in zip(args, args[1:], strict=False))
