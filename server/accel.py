"""Which per-request path runs: the compiled accelerator (server/_accel.c) or pure Python.

The extension is optional: setuptools builds it when a compiler is present, and
without it (or with POLYCORN_NO_EXTENSIONS=1 in the environment) every request
takes the pure-Python path, which stays the reference: the compiled functions
accept a strict subset of their inputs and answer None for the rest, so every
verdict of the HTTP layer is given by Python code (docs/internals/accel.md).

The interface any worker can use (the event worker now, the ASGI one later):
``native`` is the module or None; ``split_head`` and ``build_environ`` are its
functions or None; ``describe()`` is the boot log's words.
POLYCORN_ACCEL_PATH names another build of the same module to load instead (the
sanitizer build of `make test-asan`).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from types import ModuleType
from typing import Any

MODULE = "polycorn.server._accel"


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get("POLYCORN_NO_EXTENSIONS", "") not in ("", "0"):
        return None, "POLYCORN_NO_EXTENSIONS is set"
    path = os.environ.get("POLYCORN_ACCEL_PATH")
    try:
        if path:
            loader = importlib.machinery.ExtensionFileLoader(MODULE, path)
            spec = importlib.util.spec_from_file_location(MODULE, path, loader=loader)
            if spec is None:
                return None, f"cannot load {path}"
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
            return module, f"compiled ({path})"
        from polycorn.server import _accel
    except ImportError as exc:
        return None, f"extension not built ({exc})"
    return _accel, "compiled"


native, _reason = _load()
split_head: Any = getattr(native, "split_head", None)
build_environ: Any = getattr(native, "build_environ", None)


def describe() -> str:
    """The per-request path in a few words, for the boot log."""
    if native is None:
        return f"pure Python: {_reason}"
    return f"{_reason} accelerator ({MODULE})"
