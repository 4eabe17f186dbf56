"""The settings that shape the master process itself, and the environment it hands on.

`-e/--env KEY=VALUE` is applied to os.environ, as in Gunicorn. A master started by
this one (a USR2 successor, a restarted peer) must start from the environment as it
was before that: else a KEY dropped from the new release's configuration would live
on in every later generation, set by an old one.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

# What -e/--env replaced: KEY -> the value before (None: it was unset).
_replaced: dict[str, str | None] = {}


def apply_process_settings(cfg: Any) -> str | None:
    """raw_env, chdir and pythonpath (Gunicorn's order); the chdir error, if any.

    The umask is not set here: like Gunicorn, --umask shapes only the Unix socket
    files we bind (see `umask`); the master keeps the umask it was started with,
    so its pid, status and log files are not world-writable under the default 0.
    """
    for key, value in cfg.env.items():
        _replaced.setdefault(key, os.environ.get(key))
        os.environ[key] = value
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as exc:
            return f"cannot change directory to {cfg.chdir}: {exc.strerror}"
    # The app is imported from the working directory, as Gunicorn does.
    for path in reversed([os.getcwd(), *cfg.pythonpath_list]):
        if path not in sys.path:
            sys.path.insert(0, path)
    return None


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block under `mask` (--umask: Unix socket files), then restore the old one."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def successor_environ() -> dict[str, str]:
    """os.environ without what -e/--env set: the environment a new master starts from."""
    env = dict(os.environ)
    for key, before in _replaced.items():
        if before is None:
            env.pop(key, None)
        else:
            env[key] = before
    return env
