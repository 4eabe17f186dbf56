"""Bad input stops a deploy task before anything changes on any host (exit 2, every
problem named), and a broken first release leaves its host as it found it. Real
sshd hosts, the real `fab -r deploy` and `polycorn-deploy` command lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from deployfleet import Host, wheel_arg
from support.procs import free_port

pytestmark = pytest.mark.slow

POLYCORN_DEPLOY = str(Path(sys.executable).with_name("polycorn-deploy"))


def assert_refused(done: subprocess.CompletedProcess, *messages: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    for message in messages:
        assert message in done.stderr, done.stderr
    assert "nothing was changed on any host" in done.stderr


def test_unknown_unreachable_hosts_and_missing_key_change_nothing(make_project, fleet, tmp_path):
    dead = Host("node4", free_port(), free_port(), tmp_path / "node4-srv", tmp_path / "none")
    project = make_project(hosts=[*fleet.hosts, dead])

    done = project.deploy_cmd("setup", "-H", "node1,nodeX,nodeY")
    assert_refused(done, "unknown host 'nodeX'", "unknown host 'nodeY'", "known: node1, node2")

    done = project.deploy_cmd("setup", "-H", "node1,node2,node4")
    assert_refused(done, f"host node4: node4 (root@127.0.0.1:{dead.ssh_port}) unreachable: ")
    assert "node1" not in done.stderr and "node2" not in done.stderr  # only the bad one

    keyless = make_project(key=str(tmp_path / "no-such-key"))
    done = keyless.deploy_cmd("setup", "-H", "node1")
    assert_refused(done, f"host node1: ssh key {tmp_path / 'no-such-key'} not found")

    for host in ("node1", "node2", "node3"):
        assert not project.on(host).exists() and not keyless.on(host).exists()


def test_bad_release_inputs_change_nothing(make_project, wheels, tmp_path):
    project = make_project()
    good = wheel_arg(wheels, "A")

    done = project.deploy_cmd("deploy", "--release", "A", "--wheels", good)
    assert_refused(done, "host node1: no release layout under", "run the setup task first")
    assert not project.on("node1").exists()

    assert project.deploy_cmd("setup").returncode == 0
    missing = tmp_path / "dist" / "app-9.whl"
    done = project.deploy_cmd("deploy", "--release", "A", "--wheels", f"{good},{missing}")
    assert_refused(done, f"wheel {missing} does not exist")

    project.on("node2", "releases", "A").mkdir()  # a release of that id is there already
    done = project.deploy_cmd("deploy", "--release", "A", "--wheels", good)
    assert_refused(done, "host node2: release A exists already")
    assert "node1" not in done.stderr and "node3" not in done.stderr

    done = project.deploy_cmd("deploy", "--release", "../A", "--wheels", good)
    assert_refused(done, "release id '../A'")
    done = project.deploy_cmd("deploy", "--release", "Z", "--wheels", good, "--serial", "0")
    assert_refused(done, "serial: want a host count or a percentage")
    done = project.deploy_cmd("rollback")
    assert_refused(done, "host node1: nothing deployed yet")

    for host, releases in (("node1", []), ("node2", ["A"]), ("node3", [])):
        assert sorted(p.name for p in project.on(host, "releases").iterdir()) == releases
        assert not project.on(host, "current").exists()


def test_a_broken_first_release_stops_and_leaves_no_current(make_project, wheels):
    project = make_project()
    assert project.deploy_cmd("setup", "-H", "node3").returncode == 0
    done = project.deploy_cmd("deploy", "-H", "node3", "--release", "C",
                              "--wheels", wheel_arg(wheels, "C"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED at gate: no running master" in done.stdout
    assert "health check GET /health answered 500" in done.stdout  # the master's own words
    assert "halted: batch 1/1 failed" in done.stdout
    assert not project.on("node3", "current").exists()
    assert not project.on("node3", "releases", "C").exists()
    assert "release C rolled back to (none)" in project.on("node3", "revisions.log").read_text()


def test_polycorn_deploy_entry_point_runs_the_same_tasks(make_project):
    listing = subprocess.run([POLYCORN_DEPLOY, "--list"], capture_output=True, text=True,
                             timeout=60)
    assert listing.returncode == 0
    for name in ("setup", "deploy", "rollback", "status", "cleanup"):
        assert f"  {name} " in listing.stdout
    project = make_project()
    env = {**os.environ, "POLYCORN_DEPLOY_CONFIG": str(project.settings)}
    done = subprocess.run([POLYCORN_DEPLOY, "setup", "-H", "node2"], capture_output=True,
                          text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert project.on("node2", "releases").is_dir() and not project.on("node1").exists()
    done = subprocess.run([POLYCORN_DEPLOY, "status", "-H", "node2"], capture_output=True,
                          text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].split()[:3] == ["node2", "node2", "-"]
