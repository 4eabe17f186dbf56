"""The front's smaller parts: the generated haproxy.cfg (checked by the real `haproxy -c`),
the runtime API client against a real HAProxy, the parsers of HAProxy's answers, the
resolver, the shared Redis-health guard, the registry-to-front mapping and the status
table."""

from __future__ import annotations

import socket
import subprocess

import pytest
from frontsupport import BACKEND, HAPROXY, HAProxyProc, ctl_argv
from polycorn.ha.guard import HoldCause, RedisWatch, judge_lapses
from polycorn.ha.haproxy import config as cfg
from polycorn.ha.haproxy.nodes import front_nodes
from polycorn.ha.haproxy.reconcile import FrontNode, Presence
from polycorn.ha.haproxy.resolve import AddressError, Resolver, split_address
from polycorn.ha.haproxy.runtime import RuntimeApiError
from polycorn.ha.haproxy.servers import (
    Admin,
    ServerState,
    StateFormatError,
    parse_info,
    parse_servers_state,
)
from polycorn.ha.haproxy.status import status_rows, status_table
from polycorn.ha.memory_store import MemoryStore
from polycorn.ha.registry import NodeInfo, NodeState
from polycorn.ha.snapshot import Lease

# -- the config -----------------------------------------------------------------------------


def haproxy_check(text: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    return subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("extra", [
    [],
    ["--bind", "127.0.0.1:8080", "--slots", "1", "--backend", "shop_web"],
    ["--bind", "[::1]:8443", "--slots", "200", "--health-path", "/-/ready"],
])
def test_haproxy_accepts_every_config_polycorn_ctl_prints(tmp_path, extra):
    sock = tmp_path / "a.sock"
    out = subprocess.run(ctl_argv("haproxy", "config", "--cluster", "shop", "--redis",
                                  "redis://127.0.0.1:6379/0", "--runtime-api",
                                  f"unix:{sock}", *extra),
                         capture_output=True, text=True, check=True).stdout
    checked = haproxy_check(out, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Configuration file is valid" in checked.stdout


def test_the_config_holds_what_a_lost_host_costs_nothing_with():
    text = cfg.render(cfg.FrontOptions("shop", "redis://r:6379/0", slots=5,
                                       runtime_api="unix:/run/haproxy/shop.sock"))
    lines = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    for expected in (
        "stats socket /run/haproxy/shop.sock mode 600 level admin expose-fd listeners",
        "server-state-file /run/haproxy/shop.state",
        "load-server-state-from-file global",
        "option forwardfor",
        "timeout connect 250ms",
        "retries 3",
        "option redispatch 1",
        "retry-on conn-failure empty-response",
        "acl idempotent method GET HEAD OPTIONS TRACE PUT DELETE",
        "http-request disable-l7-retry if !idempotent",
        "option httpchk GET /health",
        "server-template s 1-5 127.0.0.1:1 check disabled",
    ):
        assert expected in lines, expected
    assert any(line.startswith("default-server inter 250ms fastinter 100ms") and
               line.endswith("fall 2 rise 2") for line in lines)
    # Never HAProxy's own: it closes requests still connecting to a killed node (hung.py).
    assert "on-marked-down" not in "\n".join(lines)
    assert "POST" not in " ".join(line for line in lines if "idempotent" in line)


def test_config_defaults_agree_with_the_sync_and_hide_the_redis_password():
    out = subprocess.run(ctl_argv("haproxy", "config", "--cluster", "shop", "--redis",
                                  "redis://:hunter2@10.0.0.1:6379/0"),
                         capture_output=True, text=True, check=True).stdout
    assert "stats socket /run/haproxy/polycorn-shop.sock " in out
    assert "server-state-file /run/haproxy/polycorn-shop.state" in out
    assert "hunter2" not in out and "redis://:***@10.0.0.1:6379/0" in out


@pytest.mark.parametrize("args, message", [
    (["--bind", "8080"], "--bind '8080': want HOST:PORT"),
    (["--slots", "0"], "--slots 0: want 1 to 4096"),
    (["--health-path", "health"], "--health-path 'health'"),
    (["--runtime-api", "/tmp/x.sock"], "want unix:PATH"),
    (["--backend", "a b"], "--backend 'a b'"),
])
def test_config_refuses_bad_options_with_exit_2(args, message):
    done = subprocess.run(ctl_argv("haproxy", "config", "--cluster", "c", *args),
                          capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_the_worst_detection_time_of_a_hung_node_is_stated():
    assert cfg.Checks().worst_detection_ms() == 250 + 2 * 400 + 100


# -- the runtime API against a real HAProxy -----------------------------------------------


@pytest.fixture
def haproxy(tmp_path):
    h = HAProxyProc(tmp_path, "redis://127.0.0.1:1/0", "parts", slots=2)
    yield h
    h.stop()


def test_runtime_api_reads_and_sets_a_real_haproxy(haproxy):
    api = haproxy.api
    servers = parse_servers_state(api.show_servers_state(BACKEND), BACKEND)
    assert servers == [ServerState("s1", "127.0.0.1", 1, Admin.MAINT, 1),
                       ServerState("s2", "127.0.0.1", 1, Admin.MAINT, 1)]
    api.set_command(f"set server {BACKEND}/s2 addr 127.0.0.2 port 9")
    api.set_command(f"set server {BACKEND}/s2 weight 7")
    api.set_command(f"set server {BACKEND}/s2 state drain")
    s2 = haproxy.servers()["s2"]
    assert (s2.addr, s2.port, s2.weight, s2.admin) == ("127.0.0.2", 9, 7, Admin.DRAIN)
    api.set_command(f"set server {BACKEND}/s2 state ready")
    assert haproxy.servers()["s2"].admin is Admin.READY  # CMAINT alone is not maint
    assert int(parse_info(api.show_info())["Pid"]) == haproxy.proc.pid


def test_runtime_api_refusals_raise_and_one_command_goes_per_call(haproxy):
    api = haproxy.api
    with pytest.raises(RuntimeApiError, match="No such server"):
        api.set_command(f"set server {BACKEND}/s9 state ready")
    with pytest.raises(RuntimeApiError):
        api.set_command(f"set server {BACKEND}/s1 addr not-an-ip port 1")
    with pytest.raises(ValueError):
        api.command("show info; show stat")
    with pytest.raises(StateFormatError):
        parse_servers_state(api.show_servers_state("nope"), "nope")


def test_runtime_api_unreachable_is_one_error_type(tmp_path):
    from polycorn.ha.haproxy.runtime import RuntimeApi

    with pytest.raises(RuntimeApiError, match="FileNotFoundError"):
        RuntimeApi(str(tmp_path / "none.sock")).show_info()


# -- parsers --------------------------------------------------------------------------------

STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 polycorn 1 s1 10.0.0.1 2 4 3 1 0 1 0 2 6 0 0 0 - 8001 - 0 0 - - 0
3 polycorn 2 s2 127.0.0.1 0 5 1 1 5 1 0 0 14 0 0 0 - 1 - 0 0 - - 0
3 polycorn 3 s3 10.0.0.3 0 8 2 1 5 1 0 0 14 0 0 0 - 8003 - 0 0 - - 0
4 other 1 s1 10.9.9.9 2 0 1 1 5 1 0 0 14 0 0 0 - 80 - 0 0 - - 0
"""


def test_show_servers_state_is_read_per_backend_with_admin_states_decoded():
    assert parse_servers_state(STATE, "polycorn") == [
        ServerState("s1", "10.0.0.1", 8001, Admin.READY, 3, "up"),
        ServerState("s2", "127.0.0.1", 1, Admin.MAINT, 1, "down"),
        ServerState("s3", "10.0.0.3", 8003, Admin.DRAIN, 2, "down")]
    assert [s.checked for s in parse_servers_state(STATE, "polycorn")] == [True, True, True]
    assert [s.name for s in parse_servers_state(STATE, "other")] == ["s1"]
    with pytest.raises(StateFormatError):
        parse_servers_state("Can't find backend.\n", "x")


def test_admin_masks():
    assert Admin.from_mask(0) is Admin.READY
    assert Admin.from_mask(0x04) is Admin.READY  # the config's "disabled", left after ready
    assert Admin.from_mask(0x05) is Admin.MAINT
    assert Admin.from_mask(0x20) is Admin.MAINT  # address resolution failed
    assert Admin.from_mask(0x08) is Admin.DRAIN


# -- resolving advertised addresses -------------------------------------------------------------


def test_split_address():
    assert split_address("web-1:8000") == ("web-1", 8000)
    assert split_address("[::1]:8000") == ("::1", 8000)
    for bad in ("unix:/run/app.sock", "web-1", "web-1:http", ":80", "h:70000"):
        with pytest.raises(AddressError):
            split_address(bad)


def test_resolver_caches_keeps_the_last_address_through_a_failure_and_says_why_not():
    clock = [0.0]
    answers: list = [[(socket.AF_INET6, 1, 6, "", ("fd00::1", 80, 0, 0)),
                      (socket.AF_INET, 1, 6, "", ("10.0.0.7", 80))]]
    calls = []

    def lookup(host, port, type):
        calls.append(host)
        answer = answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    r = Resolver(ttl=30, clock=lambda: clock[0], lookup=lookup)
    assert r.resolve("web-1:8000") == ("10.0.0.7", 8000)  # IPv4 preferred
    assert r.resolve("web-1:9000") == ("10.0.0.7", 9000) and calls == ["web-1"]
    assert r.resolve("10.1.2.3:80") == ("10.1.2.3", 80) and calls == ["web-1"]
    clock[0] = 31
    answers[0] = socket.gaierror("temporary failure")
    assert r.resolve("web-1:8000") == ("10.0.0.7", 8000)  # stale beats nothing
    with pytest.raises(AddressError, match="'web-2' does not resolve"):
        r.resolve("web-2:8000")


# -- the shared guard (also the leader's: tests/ha/test_duties.py) --------------------------------


def test_guard_believes_a_minority_holds_a_majority_until_it_lasts():
    kw = dict(stable_for=float("inf"), changed_ago=float("inf"), grace=7.0)
    assert judge_lapses({"n3": 3100}, 3, 3000, **kw) == (["n3"], None)
    believed, hold = judge_lapses({"n2": 4000, "n3": 4000}, 3, 3000, **kw)
    assert believed == [] and hold.cause is HoldCause.MASS_LAPSE
    assert judge_lapses({"n2": 4000, "n3": 9000}, 3, 3000, **kw) == (["n3"], None)
    assert judge_lapses({"n3": 9000}, 3, 3000, **{**kw, "stable_for": 1.0})[1].cause \
        is HoldCause.REDIS_CALLS
    assert judge_lapses({"n3": 9000}, 3, 3000, **{**kw, "changed_ago": 1.0})[1].cause \
        is HoldCause.REDIS_CHANGED


def test_redis_watch_notes_a_new_run_id_but_not_the_first():
    w = RedisWatch()
    w.see("a", 10.0)
    assert w.changed_ago(11.0) == float("inf")
    w.see("a", 12.0)
    w.see("b", 13.0)
    assert w.changed_ago(15.0) == 2.0


# -- the registry as the front sees it, and the status table ------------------------------------


def test_front_nodes_from_a_view():
    now = [1_000_000]
    store = MemoryStore(clock=lambda: now[0])

    def info(node_id, address, state=NodeState.READY):
        return NodeInfo(node_id, "h", address, 1, "r", state, 2, 2, 4, 2)

    store.register(info("n1", "127.0.0.1:8001"), 3000)
    store.register(info("n2", "127.0.0.1:8002", NodeState.BOOTING), 3000)
    store.register(info("n3", "unix:/x.sock"), 3000)
    store.register(info("n4", "127.0.0.1:8004"), 3000)
    store.set_drained("n1", True, "test")
    now[0] += 1000
    store.heartbeat(info("n1", "127.0.0.1:8001"), 1, 3000)
    store.heartbeat(info("n2", "127.0.0.1:8002", NodeState.BOOTING), 1, 3000)
    store.heartbeat(info("n3", "unix:/x.sock"), 1, 3000)
    now[0] += 2500  # n4 silent for 3.5 s
    lease = Lease("n1", store.acquire_lease("n1", 6000, "test"))
    store.deregister("n5", 1, "node_gone", "x")  # unknown: ignored
    nodes, problems = front_nodes(store.cluster_state(3000), Resolver().resolve)
    by_id = {n.node_id: n for n in nodes}
    assert by_id["n1"] == FrontNode("n1", ("127.0.0.1", 8001), Presence.READY, 2, True, 0)
    assert by_id["n2"].presence is Presence.BOOTING
    assert by_id["n3"].endpoint is None and "Unix socket" in problems["n3"]
    assert by_id["n4"].presence is Presence.LAPSED and by_id["n4"].silent_ms == 3500
    assert store.declare_dead(lease, "n4", 3000, "silent")
    nodes, _ = front_nodes(store.cluster_state(3000), Resolver().resolve)
    assert FrontNode("n4", None, Presence.DEAD) in nodes


def test_status_puts_each_slot_beside_the_node_at_its_address():
    servers = [ServerState("s1", "10.0.0.1", 8001, Admin.READY, 2, "up"),
               ServerState("s2", "10.0.0.2", 8002, Admin.MAINT, 2, "down"),
               ServerState("s3", "127.0.0.1", 1, Admin.MAINT, 1, "down")]
    stats = {"s1": {"status": "UP", "check_status": "L7OK", "check_duration": "1"},
             "s2": {"status": "MAINT", "check_status": "", "check_duration": ""}}
    nodes = [FrontNode("n1", ("10.0.0.1", 8001), Presence.READY, 2),
             FrontNode("n2", ("10.0.0.2", 8002), Presence.READY, 2),
             FrontNode("n3", ("10.0.0.3", 8003), Presence.BOOTING, 0)]
    rows = status_rows(servers, stats, nodes)
    assert [(r["slot"], r["node"], r["in_step"]) for r in rows] == [
        ("s1", "n1", True), ("s2", "n2", False), (None, "n3", True)]
    table = status_table(rows)
    assert table[0].split() == ["SLOT", "ADDRESS", "HAPROXY", "WEIGHT", "CHECK", "NODE",
                                "REGISTRY", "WORKERS"]
    assert table[1].split() == ["s1", "10.0.0.1:8001", "UP", "2", "L7OK", "1ms", "n1",
                                "ready", "2"]
    assert table[2].endswith("(out of step)")


def test_status_gives_the_last_check_result_while_the_next_check_runs():
    """HAProxy says "* L7OK" while a check is in progress (seen under load, where it
    failed test_kill_9_of_every_process_of_a_node_fails_no_request's status check)."""
    servers = [ServerState("s1", "10.0.0.1", 8001, Admin.READY, 2, "up")]
    stats = {"s1": {"status": "UP", "check_status": "* L7OK", "check_duration": "1"}}
    nodes = [FrontNode("n1", ("10.0.0.1", 8001), Presence.READY, 2)]
    [row] = status_rows(servers, stats, nodes)
    assert (row["check"], row["check_running"]) == ("L7OK", True)
    assert status_table([row])[1].split()[4] == "L7OK"
