"""Load the WSGI application named by an app spec, the way Gunicorn reads one.

Spec forms: MODULE (means MODULE:application, as in Gunicorn), MODULE:NAME,
MODULE:NAME.attr, MODULE:factory() and MODULE:factory('a', k=1) with literal
arguments only (parsed with ast, never evaluated). Every failure is an
AppImportError with a one-line message; the traceback is kept on it for debug logs,
and its exit status is Gunicorn's: 3 when the module (or the factory) raised, 4 when
the module gave no application.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import traceback
from collections.abc import Callable
from typing import Any

from polycorn.server.exitcodes import APP_LOAD_ERROR, WORKER_BOOT_ERROR

DEFAULT_NAME = "application"
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class AppImportError(Exception):
    """The application could not be loaded; str(exc) is one line, exc.traceback the detail,
    exc.exit_status WORKER_BOOT_ERROR (the app's code raised) or APP_LOAD_ERROR."""

    def __init__(self, message: str, *, traceback: str = "",
                 exit_status: int = APP_LOAD_ERROR) -> None:
        super().__init__(message)
        self.traceback = traceback
        self.exit_status = exit_status


def _with_traceback(message: str, exc: BaseException,
                    exit_status: int = WORKER_BOOT_ERROR) -> AppImportError:
    return AppImportError(message, traceback="".join(traceback.format_exception(exc)),
                          exit_status=exit_status)


def parse_spec(spec: str) -> tuple[str, list[str], tuple[list[Any], dict[str, Any]] | None]:
    """Split a spec into (module, attribute path, factory arguments or None)."""
    module, sep, expression = spec.strip().partition(":")
    if not sep:
        expression = DEFAULT_NAME
    if not _MODULE_NAME.fullmatch(module):
        # Gunicorn tries to import it, and fails to boot (3).
        raise AppImportError(f"{module!r} is not a module name{_file_hint(module, expression)}",
                             exit_status=WORKER_BOOT_ERROR)
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        raise AppImportError(
            f"failed to parse {expression!r} as an attribute name or function call"
        ) from None
    call = None
    if isinstance(node, ast.Call):
        try:
            args = [ast.literal_eval(arg) for arg in node.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        except ValueError:
            raise AppImportError(
                f"failed to parse arguments as literal values: {expression!r}"
            ) from None
        if None in kwargs:  # **mapping
            raise AppImportError(f"failed to parse arguments as literal values: {expression!r}")
        call = (args, kwargs)
        node = node.func
    path = _attribute_path(node)
    if path is None:
        raise AppImportError(
            f"failed to parse {expression!r} as an attribute name or function call"
        )
    return module, path, call


def _file_hint(module: str, expression: str) -> str:
    """A file path given where a module name belongs: suggest the module spelling."""
    if not module.endswith(".py"):
        return ""
    return f" (did you mean '{module[:-3].replace(os.sep, '.')}:{expression}'?)"


def _attribute_path(node: ast.expr) -> list[str] | None:
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    names.append(node.id)
    return names[::-1]


def _import(module: str, expression: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Not found only if the missing module is the one named (or a package above it);
        # a missing dependency imported by the app is an error inside the app.
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            hint = _file_hint(module, expression)
            raise _with_traceback(f"module {module!r} not found{hint}", exc) from None
        raise _with_traceback(
            f"error while importing {module!r}: {type(exc).__name__}: {exc}", exc) from None
    except Exception as exc:
        raise _with_traceback(
            f"error while importing {module!r}: {type(exc).__name__}: {exc}", exc) from None


def _call_factory(factory: Callable, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    try:
        inspect.signature(factory).bind(*args, **kwargs)
    except TypeError as exc:
        raise AppImportError(f"factory {name!r} called with the wrong arguments: {exc}") from None
    except ValueError:
        pass  # no signature to check (a builtin): let the call say
    try:
        return factory(*args, **kwargs)
    except Exception as exc:
        raise _with_traceback(
            f"factory {name!r} failed: {type(exc).__name__}: {exc}", exc) from None


def load_app(spec: str) -> Callable:
    """Import the module and return the WSGI callable; raises AppImportError."""
    module_name, path, call = parse_spec(spec)
    obj: Any = _import(module_name, spec.partition(":")[2].strip() or DEFAULT_NAME)
    for depth, attr in enumerate(path):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            where = module_name if depth == 0 else f"{module_name}:{'.'.join(path[:depth])}"
            hint = ""
            if depth == 0 and call is None and attr == DEFAULT_NAME and hasattr(obj, "app"):
                hint = f" (it has 'app': use {module_name}:app)"
            raise _with_traceback(f"failed to find attribute {attr!r} in {where!r}{hint}",
                                  exc, APP_LOAD_ERROR) from None
    name = ".".join(path)
    if call is not None:
        if not callable(obj):
            raise AppImportError(f"factory {name!r} in {module_name!r} is not callable")
        obj = _call_factory(obj, name, *call)
        if obj is None:
            raise AppImportError(f"factory {name!r} returned None, not an application")
    if not callable(obj):
        raise AppImportError(
            f"application object {module_name}:{name} is not callable "
            f"(a {type(obj).__name__})"
        )
    return obj
