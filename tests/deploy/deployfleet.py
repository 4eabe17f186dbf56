"""Simulated hosts for the deploy tests: one real sshd per host on loopback, each in
its own UTS and mount namespace (own hostname, own /srv bound from a temp folder),
a private redis-server, and the wheels a release ships. Everything started here
is killed by pid at the end, including the services the deploy started on the hosts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from polycorn.ha.process_tracker import ProcessTracker
from polycorn.ha.redis_launcher import RedisServer
from support.procs import (
    alive,
    descendants,
    free_port,
    kill_all,
    named_pids,
    port_open,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"
# The interpreter the hosts create release virtualenvs from (the filesystem outside
# /srv is shared with the hosts, so the test's own base Python is there too).
HOST_PYTHON = getattr(sys, "_base_executable", sys.executable)
HOSTS = ["node1", "node2", "node3"]
# release -> (package version, status of its /health): C is the broken release.
APPS = {"A": ("1.0.0", 200), "B": ("2.0.0", 200), "C": ("3.0.0", 500)}


@dataclass
class Host:
    name: str
    ssh_port: int
    app_port: int
    srv: Path  # this host's /srv, as the test process sees it
    config: Path
    proc: subprocess.Popen | None = None

    def path(self, remote: str) -> Path:
        """A path on the host (under /srv) as the test process sees it."""
        assert remote.startswith("/srv/"), remote
        return self.srv / remote[len("/srv/"):]


@dataclass
class Fleet:
    """N sshd 'hosts' sharing loopback; each host's service gets its own port."""

    workdir: Path
    hosts: list[Host] = field(default_factory=list)
    client_key: Path | None = None
    host_key: Path | None = None

    def start(self, names: list[str]) -> Fleet:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd refuses to start without it
        keys = self.workdir / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        self.host_key, self.client_key = keys / "host_ed25519", keys / "client_ed25519"
        for key in (self.host_key, self.client_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                               check=True)
        authorized = keys / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        for name in names:
            self.hosts.append(self._start_host(name, authorized))
        for host in self.hosts:
            wait_until(lambda h=host: self._sshd_up(h), 10, what=f"sshd of {host.name}")
        return self

    def _start_host(self, name: str, authorized: Path) -> Host:
        home = self.workdir / name
        srv = home / "srv"
        srv.mkdir(parents=True, exist_ok=True)
        port = free_port()
        config = home / "sshd_config"
        config.write_text(textwrap.dedent(f"""\
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {self.host_key}
            PidFile {home / 'sshd.pid'}
            AuthorizedKeysFile {authorized}
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            Subsystem sftp internal-sftp
            LogLevel ERROR
            """))
        script = (f"hostname {name} && mount --bind {srv} /srv && "
                  f"exec {SSHD} -D -e -f {config}")
        log = open(home / "sshd.log", "ab")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(["unshare", "--uts", "--mount", "--propagation", "private",
                                 "sh", "-c", script], stdout=log, stderr=log,
                                start_new_session=True)
        log.close()
        return Host(name, port, free_port(), srv, config, proc)

    def _sshd_up(self, host: Host) -> bool:
        if host.proc is not None and host.proc.poll() is not None:
            log = (host.config.parent / "sshd.log").read_text(errors="replace")
            raise AssertionError(f"sshd of {host.name} exited: {log}")
        return port_open(host.ssh_port)

    def stop(self, services: list[str]) -> None:
        """Kill every process of the given services and every sshd."""
        kill_services(services)
        victims: set[int] = set()
        for host in self.hosts:
            if host.proc is not None:
                victims.update([host.proc.pid, *descendants(host.proc.pid)])
        kill_all(victims, signal.SIGKILL)
        for host in self.hosts:
            if host.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.proc.wait(5)


def service_base(service: str) -> str:
    """Where a test service lives on every host (its name is unique to the test)."""
    return f"/srv/{service}"


def kill_services(services: list[str]) -> None:
    """Kill by pid every process of the services: masters (every generation), workers and
    agents, found by their title `polycorn: ROLE [SERVICE]` (the deploy sets proc_name),
    or, for a master that has not set its title yet (just executed), by its interpreter,
    the service's own `current/venv/bin/python`."""
    victims: set[int] = set()
    for service in services:
        python = f"{service_base(service)}/current/venv/bin/python"
        for pid in {*named_pids(service), *pids_with_first_arg(python)}:
            victims.update([pid, *descendants(pid)])
    kill_all(victims, signal.SIGKILL)


def pids_with_first_arg(program: str) -> list[int]:
    """Live processes whose command line starts with `program` (exactly)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                first = f.read().split(b"\0", 1)[0]
        except OSError:
            continue
        if first == program.encode() and alive(int(entry)):
            found.append(int(entry))
    return found


def start_redis(workdir: Path) -> RedisServer:
    """A private redis-server on a free loopback port, no persistence, under its own
    tracker (stop it with .crash(): SIGKILL by pid)."""
    return RedisServer(ProcessTracker(), workdir).start()


# -- wheels -------------------------------------------------------------------------------

APP_SOURCE = '''\
"""A release of the deploy tests' app: /version names the release, /health answers {health}
(or $DEPLOYAPP_HEALTH: one host's settings can break a release on that host only)."""

import os

VERSION = {version!r}
HEALTH = int(os.environ.get("DEPLOYAPP_HEALTH") or {health})


def _reply(start_response, status, body):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/version":
        return _reply(start_response, "200 OK", VERSION.encode())
    if path == "/health":
        status = "200 OK" if HEALTH < 400 else f"{{HEALTH}} Unhealthy"
        return _reply(start_response, status, b"health\\n")
    if path == "/pid":
        return _reply(start_response, "200 OK", str(os.getpid()).encode())
    return _reply(start_response, "200 OK", b"hello\\n")
'''

APP_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "deployapp"
version = "{version}"

[tool.setuptools]
py-modules = ["deployapp"]
'''


def _pip_wheel(source: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                             "-w", str(out), str(source)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def build_wheels(shared: Path, apps: dict[str, tuple[str, int]]) -> dict[str, Path]:
    """Build (once per test session, shared by xdist workers) the polycorn wheel, the
    redis wheel the cluster agent needs, and one app wheel per release.

    Returns {"polycorn": path, "redis": path, <release>: app wheel path}. `apps` maps a
    release name to (package version, health status).
    """
    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one xdist worker builds, the others wait
        done = shared / "built"
        if not done.exists():
            _build_all(shared, apps)
            done.write_text("ok\n")
    found = {"polycorn": next((shared / "polycorn").glob("polycorn-*.whl")),
             "redis": next((shared / "redis").glob("redis-*.whl")),
             "setproctitle": next((shared / "setproctitle").glob("setproctitle-*.whl"))}
    for release in apps:
        found[release] = next((shared / f"app-{release}").glob("deployapp-*.whl"))
    return found


def _build_all(shared: Path, apps: dict[str, tuple[str, int]]) -> None:
    jobs = {"polycorn": _pip_wheel(ROOT, shared / "polycorn")}
    for release, (version, health) in apps.items():
        source = shared / f"src-{release}"
        source.mkdir(exist_ok=True)
        (source / "deployapp.py").write_text(APP_SOURCE.format(version=release, health=health))
        (source / "pyproject.toml").write_text(APP_PYPROJECT.format(version=version))
        jobs[release] = _pip_wheel(source, shared / f"app-{release}")
    # The agent imports redis-py: the release's wheelhouse carries it, so hosts
    # install with --no-index (no network). pip serves it from its cache when it can.
    # setproctitle (the proctitle extra) too: the hosts' processes carry titles, as a
    # production host's would, and the tests find them by title.
    from importlib.metadata import version
    for package in ("redis", "setproctitle"):
        job = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
             f"{package}=={version(package)}", "-d", str(shared / package)],
            capture_output=True, text=True, timeout=120)
        if job.returncode != 0:
            raise RuntimeError(f"pip download {package} failed: {job.stdout}{job.stderr}")
    deadline = time.monotonic() + 240
    for name, job in jobs.items():
        out, _ = job.communicate(timeout=max(1.0, deadline - time.monotonic()))
        if job.returncode != 0:
            raise RuntimeError(f"pip wheel of {name} failed:\n{out.decode(errors='replace')}")


def wheel_arg(wheels: dict[str, Path], release: str) -> str:
    """--wheels for a release: polycorn, redis-py, setproctitle and that release's app."""
    return ",".join(str(wheels[k]) for k in ("polycorn", "redis", "setproctitle", release))
