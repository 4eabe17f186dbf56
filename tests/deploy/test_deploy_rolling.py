"""Rolling releases on three simulated hosts (real sshd, real polycorn, real Redis),
through the real `fab -r deploy` command: setup and a first deploy, a deploy under
load, a broken release rolled back by itself (failing in the first batch, then
on one host of the second batch), a rollback under load, status, cleanup.
The figure that matters is the number of failed requests under load: zero.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from deployfleet import HOSTS, kill_services, wheel_arg
from polycorn.server import identity, proctitle
from polycorn.server.upgrade_command import status_files
from support.http import get
from support.load import Load
from support.procs import port_open, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def served_version(port: int) -> str:
    status, body, _ = get(port, "/version")
    assert status == 200
    return body.decode()


def cluster_status(project, redis_url: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "polycorn.ha.ctl", "status", "--json",
                           "--redis", redis_url, "--cluster", project.cluster],
                          capture_output=True, text=True, timeout=30)
    return json.loads(done.stdout)


def live_nodes(status: dict) -> list[dict]:
    return [n for n in status["nodes"] if n["alive"]]


def summary_rows(stdout: str) -> dict[str, str]:
    """The final table's row of each host (after the HOST header line)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("HOST "))
    return {line.split()[0]: line for line in lines[start + 1:] if line.split()[0] in HOSTS}


def master_pid(project, host: str) -> int:
    return int(project.on(host, "shared", "run", f"{project.cluster}.pid").read_text())


def current_of(project, host: str) -> str:
    return project.on(host, "current").readlink().name


class CurrentWatcher:
    """Polls where each host's `current` points, to prove some hosts never moved."""

    def __init__(self, project, hosts: list[str]) -> None:
        self.project, self.hosts = project, hosts
        self.seen: dict[str, set[str]] = {h: set() for h in hosts}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for h in self.hosts:
                self.seen[h].add(current_of(self.project, h))
            time.sleep(0.02)

    def __enter__(self) -> CurrentWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_releases_roll_over_three_hosts_without_a_failed_request(
        make_project, wheels, redis_server, tmp_path):
    project = make_project(extra='serial = "1"\nkeep_releases = 3')
    ports = [h.app_port for h in project.fleet.hosts]
    hosts_arg = ",".join(HOSTS)

    # -- setup and the first release: every host serves A; three nodes, one leader --------
    done = project.deploy_cmd("setup", "-H", hosts_arg)
    assert done.returncode == 0, done.stderr
    for host in HOSTS:
        assert project.on(host, "releases").is_dir()
        assert project.on(host, "shared", "run").is_dir()
        assert project.on(host, "revisions.log").exists()

    done = project.deploy_cmd("deploy", "-H", hosts_arg, "--release", "A",
                              "--wheels", wheel_arg(wheels, "A"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert [served_version(p) for p in ports] == ["A", "A", "A"]
    status = wait_until(lambda: (s := cluster_status(project, redis_server.url))
                        and len(live_nodes(s)) == 3 and s["leader"] and s,
                        20, what="three live nodes and a leader")
    nodes = live_nodes(status)
    assert sorted(n["host"] for n in nodes) == HOSTS
    assert {(n["state"], n["release"]) for n in nodes} == {("ready", "A")}
    assert status["leader"] in {n["node_id"] for n in nodes}
    for host in HOSTS:
        assert current_of(project, host) == "A"
        assert str(project.on(host, "releases", "A", "log").readlink()) == \
            f"{project.base}/shared/log"

    # -- release B under steady load: 0 failed requests, every host on B ----------------
    with Load(ports, "/version") as load:
        load.wait_requests(50)
        done = project.deploy_cmd("deploy", "-H", hosts_arg, "--release", "B",
                                  "--wheels", wheel_arg(wheels, "B"))
        load.wait_requests(50)
    result = load.result
    print(f"\nDEPLOY B under load: {result.summary()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert result.failed == 0, result.summary()
    assert result.bodies["A"] > 0 and result.bodies["B"] > 0
    assert [served_version(p) for p in ports] == ["B", "B", "B"]
    for host in HOSTS:
        log = project.on(host, "revisions.log").read_text()
        assert "release A deployed (was none)" in log and "release B deployed (was A)" in log
    assert "batch 3/3" in done.stdout and "RESULT" in done.stdout
    wait_until(lambda: {(n["state"], n["release"]) for n in
                        live_nodes(cluster_status(project, redis_server.url))}
               == {("ready", "B")}, 20, what="the registry showing every node on B")

    # -- broken release C: batch 1 fails, its host goes back to B by itself --------------
    pids_before = {h: master_pid(project, h) for h in HOSTS[1:]}
    with CurrentWatcher(project, HOSTS[1:]) as watcher, Load(ports, "/version") as load:
        load.wait_requests(50)
        done = project.deploy_cmd("deploy", "-H", hosts_arg, "--release", "C",
                                  "--wheels", wheel_arg(wheels, "C"))
        load.wait_requests(50)
    result = load.result
    print(f"\nDEPLOY C (broken) under load: {result.summary()}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert result.failed == 0, result.summary()
    assert "C" not in result.bodies
    assert "halted: batch 1/3 failed" in done.stdout
    rows = summary_rows(done.stdout)
    assert "rolled back" in rows["node1"] and "pending" in rows["node2"] \
        and "pending" in rows["node3"], done.stdout
    assert watcher.seen == {"node2": {"B"}, "node3": {"B"}}  # never left B
    assert {h: master_pid(project, h) for h in HOSTS[1:]} == pids_before
    assert [served_version(p) for p in ports] == ["B", "B", "B"]
    for host in HOSTS:
        assert current_of(project, host) == "B"
        assert not project.on(host, "releases", "C").exists()  # a failed release leaves nothing
    assert "release C rolled back to B (automatic: upgrade:" in \
        project.on("node1", "revisions.log").read_text()

    # -- a release that fails on node2 only: node1, switched in batch 1, goes back too ----
    broken_on_node2 = tmp_path / "broken-on-node2.toml"
    broken_on_node2.write_text(project.settings.read_text().replace(
        "[hosts.node2.server]\n", '[hosts.node2.server]\nraw_env = ["DEPLOYAPP_HEALTH=503"]\n'))
    with Load(ports, "/version") as load:
        load.wait_requests(50)
        done = project.deploy_cmd("deploy", "--release", "D", "--wheels", wheel_arg(wheels, "B"),
                                  "--config-file", str(broken_on_node2))
        load.wait_requests(50)
    result = load.result
    print(f"\nDEPLOY D (broken on node2) under load: {result.summary()}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert result.failed == 0, result.summary()
    assert "halted: batch 2/3 failed" in done.stdout
    rows = summary_rows(done.stdout)
    assert "rolled back" in rows["node1"] and "rolled back" in rows["node2"] \
        and "pending" in rows["node3"], done.stdout
    assert "answered 503" in rows["node2"]
    for host in HOSTS:
        assert current_of(project, host) == "B"
        assert not project.on(host, "releases", "D").exists()
    assert "release D rolled back to B (automatic: batch 2/3 failed" in \
        project.on("node1", "revisions.log").read_text()
    wait_until(lambda: {(n["state"], n["release"]) for n in
                        live_nodes(cluster_status(project, redis_server.url))}
               == {("ready", "B")}, 20, what="the registry showing every node back on B")

    # -- rollback from B to A under load --------------------------------------------------
    with Load(ports, "/version") as load:
        load.wait_requests(50)
        done = project.deploy_cmd("rollback", "-H", hosts_arg)
        load.wait_requests(50)
    result = load.result
    print(f"\nROLLBACK B -> A under load: {result.summary()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert result.failed == 0, result.summary()
    assert [served_version(p) for p in ports] == ["A", "A", "A"]
    for host in HOSTS:
        assert current_of(project, host) == "A"
        assert "rollback from B to A" in project.on(host, "revisions.log").read_text()

    # -- status: what each host runs and the registry's view ------------------------------
    done = project.deploy_cmd("status", "--json")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert {h: seen["hosts"][h]["current"] for h in HOSTS} == {h: "A" for h in HOSTS}
    assert sorted(n["host"] for n in seen["registry"]["nodes"] if n["alive"]) == HOSTS

    # -- cleanup: the configured number of releases, never the current one ----------------
    for host in HOSTS:  # two older releases, made as a deploy would leave them
        for age, old in ((300, "old1"), (200, "old2")):
            folder = project.on(host, "releases", old)
            folder.mkdir()
            (folder / "release.json").write_text(json.dumps({"id": old,
                                                             "created": time.time() - age}))
    done = project.deploy_cmd("cleanup")  # keep_releases = 3: old2, A, B stay
    assert done.returncode == 0, done.stderr
    for host in HOSTS:
        assert sorted(p.name for p in project.on(host, "releases").iterdir()) == \
            ["A", "B", "old2"]
    done = project.deploy_cmd("cleanup", "--keep", "1")  # B is the newest, A is current
    assert done.returncode == 0, done.stderr
    for host in HOSTS:
        assert sorted(p.name for p in project.on(host, "releases").iterdir()) == ["A", "B"]
    assert [served_version(p) for p in ports] == ["A", "A", "A"]


def test_setup_starts_a_stopped_service_on_its_current_release(make_project, wheels):
    project = make_project()
    port = next(h.app_port for h in project.fleet.hosts if h.name == "node2")
    assert project.deploy_cmd("setup", "-H", "node2").returncode == 0
    done = project.deploy_cmd("deploy", "-H", "node2", "--release", "A",
                              "--wheels", wheel_arg(wheels, "A"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert served_version(port) == "A"
    # the host reboots (no systemd here): every process of the service is gone
    kill_services([project.cluster])
    wait_until(lambda: not port_open(port), 10, what="the service to be down")
    done = project.deploy_cmd("setup", "-H", "node2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "service started on A" in done.stdout
    assert served_version(port) == "A"
    done = project.deploy_cmd("setup", "-H", "node2")  # idempotent
    assert done.returncode == 0 and "service running on A" in done.stdout


def test_two_masters_per_host_deploy_under_load(make_project, wheels, redis_server):
    """masters = 2 with a cluster: each host is one node in the registry (its agent runs
    beside the master that owns the hand-off path), both masters run each release, and
    a deploy under load fails no request."""
    project = make_project(extra="masters = 2")
    hosts = HOSTS[:2]
    ports = [h.app_port for h in project.fleet.hosts if h.name in hosts]
    hosts_arg = ",".join(hosts)
    assert project.deploy_cmd("setup", "-H", hosts_arg).returncode == 0
    done = project.deploy_cmd("deploy", "-H", hosts_arg, "--release", "A",
                              "--wheels", wheel_arg(wheels, "A"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert [served_version(p) for p in ports] == ["A", "A"]

    def masters_of(host: str) -> list[int]:
        """The live masters named by the host's status files (PIDFILE.m<i>), stamps checked."""
        pidfile = project.on(host, "shared", "run", f"{project.cluster}.pid")
        records = [json.loads(Path(path).read_text()) for path in status_files(str(pidfile))]
        return [pid for record in records if (pid := identity.verified_pid(record))]

    assert [len(masters_of(h)) for h in hosts] == [2, 2]
    # The release's config names the processes after the service (setproctitle is in the
    # release's wheels): `polycorn: master [svc...]`.
    for pid in (p for h in hosts for p in masters_of(h)):
        assert proctitle.parse(Path(f"/proc/{pid}/cmdline").read_bytes()) == \
            ("master", project.cluster)
    status = wait_until(lambda: (s := cluster_status(project, redis_server.url))
                        and len(live_nodes(s)) == 2 and s["leader"] and s,
                        20, what="two live nodes (one per host) and a leader")
    assert {(n["state"], n["release"]) for n in live_nodes(status)} == {("ready", "A")}

    with Load(ports, "/version") as load:
        load.wait_requests(50)
        done = project.deploy_cmd("deploy", "-H", hosts_arg, "--release", "B",
                                  "--wheels", wheel_arg(wheels, "B"))
        load.wait_requests(50)
    print(f"\nDEPLOY B, two masters per host, under load: {load.result.summary()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert load.result.failed == 0, load.result.summary()
    assert [served_version(p) for p in ports] == ["B", "B"]
    assert [len(masters_of(h)) for h in hosts] == [2, 2]
    status = cluster_status(project, redis_server.url)
    assert len(live_nodes(status)) == 2
    assert {(n["state"], n["release"]) for n in live_nodes(status)} == {("ready", "B")}
