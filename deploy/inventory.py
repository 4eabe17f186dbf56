"""The deploy settings: one TOML file (`deploy.toml`, read with the standard library's
tomllib, so the deploy needs no YAML library) holding the hosts and how to reach
them, merged with the options given to a task. Every problem is collected and
reported at once, before any host is touched.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from polycorn.deploy.batches import BatchError, parse_percent, parse_serial

CONFIG_ENV = "POLYCORN_DEPLOY_CONFIG"
DEFAULT_CONFIG = "deploy.toml"
# Settings the deploy writes itself into each release's polycorn.conf.py (or on the
# service's command line): an operator sets them through the deploy's own keys.
RESERVED_SERVER_SETTINGS = {
    "wsgi_app": "app", "health_check": "health_path", "redis": "[cluster] redis",
    "cluster": "[cluster] name", "pidfile": "(the layout: shared/run)",
    "handoff": "(the layout: shared/run)", "masters": "masters",
    "daemon": "(chosen by setup: systemd or --daemon)", "chdir": "(the layout: current)",
}


STOP_MARGIN = 10.0  # seconds past the window and the drain before systemd may SIGKILL


class SettingsError(ValueError):
    """Bad deploy settings; the message lists every problem, one per line."""


@dataclass(frozen=True)
class HostEntry:
    """One host of the inventory: how to reach it and its own polycorn settings."""

    name: str  # what -H takes
    address: str  # what ssh connects to
    ssh_port: int
    user: str
    key: str | None
    server: Mapping[str, Any]  # polycorn settings: [server] merged with [hosts.NAME.server]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.user}@{self.address}:{self.ssh_port})"

    @property
    def upgrade_timeout(self) -> float:
        """polycorn's --upgrade-timeout for this host (its default is 60 s)."""
        return float(self.server.get("upgrade_timeout", 60))

    @property
    def stop_timeout(self) -> float:
        """Seconds a graceful stop (TERM) may take on this host: the deregistration window,
        the workers' drain, and a margin for the master's own shutdown (its agent's exit)."""
        return (float(self.server.get("deregister_delay", 1.0))
                + float(self.server.get("graceful_timeout", 30)) + STOP_MARGIN)

    def first_bind(self) -> str:
        bind = self.server.get("bind") or ["127.0.0.1:8000"]
        return bind[0] if isinstance(bind, list) else str(bind)


@dataclass(frozen=True)
class DeploySettings:
    source: Path
    service: str
    base: str
    app: str
    python: str
    wheels: tuple[str, ...]
    masters: int
    health_path: str | None
    redis: str | None
    cluster: str | None
    serial: str
    max_fail_percent: float
    keep_releases: int
    connect_timeout: float
    gate_timeout: float
    hosts: Mapping[str, HostEntry] = field(default_factory=dict)

    def with_options(self, **options: Any) -> DeploySettings:
        """The task's options over the file's values (None or "" = not given)."""
        given = {k: v for k, v in options.items() if v not in (None, "")}
        merged = replace(self, **given)
        problems = _check_numbers(merged)
        if problems:
            raise SettingsError("\n".join(problems))
        return merged

    def select(self, names: Sequence[str]) -> list[HostEntry]:
        """The hosts named by -H (all of the inventory when none), in the order given."""
        if not names:
            return list(self.hosts.values())
        unknown = [n for n in names if n not in self.hosts]
        if unknown:
            known = ", ".join(self.hosts) or "none"
            raise SettingsError("\n".join(
                f"unknown host {n!r}: {self.source} has no [hosts.{n}] (known: {known})"
                for n in unknown))
        return [self.hosts[n] for n in dict.fromkeys(names)]


def config_path(given: str | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    return Path(given or environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_settings(path: Path) -> DeploySettings:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"no deploy settings at {path} (pass --config-file PATH or set "
                            f"${CONFIG_ENV})") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: {exc}") from None
    return parse_settings(data, path)


def parse_settings(data: Mapping[str, Any], source: Path) -> DeploySettings:
    reader = _Reader(data, source)
    service = reader.text("service", required=True)
    ssh = reader.table("ssh")
    cluster = reader.table("cluster")
    server = reader.table("server")
    reader.reserved(server, "[server]")
    user = reader.text("user", table=ssh, where="[ssh]") or "root"
    key = reader.text("key", table=ssh, where="[ssh]")
    settings = DeploySettings(
        source=source, service=service or "app",
        base=reader.text("base") or f"/srv/{service}", app=reader.text("app", required=True),
        python=reader.text("python") or "python3",
        wheels=tuple(reader.text_list("wheels")),
        masters=reader.number("masters", 1, int), health_path=reader.text("health_path"),
        redis=reader.text("redis", table=cluster, where="[cluster]"),
        cluster=reader.text("name", table=cluster, where="[cluster]"),
        serial=str(data.get("serial", "1")),
        max_fail_percent=reader.number("max_fail_percent", 0, float),
        keep_releases=reader.number("keep_releases", 5, int),
        connect_timeout=reader.number("connect_timeout", 10, float, table=ssh, where="[ssh]"),
        gate_timeout=reader.number("gate_timeout", 90, float),
    )
    hosts = {}
    for name, entry in reader.table("hosts").items():
        if not isinstance(entry, Mapping):
            reader.problems.append(f"[hosts.{name}] must be a table")
            continue
        own_server = entry.get("server", {})
        if not isinstance(own_server, Mapping):
            reader.problems.append(f"[hosts.{name}.server] must be a table")
            own_server = {}
        reader.reserved(own_server, f"[hosts.{name}.server]")
        port = entry.get("port", 22)
        if not isinstance(port, int) or not 0 < port < 65536:
            reader.problems.append(f"[hosts.{name}] port: want a TCP port, got {port!r}")
            port = 22
        host_key = entry.get("key", key)
        hosts[name] = HostEntry(
            name=name, address=str(entry.get("address", name)), ssh_port=port,
            user=str(entry.get("user", user)),
            key=os.path.expanduser(host_key) if host_key else None,
            server={**server, **own_server})
    if not settings.base.startswith("/"):
        reader.problems.append(f"base: want an absolute path, got {settings.base!r}")
    settings = replace(settings, hosts=hosts)
    reader.problems.extend(_check_numbers(settings))
    if reader.problems:
        raise SettingsError("\n".join(f"{source}: {p}" for p in reader.problems))
    return settings


def _check_numbers(settings: DeploySettings) -> list[str]:
    problems = []
    try:
        parse_serial(settings.serial)
        parse_percent(settings.max_fail_percent, "max_fail_percent")
    except BatchError as exc:
        problems.append(str(exc))
    if settings.masters < 1:
        problems.append(f"masters: want 1 or more, got {settings.masters}")
    if settings.keep_releases < 1:
        problems.append(f"keep_releases: want 1 or more, got {settings.keep_releases}")
    return problems


class _Reader:
    """Typed reads of the TOML data that collect problems instead of stopping at one."""

    def __init__(self, data: Mapping[str, Any], source: Path) -> None:
        self.data = data
        self.source = source
        self.problems: list[str] = []

    def table(self, name: str) -> Mapping[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, Mapping):
            self.problems.append(f"[{name}] must be a table")
            return {}
        return value

    def text(self, name: str, *, table: Mapping[str, Any] | None = None, where: str = "",
             required: bool = False) -> str | None:
        value = (self.data if table is None else table).get(name)
        if value is None:
            if required:
                self.problems.append(f"{where + ' ' if where else ''}{name} is required")
            return None
        if not isinstance(value, str) or not value:
            self.problems.append(f"{where + ' ' if where else ''}{name}: want a non-empty "
                                 f"string, got {value!r}")
            return None
        return value

    def text_list(self, name: str) -> list[str]:
        value = self.data.get(name, [])
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(f"{name}: want a list of paths, got {value!r}")
            return []
        return value

    def number(self, name: str, default: Any, kind: type, *,
               table: Mapping[str, Any] | None = None, where: str = "") -> Any:
        value = (self.data if table is None else table).get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                (kind is int and not isinstance(value, int)):
            self.problems.append(f"{where + ' ' if where else ''}{name}: want a "
                                 f"{kind.__name__}, got {value!r}")
            return default
        return kind(value)

    def reserved(self, server: Mapping[str, Any], where: str) -> None:
        for name in server:
            if name in RESERVED_SERVER_SETTINGS:
                self.problems.append(f"{where} {name}: set through the deploy's "
                                     f"{RESERVED_SERVER_SETTINGS[name]} instead")
