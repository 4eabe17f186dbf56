"""Hosts with their own network (root only): namespaces joined by a bridge, cuts both ways
and one way, random loss, and a cleanup that leaves no namespace, link or rule behind.

Traffic runs only between the namespaces each test makes; each end is a thread of this
process moved into its host's namespace (setns is per thread)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from polycorn.ha.process_tracker import ProcessTracker
from support.procs import sigint_by_default

from loadtests import netns

pytestmark = pytest.mark.skipif(netns.unavailable_reason() is not None,
                                reason=f"hosts with their own network: "
                                       f"{netns.unavailable_reason()}")
PORT = 7000


def in_host(network: netns.Network, host: str, action):
    """Run `action()` on a thread that lives in the host's namespace; its result."""
    box: dict = {}

    def run():
        try:
            network.enter(host)
            box["value"] = action()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def tcp_server(network, host, address) -> socket.socket:
    return in_host(network, host, lambda: socket.create_server((address, PORT)))


def connects(network, host, address, timeout=0.5) -> bool:
    def attempt():
        try:
            with socket.create_connection((address, PORT), timeout=timeout):
                return True
        except OSError:
            return False
    return in_host(network, host, attempt)


@pytest.fixture
def network():
    net = netns.Network(uuid.uuid4().hex[:4]).start()
    try:
        yield net
    finally:
        assert net.close() == []


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def test_hosts_reach_each_other_and_a_cut_separates_them_both_ways(network):
    a, b = network.add_host("a"), network.add_host("b")
    assert a.startswith("10.213.0.") and a != b
    server = tcp_server(network, "b", b)
    try:
        assert connects(network, "a", b)
        network.cut("a", "cut1", [b])
        assert not connects(network, "a", b)
        assert "pcn_cut1" in network.rules("a")
        network.heal("a", "cut1")
        assert "pcn_cut1" not in network.rules("a")
        assert connects(network, "a", b)
    finally:
        server.close()
    # Nothing of it in the machine's own namespace.
    assert not any(name.startswith(("v-", "br0")) or "pcn" in name for name in root_links())


def test_a_one_way_cut_drops_only_what_the_host_sends(network):
    a, b = network.add_host("a"), network.add_host("b")
    network.cut("a", "oneway", [b], inbound=False)
    rules = network.rules("a")
    assert "hook output" in rules and "hook input" not in rules

    def receive_one():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((a, PORT))
        sock.settimeout(2)
        return sock

    inbox = in_host(network, "a", receive_one)
    try:
        # b -> a still arrives; a -> b does not.
        in_host(network, "b", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                .sendto(b"hello", (a, PORT)))
        assert inbox.recv(16) == b"hello"
        server = tcp_server(network, "b", b)
        try:
            assert not connects(network, "a", b)
        finally:
            server.close()
    finally:
        inbox.close()


def test_random_loss_drops_a_share_of_the_packets(network):
    network.add_host("a")
    b = network.add_host("b")
    network.lose("a", "loss", 50)
    inbox = in_host(network, "b", lambda: _udp_bound(b))
    try:
        def send_many():
            out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for i in range(400):
                try:
                    out.sendto(str(i).encode(), (b, PORT))
                except PermissionError:
                    pass  # dropped on the way out: the output chain says EPERM
            out.close()
        in_host(network, "a", send_many)
        got = 0
        inbox.settimeout(0.5)
        while True:
            try:
                inbox.recv(16)
                got += 1
            except TimeoutError:
                break
    finally:
        inbox.close()
    # Binomial(400, 0.5): 200 +- 10; far from 0 and 400 with any seed.
    assert 120 <= got <= 280, got


def _udp_bound(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, PORT))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


def test_cleanup_removes_every_namespace_link_and_rule():
    before = root_links()
    net = netns.Network(uuid.uuid4().hex[:4]).start()
    try:
        for host in ("n1", "n2", "redis", "front"):
            net.add_host(host)
        net.cut("n1", "c", [net.addresses["redis"]])
        net.lose("n2", "l", 10)
        assert len(netns.namespaces(net.prefix)) == 5
    finally:
        assert net.close() == []
    assert netns.namespaces(net.prefix) == []
    assert root_links() == before
    assert not any(name.startswith(net.prefix) for name in os.listdir("/run/netns"))


# -- the chaos runner with --netns ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def chaos_argv(out, *args: str) -> list[str]:
    return [sys.executable, "-m", "loadtests.chaos", "--out", str(out), "--netns", "--no-plot",
            *args]


def test_ctrl_c_of_a_netns_run_leaves_no_namespace_or_process(tmp_path):
    out = tmp_path / "int"
    before = set(netns.namespaces())
    proc = subprocess.Popen(chaos_argv(out, "--duration", "120", "--nodes", "2", "--users", "2",
                                       "--rate", "5"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=sigint_by_default)
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("load:") or not line:
                break
        assert lines[-1].startswith("load:"), "".join(lines)
        assert "network: namespaces pcn-" in "".join(lines)
        made = set(netns.namespaces()) - before
        assert len(made) >= 5  # hub, ctl, redis-a, n1, n2
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
        assert proc.returncode == 130, rest
        assert not (set(netns.namespaces()) & made)
        assert not ProcessTracker(out / "run").sweep()
    finally:
        proc.kill()
        proc.wait()
        ProcessTracker(out / "run").kill_all()


@pytest.mark.slow
def test_partitions_behind_the_front_lose_nothing_and_hold_every_invariant(tmp_path):
    out = tmp_path / "cuts"
    done = subprocess.run(chaos_argv(
        out, "--duration", "32", "--front", "haproxy", "--users", "4", "--rate", "20",
        "--fault", "6:cut-redis:n1:duration=4", "--fault", "12:cut-front:n2:duration=3",
        "--fault", "17:lossy-node:n3:duration=3", "--fault", "21:cut-redis-oneway:n2:duration=3"),
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    report = json.loads((out / "report.json").read_text())
    assert [f["outcome"] for f in report["faults"]] == ["done"] * 4, done.stdout
    # Redis is never the data path; HAProxy retries a connection the cut node drops.
    assert report["totals"]["failed"] == 0, done.stdout
    assert all(i["held"] for i in report["invariants"]), report["invariants"]
    assert "namespaces" in next(i for i in report["invariants"]
                                if i["name"] == "nothing_left_behind")["evidence"]
    assert done.returncode == 0, done.stdout[-2000:]


def test_a_redirect_puts_a_transparent_latency_proxy_on_a_hosts_path(network, tmp_path):
    """slow-redis and slow-front with --netns: host a keeps dialing b's real address; an
    nftables redirect in a sends it to a transparent proxy there, whose own upstream
    connection (marked) passes; the delay it adds is the one set at run time."""
    import time

    from loadtests.latency_proxy import DEFAULT_MARK, ProxyError, control

    a, b = network.add_host("a"), network.add_host("b")
    server = tcp_server(network, "b", b)
    peers: list = []

    def echo() -> None:
        while True:
            try:
                conn, peer = server.accept()
            except OSError:
                return
            peers.append(peer[0])
            with conn:
                while data := conn.recv(100):
                    conn.sendall(data)
    threading.Thread(target=echo, daemon=True).start()
    ctl = tmp_path / "ctl.sock"
    proxy = subprocess.Popen([*network.wrap("a"), sys.executable, "-m", "loadtests.latency_proxy",
                              "--listen", "127.0.0.1:16390", "--transparent", "--control",
                              str(ctl)], cwd=Path(__file__).resolve().parents[2],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                control(ctl, "status")
                break
            except ProxyError:
                time.sleep(0.05)
        network.redirect("a", "lat1", [b], 16390, DEFAULT_MARK)
        control(ctl, "set", up_ms=150, down_ms=150)

        def round_trip() -> float:
            with socket.create_connection((b, PORT), timeout=5) as sock:
                start = time.monotonic()
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"
                return time.monotonic() - start
        slow = in_host(network, "a", round_trip)
        assert 0.3 <= slow < 1.3
        control(ctl, "set", up_ms=0, down_ms=0)
        assert in_host(network, "a", round_trip) < 0.2
        assert control(ctl, "status")["served"] == 2  # both went through the proxy
        assert peers == [a, a]  # and reached b from a's own address
    finally:
        proxy.terminate()
        proxy.wait(10)
        server.close()


@pytest.mark.slow
def test_latency_on_the_leaders_redis_path_and_a_front_path_costs_no_request(tmp_path):
    """Sentinel, --netns, behind the front: 1 s each way between the leader and Redis (its
    calls time out: it steps down, another node is elected, it is declared dead while it
    serves); 300 ms between HAProxy and a follower (its checks time out: HAProxy takes it
    out). No request may fail, and every invariant holds."""
    out = tmp_path / "lat"
    done = subprocess.run(chaos_argv(
        out, "--redis-mode", "sentinel", "--duration", "30", "--front", "haproxy",
        "--users", "4", "--rate", "20", "--fault", "5:slow-redis:leader:delay=1000,duration=8",
        "--fault", "18:slow-front:follower:delay=300,duration=4"),
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    report = json.loads((out / "report.json").read_text())
    redis_fault, front_fault = report["faults"]
    assert [f["outcome"] for f in report["faults"]] == ["done", "done"], done.stdout
    facts = redis_fault["facts"]
    assert facts["leader_before"] == redis_fault["node"]
    assert facts["elected"] and not facts["elected"].startswith(redis_fault["node"])
    assert facts["declared_dead_s"] is not None and facts["longest_silence_s"] > 3
    assert front_fault["facts"]["front_out_s"] is not None
    assert front_fault["allowed_failures"] is not None
    assert report["totals"]["failed"] == 0, done.stdout[-2000:]
    assert all(i["held"] for i in report["invariants"]), report["invariants"]
    assert done.returncode == 0, done.stdout[-2000:]
