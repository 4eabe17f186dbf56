"""TERM leaves the rotation first: for --deregister-delay the health path answers 503 on
every worker while every other request is served and new connections are accepted;
then the node drains. INT/QUIT, a second TERM and --deregister-delay 0 skip the window;
so does a master whose hand-off peers keep serving the same sockets."""

from __future__ import annotations

import http.client
import os
import signal
import time

import pytest
from support.http import get
from support.procs import ROOT, alive, children, port_open, wait_until

APPS = ROOT / "tests" / "apps"


def status(port: int, path: str) -> int | None:
    """The status of one GET on a new connection, None when the port refuses it."""
    try:
        return get(port, path, timeout=5)[0]
    except OSError:
        return None


@pytest.fixture
def start(polycorn, port):
    def start(*args: str):
        server = polycorn("-b", f"127.0.0.1:{port}", *args, "testapp:application",
                          wait_port=port, cwd=APPS)
        wait_until(lambda: "ready: " in server.log(), 15, what="the master ready")
        return server
    return start


def test_term_answers_503_on_the_health_path_while_serving_then_drains(start, port):
    server = start("-w", "2", "--health-check", "/health", "--deregister-delay", "2")
    server.signal(signal.SIGTERM)
    termed = time.monotonic()
    first_503 = wait_until(lambda: status(port, "/health") == 503 and time.monotonic(), 5,
                           interval=0.01, what="the health path to answer 503")
    health, served = [], []
    while time.monotonic() - termed < 1.6:  # well inside the 2 s window
        health.append(status(port, "/health"))
        served.append(status(port, "/pid"))  # a new connection each time: still accepted
        time.sleep(0.02)
    server.proc.wait(15)
    stopped = time.monotonic() - termed
    print(f"\nFIGURE TERM -> first 503: {first_503 - termed:.3f}s; TERM -> exit: {stopped:.2f}s "
          f"(delay 2 s); {len(health)} probes in the window")
    assert first_503 - termed < 0.5
    assert len(health) >= 10 and set(health) == {503}, health
    assert set(served) == {200}
    assert 1.9 <= stopped < 8.0
    assert "out of rotation for 2s before draining" in server.log()
    assert not port_open(port)


def test_term_finishes_a_request_that_arrives_in_the_window(start, port):
    server = start("-w", "1", "--health-check", "/health", "--deregister-delay", "1")
    server.signal(signal.SIGTERM)
    wait_until(lambda: status(port, "/health") == 503, 5, interval=0.01, what="the window")
    # Sent in the window and longer than what is left of it: served through the drain.
    assert get(port, "/sleep?s=1.5", timeout=10)[:2] == (200, b"slept 1.50")
    assert server.proc.wait(10) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_skip_the_delay(start, port, sig):
    server = start("-w", "2", "--health-check", "/health", "--deregister-delay", "10")
    sent = time.monotonic()
    server.signal(sig)
    server.proc.wait(15)
    took = time.monotonic() - sent
    print(f"\nFIGURE {sig.name} -> exit with --deregister-delay 10: {took:.2f}s")
    assert took < 5.0  # the delay (10 s) was not waited for
    assert "out of rotation" not in server.log()


def test_a_second_term_skips_the_rest_of_the_window(start, port):
    server = start("-w", "2", "--health-check", "/health", "--deregister-delay", "20")
    server.signal(signal.SIGTERM)
    wait_until(lambda: status(port, "/health") == 503, 5, interval=0.01, what="the window")
    again = time.monotonic()
    server.signal(signal.SIGTERM)
    server.proc.wait(15)
    assert time.monotonic() - again < 5.0
    assert "TERM during the deregistration window: draining now" in server.log()


def test_deregister_delay_0_drains_at_once(start, port):
    server = start("-w", "2", "--health-check", "/health", "--deregister-delay", "0")
    server.signal(signal.SIGTERM)
    sent = time.monotonic()
    seen = []
    while (code := status(port, "/health")) is not None:
        seen.append(code)
        assert time.monotonic() - sent < 10
    server.proc.wait(10)
    assert 503 not in seen, seen  # straight to the drain: never out of rotation first
    assert "out of rotation" not in server.log()


def test_without_a_health_path_or_a_cluster_nobody_is_told_so_nobody_waits(start, port):
    """A plain Gunicorn-style node (no --health-check, no --redis) stops as before."""
    server = start("-w", "2")
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    server.proc.wait(10)
    assert time.monotonic() - sent < 5.0
    assert "without a deregistration window (no health path and no cluster agent to tell)" \
        in server.log()


def pinned_connections(port: int, wanted: dict[str, set[int]]) -> dict[str, tuple]:
    """One keep-alive connection to a worker of each named set of worker pids."""
    found: dict[str, tuple] = {}
    deadline = time.monotonic() + 15
    while len(found) < len(wanted):
        assert time.monotonic() < deadline, f"no connection to {set(wanted) - set(found)}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/pid")
        pid = int(conn.getresponse().read())
        name = next((n for n, pids in wanted.items() if pid in pids and n not in found), None)
        if name is None:
            conn.close()
        else:
            found[name] = (conn, pid)
    return found


def test_masters_group_term_takes_every_masters_health_path_out(polycorn, port, tmp_path):
    """TERM to one master of a --masters group stops the node: its peer follows the stop
    marker into the window, so the workers of both answer the health path with 503."""
    pid_path = tmp_path / "p.pid"
    polycorn("-b", f"127.0.0.1:{port}", "-w", "4", "-k", "thread", "--keep-alive", "30",
             "--masters", "2", "--handoff", str(tmp_path / "h.sock"), "-p", str(pid_path),
             "--health-check", "/health", "--deregister-delay", "3", "testapp:application",
             wait_port=port, cwd=APPS)

    def group():
        owner = int(pid_path.read_text())
        peers = [p for p in children(owner) if alive(p) and len(children(p)) == 2]
        return len(children(owner)) >= 3 and len(peers) == 1 and (owner, peers[0])
    owner, peer = wait_until(group, 20, what="two masters with two workers each")
    owner_workers = set(children(owner)) - {peer}
    pinned = pinned_connections(port, {"owner": owner_workers, "peer": set(children(peer))})
    os.kill(owner, signal.SIGTERM)
    termed = time.monotonic()
    time.sleep(0.5)  # the peer reads the stop marker on its next tick (0.1 s)
    for name, (conn, _pid) in pinned.items():
        conn.request("GET", "/health")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 503, name
        conn.request("GET", "/pid")  # everything else is served as before
        assert conn.getresponse().read() == str(_pid).encode()
        conn.close()
    assert {status(port, "/health") for _ in range(20)} == {503}
    assert status(port, "/pid") == 200  # and new connections are accepted
    wait_until(lambda: not alive(owner) and not alive(peer), 20, what="both masters to stop")
    assert time.monotonic() - termed >= 2.9
    print(f"\nFIGURE --masters 2, TERM to the owner -> both masters gone: "
          f"{time.monotonic() - termed:.2f}s (delay 3 s)")


def test_a_master_whose_handoff_peer_stays_stops_without_the_window(polycorn, port, tmp_path):
    """One unit per master on a shared hand-off path: a master that stops while another
    still serves the same sockets is not the node leaving; the last one is."""
    handoff = str(tmp_path / "h.sock")
    common = ("-b", f"127.0.0.1:{port}", "-w", "2", "--handoff", handoff, "--health-check",
              "/health", "--deregister-delay", "3", "testapp:application")
    first = polycorn(*common, wait_port=port, cwd=APPS)
    wait_until(lambda: len(first.workers()) == 2, 10, what="the first master's workers")
    second = polycorn(*common, cwd=APPS)
    wait_until(lambda: len(second.workers()) == 2, 15, what="the second master's workers")
    wait_until(lambda: "ready" in second.log(), 15, what="the second master ready")
    for leaving, staying in ((first, second), (second, None)):
        leaving.signal(signal.SIGTERM)
        sent = time.monotonic()
        seen = []
        while leaving.proc.poll() is None and time.monotonic() - sent < 15:
            seen.append(status(port, "/health"))
            time.sleep(0.01)
        took = time.monotonic() - sent
        if staying is not None:  # the node stays: no window, and the peer answers 200
            assert took < 2.5 and set(seen) == {200}, (took, seen)
            assert "another master still serves" in leaving.log()
            assert status(port, "/health") == 200
        else:  # the last master: the node leaves
            after = seen[seen.index(503):] if 503 in seen else []
            assert took >= 2.9 and after and 200 not in after, (took, seen)
