"""Server hooks: file-only settings with Gunicorn's names and parameters.

Each default is a shared no-op, so `Config.has_hook(name)` can tell a configured hook
from the default by identity and hot paths (pre_request, post_request) skip the call.
"""

from __future__ import annotations

from typing import Any

from polycorn.server.config import validators as v
from polycorn.server.config.setting import Setting


def _noop(*args: Any) -> None:
    """The default of every hook: does nothing."""


# name -> parameters, in Gunicorn's order and meaning
HOOK_PARAMS: dict[str, tuple[str, ...]] = {
    "on_starting": ("server",),
    "on_reload": ("server",),
    "when_ready": ("server",),
    "pre_fork": ("server", "worker"),
    "post_fork": ("server", "worker"),
    "post_worker_init": ("worker",),
    "worker_int": ("worker",),
    "worker_abort": ("worker",),
    "pre_exec": ("server",),
    "pre_request": ("worker", "req"),
    "post_request": ("worker", "req", "environ", "resp"),
    "child_exit": ("server", "worker"),
    "worker_exit": ("server", "worker"),
    "nworkers_changed": ("server", "new_value", "old_value"),
    "on_exit": ("server",),
}

_HELP = {
    "on_starting": "Called in the master just before it starts.",
    "on_reload": "Called in the master on a reload (HUP).",
    "when_ready": "Called in the master once the server is ready.",
    "pre_fork": "Called in the master just before a worker is forked.",
    "post_fork": "Called in a worker just after it is forked.",
    "post_worker_init": "Called in a worker after it has loaded the application.",
    "worker_int": "Called in a worker on INT or QUIT.",
    "worker_abort": "Called in a worker on ABRT (usually a timeout).",
    "pre_exec": "Called in the master just before a new master is exec'd.",
    "pre_request": "Called in a worker before it handles a request.",
    "post_request": "Called in a worker after it handled a request.",
    "child_exit": "Called in the master after a worker has exited.",
    "worker_exit": "Called in a worker just before it exits.",
    "nworkers_changed": "Called in the master when the number of workers changes.",
    "on_exit": "Called in the master just before it exits.",
}


def is_default_hook(value: Any) -> bool:
    return value is _noop


def _hook_setting(name: str, params: tuple[str, ...]) -> Setting:
    validate = v.post_request_hook if name == "post_request" else v.hook(*params)
    return Setting(
        name=name,
        flags=(),
        default=_noop,
        validate=validate,
        help=f"{_HELP[name]} def {name}({', '.join(params)})",
        section="server hooks",
    )


HOOK_SETTINGS: tuple[Setting, ...] = tuple(
    _hook_setting(name, params) for name, params in HOOK_PARAMS.items()
)
