"""Fixtures of the deploy tests: simulated hosts (real sshd), a private Redis, the
release wheels, and a runner for the real `fab -r deploy` command line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from deployfleet import (
    APPS,
    HOST_PYTHON,
    HOSTS,
    ROOT,
    Fleet,
    build_wheels,
    kill_services,
    service_base,
    start_redis,
)

FAB = str(Path(sys.executable).with_name("fab"))


def _shared_dir(tmp_path_factory) -> Path:
    """One folder for every xdist worker of this run (and only this run)."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    return (base.parent / f"deploy-wheels-{run_id}") if run_id else (base / "deploy-wheels")


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> dict[str, Path]:
    return build_wheels(_shared_dir(tmp_path_factory), APPS)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("deploy-redis"))
    yield server
    server.crash()


@pytest.fixture(scope="session")
def services() -> list[str]:
    """The name of every service the deploys started (its processes' proc_name)."""
    return []


@pytest.fixture(scope="session")
def fleet(tmp_path_factory, services):
    hosts = Fleet(tmp_path_factory.mktemp("fleet")).start(HOSTS)
    yield hosts
    hosts.stop(services)


@dataclass
class Project:
    """One deployed service: its settings file, base path and cluster name."""

    settings: Path
    base: str
    cluster: str
    fleet: Fleet

    def deploy_cmd(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        """`fab -r deploy ARGS` from the project root, as an operator runs it."""
        env = {**os.environ, "POLYCORN_DEPLOY_CONFIG": str(self.settings)}
        done = subprocess.run([FAB, "-r", "deploy", *args], cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
        sys.stdout.write(f"\n$ fab -r deploy {' '.join(args)}  -> exit {done.returncode}\n"
                         f"{done.stdout}{done.stderr}")
        return done

    def on(self, host_name: str, *parts: str) -> Path:
        """A path under this service's base on one host, as the test process sees it."""
        host = next(h for h in self.fleet.hosts if h.name == host_name)
        return host.path("/".join([self.base, *parts]))


@pytest.fixture
def make_project(fleet, redis_server, services, tmp_path):
    """Write a deploy.toml for the fleet; every service it starts is killed at the end."""
    mine: list[str] = []

    def make(*, extra: str = "", host_extra: dict[str, str] | None = None,
             hosts: list | None = None, key: str | None = None) -> Project:
        name = f"svc{uuid.uuid4().hex[:8]}"
        base = service_base(name)
        services.append(name)
        mine.append(name)
        lines = [f'service = "{name}"', f'base = "{base}"', 'app = "deployapp:application"',
                 f'python = "{HOST_PYTHON}"', 'health_path = "/health"', "gate_timeout = 60",
                 extra, "", "[ssh]", 'user = "root"', f'key = "{key or fleet.client_key}"',
                 "connect_timeout = 5", "", "[cluster]", f'name = "{name}"',
                 f'redis = "{redis_server.url}"', "", "[server]", "workers = 2",
                 # short timers: a superseded or stopped node leaves the registry fast
                 "graceful_timeout = 10", ""]
        for host in hosts or fleet.hosts:
            lines += [f"[hosts.{host.name}]", 'address = "127.0.0.1"', f"port = {host.ssh_port}",
                      (host_extra or {}).get(host.name, ""),
                      f"[hosts.{host.name}.server]", f'bind = ["127.0.0.1:{host.app_port}"]', ""]
        settings = tmp_path / f"{name}.toml"
        settings.write_text(textwrap.dedent("\n".join(lines)))
        return Project(settings, base, name, fleet)

    yield make
    kill_services(mine)
