"""The operations on one host, each a few shell commands over its HostShell.

Each operation names its step, so a failure says where it happened. The only
state the deploy keeps is on the hosts themselves (the layout, `current`,
revisions.log, release.json); `inspect` reads it back in one round trip.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from polycorn.deploy import gate, hostinfo
from polycorn.deploy.inventory import DeploySettings, HostEntry
from polycorn.deploy.layout import LINKED_DIRS, Layout
from polycorn.deploy.remote import HostShell, RemoteError, q, tail
from polycorn.deploy.service import UNIT_DIR, Service, ServiceMode, render_conf
from polycorn.server.pidfile import stamp_path

HOSTINFO_SOURCE = Path(hostinfo.__file__).read_text()
GATE_POLL = 0.5  # seconds between two looks at a host that is not ready yet
# A daemon writes its pid file a moment after the start command returns: only a
# master missing for this long means the start failed.
DOWN_GRACE = 3.0


@dataclass(frozen=True)
class HostInfo:
    """What `hostinfo.inspect` found on a host."""

    hostname: str
    python: str
    layout_ok: bool
    current: str | None
    releases: tuple[dict, ...]  # {"id", "created", "complete", "info"}, any order
    in_use: tuple[str, ...]
    masters: dict[str, int]  # pid file -> live pid (0: none)
    systemd: bool

    def release_ids(self) -> list[str]:
        """Oldest first, by the creation time each release recorded."""
        return [r["id"] for r in sorted(self.releases, key=lambda r: (r["created"], r["id"]))]

    def complete_release(self, release_id: str) -> bool:
        return any(r["id"] == release_id and r["complete"] for r in self.releases)

    def previous_release(self) -> str | None:
        """The newest complete release older than `current` (Capistrano's rollback target)."""
        ids = self.release_ids()
        if self.current not in ids:
            return None
        older = ids[:ids.index(self.current)]
        return next((r for r in reversed(older) if self.complete_release(r)), None)

    def live_masters(self, service: Service) -> list[int]:
        return [pid for path in service.pidfiles() if (pid := self.masters.get(path, 0))]


def service_for(settings: DeploySettings, info: HostInfo | None) -> Service:
    systemd = info.systemd if info is not None else False
    return Service(Layout(settings.base, settings.service), settings.masters,
                   ServiceMode.SYSTEMD if systemd else ServiceMode.DAEMON)


def inspect(shell: HostShell, settings: DeploySettings, python: str | None = None) -> HostInfo:
    layout = Layout(settings.base, settings.service)
    pidfiles = {layout.pidfile(), *(layout.pidfile(i) for i in range(settings.masters))}
    out = shell.run(q(python or settings.python, "-c", HOSTINFO_SOURCE, settings.base,
                      *sorted(pidfiles)), "inspect", timeout=60)
    data = json.loads(out)
    return HostInfo(data["hostname"], data["python"], data["layout_ok"], data["current"],
                    tuple(data["releases"]), tuple(data["in_use"]), data["masters"],
                    data["systemd"])


# -- setup ---------------------------------------------------------------------------------


def create_layout(shell: HostShell, layout: Layout) -> None:
    dirs = [layout.releases, *(f"{layout.shared}/{d}" for d in LINKED_DIRS)]
    shell.run(f"mkdir -p {q(*dirs)} && touch {q(layout.revisions_log)}", "layout")


def install_units(shell: HostShell, service: Service, user: str, stop_timeout: float) -> None:
    path = f"{UNIT_DIR}/{service.unit_name()}"
    shell.put_text(service.unit_text(user, stop_timeout), path, "systemd unit")
    shell.run(f"systemctl daemon-reload && systemctl enable {q(*service.units())}",
              "systemd unit")


# -- a release -----------------------------------------------------------------------------


def prepare_release(shell: HostShell, settings: DeploySettings, entry: HostEntry,
                    release_id: str, wheels: list[str], record: dict) -> None:
    """Upload, build the release's virtualenv offline, install, link, configure, check."""
    layout = Layout(settings.base, settings.service)
    release = layout.release(release_id)
    wheel_dir = layout.wheels(release_id)
    # mkdir without -p for the release itself: it must not exist (no two deploys in one).
    shell.run(f"mkdir {q(release)} && mkdir {q(wheel_dir)}", "create release")
    for wheel in wheels:
        shell.put_file(wheel, f"{wheel_dir}/{Path(wheel).name}", "upload")
    venv = layout.venv(release_id)
    shell.run(q(settings.python, "-m", "venv", "--without-pip", venv), "virtualenv", timeout=300)
    # The host's pip installs into the venv (--python), only from the uploaded files.
    pip = q(settings.python, "-m", "pip", "--isolated", "--python", f"{venv}/bin/python",
            "install", "--quiet", "--no-index", "--no-cache-dir",
            "--disable-pip-version-check", "--find-links", wheel_dir)
    files = q(*(f"{wheel_dir}/{Path(w).name}" for w in wheels))
    shell.run(f"{pip} {files}", "install", timeout=600)
    links = " && ".join(f"ln -s {q(f'{layout.shared}/{d}', f'{release}/{d}')}"
                        for d in LINKED_DIRS)
    shell.run(links, "link shared")
    shell.put_text(render_conf(settings, entry, release_id), layout.conf_file(release), "config")
    shell.put_text(json.dumps(record) + "\n", f"{release}/release.json", "config")
    # The app must import here; its health is the gate's job, after the switch, where a
    # failing release is rolled back host by host (--check-config would run the health
    # check too, so it is switched off for this step).
    check = q(f"{venv}/bin/python", "-m", "polycorn.server.main", "-c",
              layout.conf_file(release), "--check-config", "--health-check", "")
    if settings.redis:  # the cluster agent imports redis-py
        check += " && " + q(f"{venv}/bin/python", "-c", "import redis")
    shell.run(f"cd {q(release)} && {check}", "check app", timeout=120)


def remove_release(shell: HostShell, layout: Layout, release_id: str) -> None:
    shell.run(f"rm -rf {q(layout.release(release_id))}", "remove release", timeout=300)


def switch_current(shell: HostShell, layout: Layout, release_id: str) -> None:
    """Point `current` at the release atomically: a new link renamed over the old one."""
    tmp = f"{layout.base}/.current-{uuid.uuid4().hex[:8]}"
    shell.run(f"test -d {q(layout.release(release_id))} && "
              f"ln -s {q(layout.release(release_id))} {q(tmp)} && "
              f"mv -T {q(tmp)} {q(layout.current)}", "switch current")


def remove_current(shell: HostShell, layout: Layout) -> None:
    shell.run(f"rm -f {q(layout.current)}", "remove current")


def append_revision(shell: HostShell, layout: Layout, text: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    shell.run(f"printf '%s\\n' {q(f'{stamp} {text}')} >> {q(layout.revisions_log)}",
              "revisions.log")


# -- the service ---------------------------------------------------------------------------


class ActivationFailed(RemoteError):
    """Starting or upgrading the service failed; `kept` names the release the service
    certainly still runs (polycorn rolled its upgrade back), or None when unknown."""

    def __init__(self, host: str, step: str, reason: str, kept: str | None) -> None:
        super().__init__(host, step, reason)
        self.kept = kept


def activate(shell: HostShell, service: Service, info: HostInfo, before: str | None,
             timeout: float) -> str:
    """Bring the service onto what `current` points to: a health-gated USR2 upgrade of
    every running master, one at a time, and a start of any that is not running.
    Returns the step done ("upgrade" or "start")."""
    step = "start"
    for pidfile, pid in sorted(info.masters.items()):
        if pidfile not in service.pidfiles() or not pid:
            continue
        step = "upgrade"
        status, out, err = shell.run_status(service.upgrade_command(pidfile), timeout=timeout)
        output = tail(f"{out}\n{err}")
        if status != 0:
            kept = before if "upgrade rolled back" in output else None
            raise ActivationFailed(shell.name, "upgrade", output or f"exit {status}", kept)
    stale = [p for p in service.pidfiles() if not info.masters.get(p)]
    if stale:
        # No polycorn runs under these pid files (checked by hostinfo against the stamp
        # beside each): clear them and their stamps before the start.
        shell.run(f"rm -f {q(*stale, *map(stamp_path, stale))}", "start")
        status, out, err = shell.run_status(service.start_command(), timeout=120)
        output = tail(f"{out}\n{err}")
        if status != 0:
            raise ActivationFailed(shell.name, "start", output or f"exit {status}", None)
    return step


def stop_service(shell: HostShell, service: Service, python: str) -> None:
    shell.run(service.stop_command([python, "-c", HOSTINFO_SOURCE]), "stop")


def observe(shell: HostShell, settings: DeploySettings, entry: HostEntry,
            service: Service) -> dict:
    layout = Layout(settings.base, settings.service)
    argv = [layout.current_python, "-m", "polycorn.deploy.gate", "--bind", entry.first_bind(),
            "--health-path", settings.health_path or "/",
            "--node-ttl", str(entry.server.get("node_ttl", 3)),
            "--log", str(entry.server.get("errorlog", layout.error_log))]
    for pidfile in service.pidfiles():
        argv += ["--pidfile", pidfile]
    if settings.redis:
        argv += ["--redis", settings.redis, "--cluster", settings.cluster or settings.service]
    return json.loads(shell.run(q(*argv), "gate", timeout=60))


def wait_ready(shell: HostShell, settings: DeploySettings, entry: HostEntry,
               service: Service, release: str, timeout: float) -> None:
    """Poll the host's gate until it is ready on `release`. RemoteError after `timeout`,
    or sooner when no master has run for DOWN_GRACE seconds (a start that failed)."""
    now = time.monotonic()
    deadline, down_since = now + timeout, None
    while True:
        seen = observe(shell, settings, entry, service)
        reason = gate.judge(seen, release)
        if reason is None:
            return
        down = gate.service_down(seen)
        now = time.monotonic()
        down_since = (down_since or now) if down else None
        if down and now - down_since > DOWN_GRACE:
            raise RemoteError(shell.name, "gate", down)
        if now > deadline:
            raise RemoteError(shell.name, "gate", f"not ready on {release} within "
                              f"{timeout:g}s: {down or reason}")
        time.sleep(GATE_POLL)
