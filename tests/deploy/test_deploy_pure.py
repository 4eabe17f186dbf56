"""The deploy's pure parts: batches (Ansible's serial and max_fail_percentage), the
settings file, the layout, the service's command lines and files, the gate's
verdict, and the release order rollback and cleanup rely on."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from polycorn.deploy.batches import BatchError, batch_failed, batch_sizes, make_batches
from polycorn.deploy.gate import judge, service_down
from polycorn.deploy.hostops import HostInfo
from polycorn.deploy.inventory import SettingsError, load_settings, parse_settings
from polycorn.deploy.layout import Layout, ReleaseIdError, check_release_id, new_release_id
from polycorn.deploy.progress import table
from polycorn.deploy.service import Service, ServiceMode, render_conf

# -- batches -----------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "serial", "sizes"), [
    (3, "1", [1, 1, 1]),
    (5, "2", [2, 2, 1]),
    (10, "30%", [3, 3, 3, 1]),
    (3, "30%", [1, 1, 1]),  # rounded down, but at least one host
    (3, "100%", [3]),
    (10, "1,50%", [1, 5, 4]),  # a progression; the last step repeats
    (7, "1,2,3", [1, 2, 3, 1]),
    (2, "5", [2]),
    (0, "1", []),
])
def test_batch_sizes(total, serial, sizes):
    assert batch_sizes(total, serial) == sizes
    assert sum(sizes) == total


@pytest.mark.parametrize("serial", ["0", "-1", "x", "0%", "101%", "", "1,,2"])
def test_bad_serial(serial):
    with pytest.raises(BatchError, match="serial"):
        batch_sizes(3, serial)


def test_batches_keep_the_hosts_order():
    assert make_batches(["a", "b", "c", "d", "e"], "2") == [["a", "b"], ["c", "d"], ["e"]]


@pytest.mark.parametrize(("failed", "size", "limit", "verdict"), [
    (0, 3, 0, False),
    (1, 3, 0, True),  # 0 means any failure fails the batch
    (1, 3, 33, True),  # 33.3 % > 33
    (1, 3, 34, False),
    (1, 2, 50, False),  # exactly the limit is not above it (Ansible)
    (2, 2, 99, True),
    (3, 3, 100, False),
])
def test_batch_failed_is_ansibles_max_fail_percentage(failed, size, limit, verdict):
    assert batch_failed(failed, size, limit) is verdict


# -- settings ----------------------------------------------------------------------------

SOURCE = Path("/ops/deploy.toml")


def settings(**over):
    data = {"service": "shop", "app": "shop.wsgi", "ssh": {"user": "deploy", "key": "~/k"},
            "server": {"workers": 4, "bind": ["0.0.0.0:8000"]},
            "hosts": {"web1": {"address": "10.0.0.1"},
                      "web2": {"port": 2222, "server": {"workers": 8}}}}
    data.update(over)
    return parse_settings(data, SOURCE)


def test_settings_defaults_and_per_host_merge():
    s = settings()
    assert (s.base, s.python, s.serial, s.max_fail_percent, s.keep_releases, s.masters) == \
        ("/srv/shop", "python3", "1", 0.0, 5, 1)
    web1, web2 = s.hosts["web1"], s.hosts["web2"]
    assert (web1.address, web1.ssh_port, web1.user) == ("10.0.0.1", 22, "deploy")
    assert web1.key.endswith("/k") and not web1.key.startswith("~")
    assert (web2.address, web2.ssh_port) == ("web2", 2222)
    assert web2.server == {"workers": 8, "bind": ["0.0.0.0:8000"]}
    assert [h.name for h in s.select(["web2", "web1", "web2"])] == ["web2", "web1"]
    assert [h.name for h in s.select([])] == ["web1", "web2"]


def test_settings_list_every_problem_at_once():
    with pytest.raises(SettingsError) as caught:
        parse_settings({"masters": 0, "serial": "x", "base": "srv",
                        "server": {"pidfile": "/x", "workers": 2},
                        "hosts": {"a": {"port": 0, "server": {"daemon": True}}}}, SOURCE)
    text = str(caught.value)
    for part in ("service is required", "app is required", "masters: want 1 or more",
                 "serial: want a host count", "base: want an absolute path",
                 "[server] pidfile: set through", "[hosts.a.server] daemon: set through",
                 "[hosts.a] port: want a TCP port"):
        assert part in text, text
    assert all(line.startswith(f"{SOURCE}: ") for line in text.splitlines())


def test_unknown_hosts_are_named_with_the_known_ones():
    with pytest.raises(SettingsError, match=r"unknown host 'web9': .* \(known: web1, web2\)"):
        settings().select(["web1", "web9"])


def test_task_options_override_the_file():
    s = settings().with_options(serial="50%", max_fail_percent=25.0, keep_releases=None)
    assert (s.serial, s.max_fail_percent, s.keep_releases) == ("50%", 25.0, 5)
    with pytest.raises(SettingsError, match="serial"):
        settings().with_options(serial="0")


# -- layout and release ids --------------------------------------------------------------


def test_release_ids():
    assert check_release_id("20250101120000") == "20250101120000"
    assert check_release_id("v1.2.3-rc_1") == "v1.2.3-rc_1"
    for bad in ("", "../x", "a/b", ".hidden", "current", "shared", "x" * 101, "a b"):
        with pytest.raises(ReleaseIdError):
            check_release_id(bad)
    assert new_release_id(0) == "19700101000000"


def test_the_service_runs_through_current():
    layout = Layout("/srv/shop", "shop")
    daemon = Service(layout, 1, ServiceMode.DAEMON)
    argv = daemon.argv()
    assert argv[:5] == ["/srv/shop/current/venv/bin/python", "-m", "polycorn.server.main",
                        "-c", "/srv/shop/current/polycorn.conf.py"]
    assert argv[5:] == ["--pid", "/srv/shop/shared/run/shop.pid", "--daemon"]
    assert daemon.start_command().startswith("cd /srv/shop/current && ")
    assert daemon.pidfiles() == ["/srv/shop/shared/run/shop.pid"]
    group = Service(layout, 3, ServiceMode.DAEMON).argv()
    assert group[-5:] == ["--handoff", "/srv/shop/shared/run/shop.handoff.sock", "--masters",
                          "3", "--daemon"]
    assert shlex.split(daemon.upgrade_command("/p.pid")) == [
        "/srv/shop/current/venv/bin/python", "-m", "polycorn.server.main", "--upgrade", "/p.pid"]


def test_systemd_unit_keeps_the_logical_working_directory():
    service = Service(Layout("/srv/shop", "shop"), 2, ServiceMode.SYSTEMD)
    assert service.units() == ["shop@0.service", "shop@1.service"]
    assert service.pidfiles() == ["/srv/shop/shared/run/shop-0.pid",
                                  "/srv/shop/shared/run/shop-1.pid"]
    unit = service.unit_text("deploy")
    lines = unit.splitlines()
    assert "WorkingDirectory=/srv/shop/current" in lines
    assert "Environment=PWD=/srv/shop/current" in lines  # or USR2 would bring the old release
    assert "Type=notify" in lines and "NotifyAccess=all" in lines and "User=deploy" in lines
    exec_start = next(x for x in lines if x.startswith("ExecStart="))
    assert "--pid /srv/shop/shared/run/shop-%i.pid" in exec_start
    assert "--handoff /srv/shop/shared/run/shop.handoff.sock" in exec_start
    assert "--daemon" not in exec_start
    assert "ExecReload=/srv/shop/current/venv/bin/python -m polycorn.server.main --upgrade " \
           "/srv/shop/shared/run/shop-%i.pid" in lines
    assert "User=" not in service.unit_text("root")
    assert not any(x.startswith("TimeoutStopSec=") for x in lines)  # systemd's default
    assert "TimeoutStopSec=41" in service.unit_text("deploy", 40.5).splitlines()


def test_stop_timeout_leaves_room_for_the_window_and_the_drain():
    """systemctl stop sends TERM: the unit must not SIGKILL before the deregistration
    window and the graceful drain are over."""
    s = parse_settings({"service": "shop", "app": "shop.wsgi",
                        "server": {"graceful_timeout": 60},
                        "hosts": {"web1": {}, "web2": {"server": {"deregister_delay": 5}}}},
                       SOURCE)
    assert s.hosts["web1"].stop_timeout == 1.0 + 60 + 10  # polycorn's defaults fill in
    assert s.hosts["web2"].stop_timeout == 5 + 60 + 10


def test_release_config_file():
    s = parse_settings({"service": "shop", "app": "shop.wsgi", "health_path": "/up",
                        "cluster": {"redis": "redis://r:6379/0"},
                        "server": {"workers": 4, "bind": ["0.0.0.0:8000"]},
                        "hosts": {"web1": {"server": {"workers": 8}}}}, SOURCE)
    text = render_conf(s, s.hosts["web1"], "R7")
    namespace: dict = {}
    exec(compile(text, "polycorn.conf.py", "exec"), namespace)  # it is valid Python
    values = {k: v for k, v in namespace.items() if not k.startswith("__")}
    assert values == {"wsgi_app": "shop.wsgi", "proc_name": "shop", "health_check": "/up",
                      "redis": "redis://r:6379/0", "cluster": "shop",
                      "errorlog": "/srv/shop/shared/log/shop.log", "workers": 8,
                      "bind": ["0.0.0.0:8000"]}
    assert "release R7 of shop on web1" in text


# -- the gate's verdict ------------------------------------------------------------------


def node(release="B", state="ready", alive=True, node_id="n1"):
    return {"node_id": node_id, "release": release, "state": state, "alive": alive}


def seen(status=200, nodes=(), registry_error=None, masters=None):
    out = {"hostname": "web1", "http": {"status": status, "error": None},
           "masters": masters or {"/run/p.pid": 42}}
    out["registry"] = {"error": registry_error, "leader": "n1", "nodes": list(nodes)}
    return out


TWO_MASTERS = {"/run/p.pid": 42, "/run/p.pid.m0": 42, "/run/p.pid.m1": 43}


@pytest.mark.parametrize(("observed", "reason"), [
    (seen(nodes=[node()]), None),
    (seen(nodes=[node(), node(node_id="n0", alive=False, release="A")]), None),
    (seen(status=500, nodes=[node()]), "health probe: status 500"),
    (seen(nodes=[node(release="A")]), "is ready on release 'A', want ready on 'B'"),
    (seen(nodes=[node(state="booting")]), "is booting"),
    (seen(nodes=[]), "no live node of host 'web1'"),
    # --masters 2: one node in the registry (one agent per host), both masters alive
    (seen(nodes=[node()], masters=TWO_MASTERS), None),
    (seen(nodes=[node()], masters={**TWO_MASTERS, "/run/p.pid.m1": 0}),
     "no running master for /run/p.pid.m1"),
    (seen(registry_error="Redis unavailable: x"), "registry: Redis unavailable"),
])
def test_gate_verdict(observed, reason):
    verdict = judge(observed, "B")
    assert verdict is None if reason is None else reason in verdict


def test_gate_without_a_cluster_needs_only_the_probe():
    observed = {"hostname": "web1", "http": {"status": 204, "error": None}}
    assert judge(observed, "B") is None
    observed["http"] = {"status": None, "error": "ConnectionRefusedError: refused"}
    assert judge(observed, "B") == "health probe: ConnectionRefusedError: refused"


def test_service_down_names_the_pid_file_and_the_log():
    assert service_down(seen()) is None
    down = seen(masters={"/run/p.pid": 0})
    down["log_tail"] = ["worker failed to boot", "Shutting down"]
    assert service_down(down) == ("no running master for /run/p.pid "
                                  "(log: worker failed to boot | Shutting down)")


# -- release order -----------------------------------------------------------------------


def info(current, releases, in_use=()):
    return HostInfo("web1", "3.11.7", True, current,
                    tuple({"id": r, "created": t, "complete": c, "info": {}}
                          for r, t, c in releases), tuple(in_use), {}, False)


def test_previous_release_goes_by_creation_time_not_by_name():
    host = info("b", [("c", 1.0, True), ("a", 2.0, True), ("b", 3.0, True), ("d", 4.0, True)])
    assert host.release_ids() == ["c", "a", "b", "d"]
    assert host.previous_release() == "a"
    assert info("c", [("c", 1.0, True)]).previous_release() is None
    # an incomplete release (no virtualenv) is no rollback target
    assert info("b", [("x", 1.0, True), ("a", 2.0, False), ("b", 3.0, True)]
                ).previous_release() == "x"


def test_table_aligns_columns():
    assert table(("A", "LONG"), [["xyz", "1"], ["q", "free text"]]).splitlines() == [
        "A    LONG", "xyz  1", "q    free text"]


def test_the_example_settings_file_is_valid():
    example = Path(__file__).resolve().parents[2] / "deploy" / "deploy.example.toml"
    s = load_settings(example)
    assert (s.service, s.base, s.serial, s.keep_releases) == ("shop", "/srv/shop", "1", 5)
    assert s.hosts["web2"].server == {"workers": 8, "bind": ["0.0.0.0:8000"],
                                      "graceful_timeout": 30}
    assert (s.redis, s.cluster) == ("redis://10.0.0.5:6379/0", "shop")
