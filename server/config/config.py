"""Config: the loaded, validated value of every setting, with attribute access.

Built by loader.load_config; besides the raw settings it answers the few questions
that combine several of them (the worker that really runs, the worker ceiling) so
that every part computes them the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from polycorn.server.config.errors import ConfigError
from polycorn.server.config.hooks import HOOK_PARAMS, is_default_hook
from polycorn.server.config.setting import Setting
from polycorn.server.config.validators import FOREIGN_ASGI_ALIASES


def describe(setting: Setting) -> str:
    """A setting's name with its flags, as error messages show it: workers (-w/--workers)."""
    if setting.flags:
        return f"{setting.name} ({'/'.join(setting.flags)})"
    return setting.name


def validate_value(setting: Setting, value: Any, source: str) -> Any:
    """Run the setting's validator; a failure becomes a one-line ConfigError naming both."""
    try:
        return setting.validate(value)
    except ValueError as exc:
        raise ConfigError(f"invalid value for {describe(setting)} from {source}: {exc}") from None


class Config:
    """Every setting as an attribute (cfg.workers); values are validated when set."""

    def __init__(self, settings: Sequence[Setting], values: Mapping[str, Any],
                 sources: Mapping[str, str], *, argv: Sequence[str] = (),
                 warnings: Sequence[str] = (), typos: Sequence[str] = ()) -> None:
        object.__setattr__(self, "_settings", {s.name: s for s in settings})
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_sources", dict(sources))
        object.__setattr__(self, "argv", list(argv))  # the original arguments, for a re-exec
        object.__setattr__(self, "warnings", list(warnings))  # logged once logging is set up
        # Config-file names that look misspelt (also in warnings): --check-config exits 2.
        object.__setattr__(self, "typos", list(typos))

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails, i.e. for setting names.
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting named {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._settings:
            raise AttributeError(f"use cfg.set({name!r}, value): settings are validated")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"<Config app={self.wsgi_app!r} workers={self.workers!r}>"

    def set(self, name: str, value: Any, source: str = "code") -> None:
        """Validate and change one setting (for hooks and embedding code)."""
        setting = self._settings.get(name)
        if setting is None:
            raise ConfigError(f"no setting named {name!r}")
        self._values[name] = validate_value(setting, value, source)
        self._sources[name] = source

    def settings(self) -> Iterator[tuple[Setting, Any]]:
        """Every setting with its value, in table order (for --print-config)."""
        for name, setting in self._settings.items():
            yield setting, self._values[name]

    def source(self, name: str) -> str:
        """Where a value came from: "the default", "config file ...", "the command line"..."""
        return self._sources[name]

    def has_hook(self, name: str) -> bool:
        """True when the hook was configured, so hot paths can skip the default no-op."""
        if name not in HOOK_PARAMS:
            raise ConfigError(f"no server hook named {name!r}")
        return not is_default_hook(self._values[name])

    # -- values that combine settings

    @property
    def app_spec(self) -> str | None:
        """The application to load: the command line's APP_MODULE, else wsgi_app."""
        return self._values["wsgi_app"]

    @property
    def worker_class_resolved(self) -> str:
        """The worker that runs: sync with threads > 1 is the thread worker (as in Gunicorn)."""
        kind = self._values["worker_class"]
        if kind == "sync" and self._values["threads"] > 1:
            return "thread"
        if kind in FOREIGN_ASGI_ALIASES:
            return "asgi"
        return kind

    @property
    def max_workers_resolved(self) -> int:
        """The most workers this node may run: max_workers, or twice workers when 0."""
        return self._values["max_workers"] or 2 * self._values["workers"]

    @property
    def proc_name_resolved(self) -> str:
        """The process title base: proc_name, else the app spec, else "polycorn"."""
        return self._values["proc_name"] or self._values["wsgi_app"] or "polycorn"

    @property
    def env(self) -> dict[str, str]:
        """raw_env as a dict (KEY=VALUE entries; later entries win)."""
        pairs = (item.partition("=") for item in self._values["raw_env"])
        return {key.strip(): value for key, _, value in pairs}

    @property
    def pythonpath_list(self) -> list[str]:
        """pythonpath split on commas, empty entries dropped."""
        text = self._values["pythonpath"] or ""
        return [part.strip() for part in text.split(",") if part.strip()]
