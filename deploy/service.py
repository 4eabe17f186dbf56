"""How the service runs on a host (pure: command lines and generated files).

Every path on the service's command line goes through `current` (interpreter,
config file, working directory), because a USR2 upgrade re-executes that exact
command line: switching `current` is what makes the next generation the new
release. The settings live in the release's own polycorn.conf.py, so a rollback
brings back the old settings with the old code.
"""

from __future__ import annotations

import enum
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from polycorn.deploy.inventory import DeploySettings, HostEntry
from polycorn.deploy.layout import Layout

SERVER_MODULE = "polycorn.server.main"
UNIT_DIR = "/etc/systemd/system"


class ServiceMode(enum.Enum):
    SYSTEMD = "systemd"  # one template unit, one instance per master (docs/systemd.md)
    DAEMON = "daemon"  # `polycorn --daemon`, with --masters N --handoff PATH when N > 1


@dataclass(frozen=True)
class Service:
    layout: Layout
    masters: int
    mode: ServiceMode

    @property
    def conf_path(self) -> str:
        return self.layout.conf_file(self.layout.current)

    def pidfiles(self) -> list[str]:
        """The pid files `polycorn --upgrade` is run on, one after another."""
        if self.mode is ServiceMode.SYSTEMD:
            return [self.layout.pidfile(i) for i in range(self.masters)]
        return [self.layout.pidfile()]

    def argv(self, instance: str | None = None) -> list[str]:
        """The master's command line; `instance` is a systemd instance ("%i")."""
        argv = [self.layout.current_python, "-m", SERVER_MODULE, "-c", self.conf_path]
        if self.mode is ServiceMode.SYSTEMD:
            pid = f"{self.layout.run_dir}/{self.layout.service}-{instance or '%i'}.pid"
            argv += ["--pid", pid]
            if self.masters > 1:
                argv += ["--handoff", self.layout.handoff]
            return argv
        argv += ["--pid", self.layout.pidfile()]
        if self.masters > 1:
            argv += ["--handoff", self.layout.handoff, "--masters", str(self.masters)]
        return [*argv, "--daemon"]

    def unit_name(self, instance: int | str = "") -> str:
        return f"{self.layout.service}@{instance}.service"

    def units(self) -> list[str]:
        return [self.unit_name(i) for i in range(self.masters)]

    def start_command(self) -> str:
        if self.mode is ServiceMode.SYSTEMD:
            return "systemctl start " + " ".join(self.units())
        # `cd` by name keeps $PWD = .../current: the master re-executes from there.
        return f"cd {shlex.quote(self.layout.current)} && {shlex.join(self.argv())}"

    def upgrade_command(self, pidfile: str) -> str:
        return shlex.join([self.layout.current_python, "-m", SERVER_MODULE, "--upgrade",
                           pidfile])

    def stop_command(self, hostinfo: Sequence[str]) -> str:
        """`hostinfo` runs deploy/hostinfo.py on the host ([python, "-c", SOURCE]): a daemon
        gets TERM only when the stamp beside its pid file proves the pid is still that
        master (`kill $(cat PIDFILE)` would signal whatever process has the pid now)."""
        if self.mode is ServiceMode.SYSTEMD:
            return "systemctl stop " + " ".join(self.units())
        return shlex.join([*hostinfo, "--signal", "TERM", *self.pidfiles()])

    def unit_text(self, user: str, stop_timeout: float = 0) -> str:
        """The template unit; `stop_timeout` (seconds) sets TimeoutStopSec when given, so
        that systemd's SIGKILL never cuts a TERM's deregistration window or drain short."""
        current = self.layout.current
        pid = f"{self.layout.run_dir}/{self.layout.service}-%i.pid"
        lines = [
            "# Written by polycorn-deploy setup: one instance per master "
            f"({', '.join(self.units())}).",
            "[Unit]",
            f"Description={self.layout.service} (polycorn master %i)",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=notify",
            # The new master of a USR2 upgrade sends MAINPID= and READY=1 itself.
            "NotifyAccess=all",
            f"WorkingDirectory={current}",
            # systemd does not set $PWD; without it the master would re-execute from the
            # resolved release directory and an upgrade would bring the old release back.
            f"Environment=PWD={current}",
            f"ExecStart={shlex.join(self.argv('%i'))}",
            f"ExecReload={self.upgrade_command(pid)}",
            f"PIDFile={pid}",
            "KillMode=mixed",
            # `systemctl stop` sends TERM (KillSignal's default): out of the balancers'
            # rotation for --deregister-delay, then a graceful drain.
            "Restart=always",
            "RestartSec=1",
        ]
        if stop_timeout > 0:
            lines.append(f"TimeoutStopSec={math.ceil(stop_timeout)}")
        if user != "root":
            lines.append(f"User={user}")
        lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
        return "\n".join(lines)


def render_conf(settings: DeploySettings, host: HostEntry, release_id: str) -> str:
    """The release's polycorn.conf.py for one host (Gunicorn's config-file names)."""
    layout = Layout(settings.base, settings.service)
    # proc_name: the processes' titles say which service they are (`polycorn: master
    # [shop]`, with setproctitle installed); a [server] proc_name overrides it.
    values: dict[str, object] = {"wsgi_app": settings.app, "proc_name": settings.service}
    if settings.health_path:
        values["health_check"] = settings.health_path
    if settings.redis:
        values["redis"] = settings.redis
        values["cluster"] = settings.cluster or settings.service
    values["errorlog"] = layout.error_log
    values.update(host.server)
    body = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    return (f"# polycorn.conf.py of release {release_id} of {settings.service} on {host.name}.\n"
            f"# Written by polycorn-deploy from {settings.source.name}: edit that, not this.\n"
            f"{body}\n")
