"""polycorn-ctl against real Redis (exit codes, events, redis-up/down) and the plug-in
as the server sees it (settings merged, no sidecar without --redis, no redis-py in the
master)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from polycorn.ha import events as ev
from polycorn.ha.cluster_state import Grant
from polycorn.ha.events import Event
from polycorn.ha.plugin import plugin
from polycorn.ha.registry import Departure, NodeInfo, NodeState
from polycorn.ha.settings import NODE_ID_ENV
from polycorn.ha.snapshot import Lease
from polycorn.server import proctitle
from polycorn.server.config.errors import ConfigError
from polycorn.server.config.loader import load_config
from support.procs import ROOT, alive, free_port, kill_all, wait_until
from test_agent import ctl, observer

# -- polycorn-ctl -------------------------------------------------------------------------


def test_unreachable_redis_is_one_line_exit_3():
    done = ctl("status", "--redis", f"redis://127.0.0.1:{free_port()}/0", "--cluster", "x")
    assert done.returncode == 3
    assert done.stderr.startswith("polycorn-ctl: cannot use Redis at redis://127.0.0.1:")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_the_console_script_resolves_to_the_ctl_package(capsys):
    # pyproject's `polycorn-ctl = polycorn.ha.ctl:main` survives ha/ctl/ being a package
    from importlib.metadata import entry_points
    script = next(e for e in entry_points(group="console_scripts") if e.name == "polycorn-ctl")
    assert script.value == "polycorn.ha.ctl:main"
    with pytest.raises(SystemExit) as exit_:
        script.load()(["--help"])
    assert exit_.value.code == 0 and "redis-up" in capsys.readouterr().out


def test_usage_errors_exit_2():
    env = {k: v for k, v in os.environ.items() if k != "POLYCORN_REDIS"}
    done = subprocess.run([sys.executable, "-m", "polycorn.ha.ctl", "status"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "pass --redis URL or set POLYCORN_REDIS" in done.stderr
    assert ctl("nodes", "--redis", "http://x/").returncode == 2
    assert ctl("bogus").returncode == 2


def test_empty_cluster_and_no_leader_exit_1(shared_redis, cluster_name):
    done = ctl("status", "--json", "--redis", shared_redis.url, "--cluster", cluster_name)
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"cluster": cluster_name, "leader": None, "epoch": None,
                                       "highest_epoch": 0, "nodes": [], "drained": [],
                                       "rollout": None}
    assert "has no live nodes" in done.stderr
    done = ctl("leader", "--redis", shared_redis.url, "--cluster", cluster_name)
    assert done.returncode == 1 and "has no leader" in done.stderr


def test_environment_supplies_redis_and_cluster(shared_redis, cluster_name):
    store = observer(shared_redis.url, cluster_name)
    store.acquire_lease("n9", 5000, "test")
    env = {**os.environ, "POLYCORN_REDIS": shared_redis.url, "POLYCORN_CLUSTER": cluster_name}
    done = subprocess.run([sys.executable, "-m", "polycorn.ha.ctl", "leader", "--json"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["leader"] == "n9"


def test_events_since_and_follow(shared_redis, cluster_name):
    store = observer(shared_redis.url, cluster_name)
    for i in range(3):
        store.emit(Event("upgrade_started", f"n{i}", 0, f"step {i}"))
    args = ["--redis", shared_redis.url, "--cluster", cluster_name]
    latest = ctl("events", "--count", "2", "--json", *args)
    lines = [json.loads(x) for x in latest.stdout.splitlines()]
    assert [x["node"] for x in lines] == ["n1", "n2"] and latest.returncode == 0
    since = ctl("events", "--since", lines[0]["id"], *args).stdout.splitlines()
    assert len(since) == 1 and since[0].endswith("upgrade_started n2: step 2")
    assert len(ctl("events", "--since", "1h", *args).stdout.splitlines()) == 3
    assert ctl("events", "--since", "yesterday", *args).returncode == 2

    follower = subprocess.Popen([sys.executable, "-m", "polycorn.ha.ctl", "events", "--follow",
                                 "--count", "0", *args], stdout=subprocess.PIPE, text=True)
    try:
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(follower.stdout.readline()))
        reader.start()
        # An event emitted before the follower reached its first read is (rightly) not
        # new to it: keep emitting until one arrives, however slow its start-up.
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            store.emit(Event("upgrade_promoted", "n7", 0, "followed"))
            reader.join(0.3)
        assert got and got[0].rstrip().endswith("upgrade_promoted n7: followed")
    finally:
        follower.kill()
        follower.wait(5)


def test_redis_up_and_down(tmp_path):
    directory = tmp_path / "redis"
    port = free_port()
    up = ctl("redis-up", "--port", str(port), "--dir", str(directory))
    pid = int((directory / "redis.pid").read_text()) if (directory / "redis.pid").exists() else 0
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == f"redis://127.0.0.1:{port}/0"
        assert alive(pid)
        again = ctl("redis-up", "--dir", str(directory))  # idempotent: same server
        assert again.stdout.strip() == up.stdout.strip()
        status = ctl("status", "--redis", up.stdout.strip(), "--cluster", "empty")
        assert status.returncode == 1  # reachable, nothing registered
        down = ctl("redis-down", "--dir", str(directory))
        assert down.returncode == 0 and down.stdout.strip() == f"stopped redis-server (pid {pid})"
        wait_until(lambda: not alive(pid), 5, what="redis-server to exit")
        assert ctl("redis-down", "--dir", str(directory)).returncode == 4
    finally:
        if pid and alive(pid):
            os.kill(pid, 9)


@pytest.mark.parametrize("xdg", [True, False])
def test_redis_up_keeps_its_state_out_of_the_current_directory(tmp_path, xdg):
    """Run from a checkout, redis-up must leave nothing there: its data goes to the
    XDG state directory ($XDG_STATE_HOME, else ~/.local/state)."""
    cwd, home = tmp_path / "checkout", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    env["HOME"] = str(home)
    state = home / ".local" / "state"
    if xdg:
        state = tmp_path / "xdg-state"
        env["XDG_STATE_HOME"] = str(state)

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "polycorn.ha.ctl", *argv], cwd=cwd,
                              env=env, capture_output=True, text=True, timeout=30)

    directory = state / "polycorn" / "redis"
    up = run("redis-up", "--port", str(free_port()))
    # Wherever it went (also where it must not go), so that the server is stopped.
    pids = [int(p.read_text()) for p in tmp_path.rglob("redis.pid")]
    pid = pids[0] if pids else 0
    try:
        assert up.returncode == 0, up.stderr
        assert (directory / "redis.url").read_text().strip() == up.stdout.strip()
        assert list(cwd.iterdir()) == []
        down = run("redis-down")
        assert down.returncode == 0 and down.stdout.strip() == f"stopped redis-server (pid {pid})"
        wait_until(lambda: not alive(pid), 5, what="redis-server to exit")
        assert list(cwd.iterdir()) == []
    finally:
        kill_all([p for p in pids if alive(p)])


def test_redis_up_without_redis_server_says_what_to_install(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no redis-server anywhere on PATH
    done = subprocess.run([sys.executable, "-m", "polycorn.ha.ctl", "redis-up", "--dir",
                           str(tmp_path / "r")], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 4
    assert "redis-server not found on PATH: install it (Debian/Ubuntu: apt-get install " \
        "redis-server" in done.stderr


# -- the plug-in as the server loads it --------------------------------------------------


def load(*argv: str):
    return load_config([*argv, "hello:application"], {}, plugins=[plugin])


def test_settings_merge_into_the_command_line():
    cfg = load("--redis", "sentinel://127.0.0.1:26379/mymaster", "--cluster", "prod",
               "--node-id", "web-1", "--advertise", "10.0.0.5:8000", "--release", "v42",
               "--node-ttl", "5", "--leader-lease", "8", "--leader-step-down", "5",
               "--redis-retries", "1")
    env: dict[str, str] = {}
    from polycorn.ha.settings import cluster_config
    config = cluster_config(cfg, env)
    assert (config.cluster, config.node_id, config.release, config.advertise) == \
        ("prod", "web-1", "v42", "10.0.0.5:8000")
    assert config.target.service == "mymaster"
    assert (config.timing.node_ttl, config.timing.lease, config.timing.step_down) == (5, 8, 5)
    assert env[NODE_ID_ENV] == "web-1"


def test_no_redis_no_sidecar():
    assert plugin.sidecars(load()) == []


@pytest.mark.skipif(not proctitle.available(), reason="setproctitle (the proctitle extra) is missing")
def test_the_cluster_agent_is_titled_agent_and_n_is_not_the_node_id(polycorn, shared_redis,
                                                                      cluster_name):
    port = free_port()
    server = polycorn("-n", "shop", "-w", "2", "-b", f"127.0.0.1:{port}", "--redis",
                      shared_redis.url, "--cluster", cluster_name, "--node-id", "web-1",
                      "testapp:application", wait_port=port, cwd=ROOT / "tests" / "apps")

    def titles():
        return sorted(proctitle.parse(Path(f"/proc/{p}/cmdline").read_bytes()) or ("?", "?")
                      for p in [server.pid, *server.workers()])

    wait_until(lambda: titles() == [("agent", "shop"), ("master", "shop"), ("worker", "shop"),
                                    ("worker", "shop")], 15, what="the titles of all four")
    status = wait_until(lambda: (s := json.loads(ctl("status", "--json", "--redis",
                                                     shared_redis.url, "--cluster",
                                                     cluster_name).stdout or "{}"))
                        .get("nodes") and s, 15, what="the node in the registry")
    assert [n["node_id"] for n in status["nodes"]] == ["web-1"]  # --node-id, not -n


def test_generated_node_id_survives_a_reexec(monkeypatch):
    monkeypatch.delenv(NODE_ID_ENV, raising=False)
    first = plugin.sidecars(load("--redis", "redis://127.0.0.1:1/0"))[0]
    node_id = first.target.args[0].node_id
    assert os.environ[NODE_ID_ENV] == node_id  # inherited by the USR2 re-exec
    again = plugin.sidecars(load("--redis", "redis://127.0.0.1:1/0"))[0]
    assert again.target.args[0].node_id == node_id


@pytest.mark.parametrize("argv, message", [
    (["--leader-step-down", "7"], "must be shorter than the lease"),
    (["--redis-read-timeout", "2"], "must be <= step-down deadline"),
])
def test_bad_timer_combinations_are_config_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        plugin.sidecars(load("--redis", "redis://127.0.0.1:1/0", *argv))


@pytest.mark.parametrize("argv", [["--redis", "ftp://x"], ["--node-id", "a b"],
                                  ["--advertise", "nohost"], ["--node-ttl", "-1"]])
def test_bad_values_are_rejected_at_load(argv):
    with pytest.raises(ConfigError):
        load(*argv)


def test_plugin_import_does_not_load_redis_py():
    code = ("import sys, polycorn.ha.plugin as p; from polycorn.server.plugins import discover;"
            "assert any(type(x).__name__ == 'ClusterPlugin' for x in discover());"
            "print('redis' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert done.stdout.strip() == "False", done.stderr


# -- requests to the leader, and what status shows of the duties ----------------------------


def ready_node(store, node_id: str, **kw) -> int:
    info = NodeInfo(node_id, "h", "127.0.0.1:1", 7, "r1", NodeState.READY, 2, 2, 4, 2, **kw)
    inc = store.register(info, 60_000)
    store.heartbeat(info, inc, 60_000)
    return inc


def test_status_shows_dead_nodes_grants_and_drain_requests(shared_redis, cluster_name):
    store = observer(shared_redis.url, cluster_name)
    inc = {n: ready_node(store, n) for n in ("n1", "n2")}
    ready_node(store, "n3")
    store.deregister("n3", 1, ev.NODE_GONE, "master exited", Departure.LOST)
    lease = Lease("n1", store.acquire_lease("n1", 60_000, "test"))
    assert store.declare_dead(lease, "n3", 3000, "its agent reported its master gone")
    store.grant_workers(lease, "n2", Grant(inc["n2"], 3, 1, 0, ("n3",)), None, "", "")
    store.set_drained("n1", True, "test")
    args = ["--redis", shared_redis.url, "--cluster", cluster_name, "--node-ttl", "60"]
    status = json.loads(ctl("status", "--json", *args).stdout)
    by_id = {n["node_id"]: n for n in status["nodes"]}
    assert (by_id["n2"]["extra_workers"], by_id["n2"]["covering"]) == (1, ["n3"])
    assert by_id["n3"]["state"] == "dead" and by_id["n3"]["declared_by"] == "n1"
    assert by_id["n3"]["workers_configured"] == 2 and by_id["n1"]["drain_requested"]
    assert status["drained"] == ["n1"] and status["rollout"] is None
    text = ctl("status", *args).stdout
    assert "2 of 3 nodes alive" in text
    assert "+1 for n3" in text and "drain requested" in text
    assert "declared dead at epoch 1: its agent reported its master gone" in text
    assert "2/2/4" in text  # ready now / configured / ceiling

    assert ctl("forget", "n2", *args).returncode == 2  # alive: refused
    done = ctl("forget", "n3", *args)
    assert done.returncode == 0 and "no longer owed" in done.stdout
    assert ctl("forget", "n3", *args).returncode == 1
    assert "n3" not in [n["node_id"] for n in json.loads(
        ctl("status", "--json", *args).stdout)["nodes"]]


def test_upgrade_requests_one_rollout_at_a_time(shared_redis, cluster_name):
    store = observer(shared_redis.url, cluster_name)
    for n in ("n1", "n2", "n3"):
        ready_node(store, n)
    args = ["--redis", shared_redis.url, "--cluster", cluster_name, "--node-ttl", "60"]
    assert ctl("rollout", *args).returncode == 1  # none yet
    assert ctl("upgrade", "--nodes", "n1,nope", *args).returncode == 2
    assert ctl("upgrade", "--max-unavailable", "0", *args).returncode == 2
    done = ctl("upgrade", "--nodes", "n3,n1", "--max-unavailable", "2", *args)
    assert done.returncode == 0, done.stderr
    assert "upgrading 2 nodes (n3, n1), at most 2 at a time" in done.stdout
    busy = ctl("upgrade", *args)
    assert busy.returncode == 6 and "is already running" in busy.stderr
    shown = json.loads(ctl("rollout", "--json", *args).stdout)
    assert [n["node_id"] for n in shown["nodes"]] == ["n3", "n1"]
    assert shown["state"] == "running" and shown["max_unavailable"] == 2
    assert json.loads(ctl("status", "--json", *args).stdout)["rollout"]["id"] == shown["id"]
    assert "rollout " + shown["id"] + " running: 0 of 2 nodes done" in \
        ctl("status", *args).stdout
    aborted = ctl("upgrade", "--abort", *args)
    assert aborted.returncode == 0 and shown["id"] in aborted.stdout
    assert ctl("upgrade", "--abort", *args).returncode == 1
    assert json.loads(ctl("rollout", "--json", *args).stdout)["state"] == "aborted"


def test_drain_of_a_node_nobody_carries_out_exits_5(shared_redis, cluster_name):
    store = observer(shared_redis.url, cluster_name)
    ready_node(store, "n1")  # registered, but no leader runs: the request is only recorded
    args = ["--redis", shared_redis.url, "--cluster", cluster_name, "--node-ttl", "60"]
    done = ctl("drain", "n1", "--timeout", "0.5", *args)
    assert done.returncode == 5 and "still reports ready after 0.5s" in done.stderr
    assert store.cluster_state(60_000).drained == {"n1"}
    assert ctl("undrain", "n1", "--no-wait", *args).returncode == 0
    assert store.cluster_state(60_000).drained == frozenset()


def test_undrain_withdraws_the_request_of_a_node_that_is_down(shared_redis, cluster_name):
    """chaos --random 4: a node drained and then killed could not be undrained (exit 2, "no
    live node"), so it came back drained and the cluster stayed short of capacity."""
    store = observer(shared_redis.url, cluster_name)
    ready_node(store, "n1")
    ready_node(store, "n2")
    args = ["--redis", shared_redis.url, "--cluster", cluster_name, "--node-ttl", "60"]
    assert ctl("drain", "n2", "--no-wait", *args).returncode == 0
    store.deregister("n2", 1, ev.NODE_GONE, "master exited", Departure.LOST)
    assert ctl("drain", "n2", "--no-wait", *args).returncode == 2  # a drain needs it alive
    done = ctl("undrain", "n2", *args)  # waits for nothing: there is no node to report
    assert done.returncode == 0, done.stderr
    assert "n2 is not alive: its drain request is withdrawn" in done.stdout
    assert store.cluster_state(60_000).drained == frozenset()
    gone = ctl("undrain", "n2", *args)  # nothing left to withdraw: the usage error as before
    assert gone.returncode == 2 and "no live node 'n2'" in gone.stderr
    assert ctl("undrain", "nope", *args).returncode == 2


def test_a_drain_request_lost_in_a_failover_is_written_again(shared_redis, cluster_name):
    """A request Redis acknowledged can vanish when a Sentinel failover promotes a replica
    that never received it (chaos --random 1: an undrain lost so left a node draining)."""
    store = observer(shared_redis.url, cluster_name)
    ready_node(store, "n1")
    args = ["--redis", shared_redis.url, "--cluster", cluster_name, "--node-ttl", "60"]
    proc = subprocess.Popen([sys.executable, "-m", "polycorn.ha.ctl", "drain", "n1",
                             "--timeout", "3", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: store.cluster_state(60_000).drained == {"n1"}, 10,
                   what="the drain request")
        store.set_drained("n1", False, "the failover lost it")  # as a promoted replica
        _out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert "request of n1 was lost (a Redis failover?); written again" in err
    assert store.cluster_state(60_000).drained == {"n1"}
    assert proc.returncode == 5  # no leader carries it out here
