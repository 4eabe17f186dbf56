"""load_config: the settings table, plug-in settings, config file, POLYCORN_CMD_ARGS and
argv, layered by precedence default < file < environment < command line.

Like Gunicorn, the config file is plain Python whose module globals named like
settings are taken; other globals are the file's own helpers and are ignored (a
near-miss of a setting name earns a warning). Nothing here changes the process:
applying chdir, pythonpath and raw_env is process.apply_process_settings's job.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import os
import runpy
import shlex
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from polycorn.server.config.cli import CommandLine, build_parser, parse_command_line
from polycorn.server.config.compat import IGNORED, SILENT
from polycorn.server.config.config import Config, describe, validate_value
from polycorn.server.config.errors import ConfigError, UsageError
from polycorn.server.config.setting import Setting
from polycorn.server.config.settings import (
    CONFIG_FILE_NAMES,
    SETTINGS,
    EnvironDefault,
    logical_cwd,
)

ENV_ARGS = ("POLYCORN_CMD_ARGS", "GUNICORN_CMD_ARGS")  # the first one set is used
COMMAND_LINE = "the command line"


def all_settings(plugins: Sequence[Any] = ()) -> list[Setting]:
    """The core table plus every plug-in's settings; a name defined twice is an error."""
    merged = list(SETTINGS)
    seen = {s.name for s in merged}
    for plugin in plugins:
        for setting in plugin.settings:
            if setting.name in seen:
                raise ConfigError(
                    f"plug-in {getattr(plugin, 'name', plugin)!r} redefines setting "
                    f"{setting.name!r}"
                )
            seen.add(setting.name)
            merged.append(setting)
    return merged


def load_config(argv: Sequence[str], environ: Mapping[str, str] = os.environ,
                plugins: Sequence[Any] = ()) -> Config:
    """Build the Config for this command line; raises ConfigError with a one-line reason."""
    settings = all_settings(plugins)
    by_name = {s.name: s for s in settings}
    parser = build_parser(settings)
    command_line = parse_command_line(parser, argv)
    env_name, env_line = _environment_command_line(parser, environ)

    location = (command_line.values.get("config") or env_line.values.get("config")
                or default_config_file(environ))
    typos: list[str] = []
    file_values: dict[str, Any] = {}
    file_source = ""
    if location:
        file_source = f"config file {location}"
        file_values = _settings_from_namespace(read_config_file(location, environ), by_name,
                                               file_source, typos)
        file_values["config"] = location

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in settings:
        values[setting.name], sources[setting.name] = _default(setting, environ)
    layers = (
        (file_source, file_values, None),
        (f"${env_name}", env_line.values, env_line.app_spec),
        (COMMAND_LINE, command_line.values, command_line.app_spec),
    )
    for source, given, app_spec in layers:
        if app_spec is not None:
            given = {**given, "wsgi_app": app_spec}
        for name, raw in given.items():
            values[name] = validate_value(by_name[name], raw, source)
            sources[name] = source

    _check_combinations(values)
    warnings = typos + _ignored_setting_warnings(settings, values, sources)
    return Config(settings, values, sources, argv=argv, warnings=warnings, typos=typos)


def default_config_file(environ: Mapping[str, str]) -> str | None:
    """./polycorn.conf.py, else ./gunicorn.conf.py (so a Gunicorn deployment works as is)."""
    for name in CONFIG_FILE_NAMES:
        path = os.path.join(logical_cwd(environ), name)
        if os.path.isfile(path):
            return path
    return None


def read_config_file(location: str, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Run a config file (PATH, file:PATH) or import python:MODULE; return its globals."""
    if location.startswith("python:"):
        module_name = location.removeprefix("python:")
        # The module is looked up from the current directory, as the app will be.
        cwd = logical_cwd(environ)
        added = cwd not in sys.path
        if added:
            sys.path.insert(0, cwd)
        try:
            return dict(vars(importlib.import_module(module_name)))
        except Exception as exc:
            raise _file_error(location, exc) from None
        finally:
            if added:
                sys.path.remove(cwd)
    path = location.removeprefix("file:")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found")
    try:
        return runpy.run_path(path, run_name="__config__")
    except Exception as exc:
        raise _file_error(location, exc) from None


def _file_error(location: str, exc: Exception) -> ConfigError:
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.lineno:
        where = f" (line {exc.lineno})"
    elif frames:
        where = f" (line {frames[-1].lineno})"
    details = "".join(traceback.format_exception(exc))
    return ConfigError(f"config file {location}: {type(exc).__name__}: {exc}{where}",
                       details=details)


def _environment_command_line(parser: Any, environ: Mapping[str, str]
                              ) -> tuple[str, CommandLine]:
    for name in ENV_ARGS:
        text = environ.get(name)
        if text is None:
            continue
        try:
            return name, parse_command_line(parser, shlex.split(text))
        except ValueError as exc:  # shlex: unbalanced quotes
            raise UsageError(f"${name}: {exc}") from None
        except ConfigError as exc:
            raise type(exc)(f"${name}: {exc}") from None
    return ENV_ARGS[0], CommandLine()


def _settings_from_namespace(namespace: Mapping[str, Any], by_name: Mapping[str, Setting],
                             source: str, typos: list[str]) -> dict[str, Any]:
    """The config file's globals that name settings; near-misses of a setting's name are
    likely typos (`worker`, `header_mapp`), the rest are the file's own helpers.

    Every Gunicorn 27 setting is in the table (supported, ignored or refused), so a
    name that is neither a setting nor close to one is never a Gunicorn setting lost.
    """
    found: dict[str, Any] = {}
    for name, value in namespace.items():
        if name in by_name:
            found[name] = value
            continue
        if name.startswith("_") or inspect.ismodule(value) or inspect.isclass(value):
            continue
        close = difflib.get_close_matches(name, by_name, n=1, cutoff=0.85)
        if close:
            typos.append(f"{source}: {name!r} is not a setting (did you mean "
                         f"{close[0]!r}?); ignored")
    return found


def _default(setting: Setting, environ: Mapping[str, str]) -> tuple[Any, str]:
    default = setting.default
    if isinstance(default, EnvironDefault):
        source = f"the default ({default.describe})"
        return validate_value(setting, default.compute(environ), source), source
    # copied so that no Config ever shares a mutable default with the table
    return validate_value(setting, copy.copy(default), "the default"), "the default"


def _check_combinations(values: Mapping[str, Any]) -> None:
    if values["max_workers"] and values["max_workers"] < values["workers"]:
        raise ConfigError(f"max_workers ({values['max_workers']}) is below workers "
                          f"({values['workers']}); use 0 for twice workers")
    if values["keyfile"] and not values["certfile"]:
        raise ConfigError(f"keyfile ({values['keyfile']}) is set but certfile is not")
    timeout, handshake = values["timeout"], values["ssl_handshake_timeout"]
    if values["certfile"] and timeout and handshake >= timeout:
        # The handshake is a wait on the client: past --timeout the master would kill a
        # sync worker that is only waiting on a stalled handshake.
        raise ConfigError(f"ssl_handshake_timeout ({handshake}s) must be below timeout "
                          f"({timeout}s): lower --ssl-handshake-timeout")
    if not values["wsgi_app"] and not values["upgrade"]:
        raise UsageError("no application module specified (give APP_MODULE, e.g. "
                          "myproject.wsgi:application, or wsgi_app in the config file)")


def _ignored_setting_warnings(settings: Sequence[Setting], values: Mapping[str, Any],
                              sources: Mapping[str, str]) -> list[str]:
    notes = []
    for setting in settings:
        if setting.section != IGNORED or setting.name in SILENT:
            continue
        if values[setting.name] != setting.default:
            reason = setting.help.removeprefix("Ignored by Polycorn: ").rstrip(".")
            notes.append(f"{describe(setting)} from {sources[setting.name]} is ignored: "
                         f"{reason}")
    return notes
