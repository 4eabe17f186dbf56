"""A real HAProxy in front of three real polycorn nodes, kept in step with the registry by
the real `polycorn-ctl haproxy sync`, under steady load through the front (half fresh
connections, half keep-alive). Each test hurts the cluster one way and counts failed
requests; the figures are printed (run with -s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

import pytest
from frontsupport import (
    BACKEND,
    AdminWatch,
    HAProxyProc,
    SyncProc,
    ctl_argv,
    explain_failures,
    figure,
    first_after,
    killed_by_down,
    start_node,
    wall_to_monotonic,
)
from polycorn.ha import events as ev
from polycorn.ha.haproxy.servers import Admin, parse_stat
from polycorn.ha.registry import NodeState
from support.http import get
from support.load import Load
from support.procs import free_port, kill_all, wait_until
from test_agent import TTL_MS, observer

NODES = ("p1", "p2", "p3")


@dataclass
class Front:
    redis: object
    name: str
    polycorn: object
    workdir: object
    kind: str = "wsgi"  # the nodes' app and worker: frontsupport.NODE_APPS
    haproxy: HAProxyProc | None = None
    sync: SyncProc | None = None
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store = observer(self.redis.url, self.name)

    def start_node(self, node_id: str, wait: bool = True) -> None:
        port = self.ports.setdefault(node_id, free_port())
        self.procs[node_id] = start_node(self.polycorn, self.redis.url, self.name, node_id,
                                         port, wait, self.kind)

    def ready_nodes(self) -> set[str]:
        return {r.info.node_id for r in self.store.nodes(TTL_MS)[1]
                if r.alive and r.info.state is NodeState.READY}

    def serving(self) -> set[str]:
        """The nodes whose slot takes new requests (ready and up in HAProxy)."""
        rotation = self.haproxy.in_rotation()
        return {n for n, p in self.ports.items() if p in rotation}

    def wait_serving(self, nodes: set[str], timeout: float = 10.0) -> float:
        start = time.monotonic()
        wait_until(lambda: self.serving() == nodes, timeout, interval=0.02,
                   what=f"HAProxy serving exactly {sorted(nodes)} (sync log:\n"
                   f"{self.sync.log()[-3000:]})")
        return time.monotonic() - start

    def kill_node(self, node_id: str) -> None:
        """kill -9 of every process of the node: master, workers, agent."""
        proc = self.procs[node_id]
        kill_all([proc.pid, *proc.track()], signal.SIGKILL)

    def node_pids(self, node_id: str) -> list[int]:
        proc = self.procs[node_id]
        return [proc.pid, *proc.track()]

    def load(self, threads: int = 4) -> Load:
        return Load(self.haproxy.port, path="/version", threads=threads, timeout=10.0)


@pytest.fixture
def front(request, redis_farm, polycorn, cluster_name, tmp_path):
    """Three nodes behind HAProxy and the sync; WSGI nodes unless a test parametrizes
    it indirectly with another frontsupport.NODE_APPS kind ("asgi")."""
    kind = getattr(request, "param", "wsgi")
    f = Front(redis_farm.server(), cluster_name, polycorn, tmp_path, kind)
    for node_id in NODES:
        f.start_node(node_id)
    wait_until(lambda: f.ready_nodes() == set(NODES), 30, interval=0.05,
               what="three ready nodes")
    f.haproxy = HAProxyProc(tmp_path, f.redis.url, cluster_name)
    f.sync = SyncProc(tmp_path, f.redis.url, cluster_name, f.haproxy)
    try:
        f.wait_serving(set(NODES), 15)
        yield f
    finally:
        f.sync.stop()
        f.haproxy.stop()
        f.store.close()


def assert_no_failure(load: Load, what: str, f: Front | None = None) -> None:
    res = load.result
    if res.failed and f is not None:
        # HAProxy writes a request's line once done with it: give it a moment.
        time.sleep(0.5)
        print(f"\nHAProxy on the failed requests ({what}):\n"
              f"{explain_failures(f.haproxy.log(), res.failures)}")
    assert res.failed == 0, f"{what}: {res.summary()}"


def served_by(load: Load) -> set[str]:
    return {what for _, _, ok, what in load.result.spans if ok}


# -- (a) a whole node killed ------------------------------------------------------------------


# The ASGI twin (issue 16): the same kill with a FastAPI app on -k asgi.
@pytest.mark.parametrize("front", ["wsgi", "asgi"], indirect=True)
def test_kill_9_of_every_process_of_a_node_fails_no_request(front):
    f = front
    if f.kind == "asgi":  # the FastAPI app answers, not the WSGI one
        status, body, _ = get(f.haproxy.port, "/json")
        assert status == 200 and json.loads(body)["app"] == "fastapi", body
    with f.load() as load:
        load.wait_requests(300)
        assert served_by(load) == set(NODES)
        killed_at = time.monotonic()
        f.kill_node("p2")
        # HAProxy's checks take it out; then the registry lapses and the sync puts it
        # in maint. Requests keep flowing all along.
        wait_until(lambda: f.haproxy.servers()[_slot(f, "p2")].op == "down", 5,
                   interval=0.01, what="p2 marked down by its checks")
        down = time.monotonic() - killed_at
        wait_until(lambda: f.haproxy.servers()[_slot(f, "p2")].admin is Admin.MAINT, 10,
                   interval=0.05, what="p2 put in maint by the sync")
        maint = time.monotonic() - killed_at
        load.wait_requests(300)
    figure("kill -9 of a whole node -> HAProxy marks it down", down)
    figure("kill -9 of a whole node -> the sync puts its slot in maint", maint)
    print(f"\nFIGURE kill -9 of a whole node under load: {load.result.summary()}")
    assert_no_failure(load, "kill -9 of a whole node", f)
    assert "p2 slot" in f.sync.log() and "maint" in f.sync.log()
    # polycorn-ctl haproxy status: HAProxy's view beside the registry's
    done = subprocess.run(ctl_argv("haproxy", "status", "--json", "--redis", f.redis.url,
                                   "--cluster", f.name, "--runtime-api",
                                   f"unix:{f.haproxy.socket}", "--backend", BACKEND),
                          capture_output=True, text=True, check=True)
    rows = {r["slot"]: r for r in json.loads(done.stdout)["rows"]}
    p2 = rows[_slot(f, "p2")]
    assert (p2["admin"], p2["node"], p2["in_step"]) == ("maint", None, True)
    for n in ("p1", "p3"):
        row = rows[_slot(f, n)]
        assert (row["admin"], row["status"], row["node"], row["registry"], row["check"]) \
            == ("ready", "UP", n, "ready", "L7OK"), row
    text = subprocess.run(ctl_argv("haproxy", "status", "--redis", f.redis.url, "--cluster",
                                   f.name, "--runtime-api", f"unix:{f.haproxy.socket}"),
                          capture_output=True, text=True, check=True).stdout
    assert text.startswith("backend polycorn at unix:") and "p1" in text


@pytest.mark.slow
def test_repeated_kill_9_of_a_node_under_load_has_haproxy_kill_no_request(front):
    """Node after node killed and restarted under load: no request lost, and none that
    HAProxy itself closed unanswered. A request still connecting to the killed node
    when its checks mark it down was closed without a word (log state D---, status
    -1, 0 bytes) by `on-marked-down shutdown-sessions`: a reset for a fresh client,
    one time in a few thousand requests in the single-kill test above, about one
    kill in two here (half of them hidden by the keep-alive client's retry)."""
    f = front
    with f.load(threads=6) as load:
        load.wait_requests(300)
        for i in range(9):
            victim = NODES[i % len(NODES)]
            slot = _slot(f, victim)
            f.kill_node(victim)
            wait_until(lambda s=slot: f.haproxy.servers()[s].op == "down", 5,
                       interval=0.01, what=f"{victim} marked down by its checks")
            load.wait_requests(100)
            f.start_node(victim)
            f.wait_serving(set(NODES), 20)
            load.wait_requests(200)
    print(f"\nFIGURE 9 kills -9 of a node under load: {load.result.summary()}")
    assert_no_failure(load, "nine kills -9", f)
    killed = killed_by_down(f.haproxy.log())
    assert not killed, "\n".join(killed)
    assert load.result.retried == 0, load.result.summary()


def _slot(f: Front, node_id: str) -> str:
    port = f.ports[node_id]
    return next(s.name for s in f.haproxy.servers().values() if s.port == port)


# -- (b) a node joins ---------------------------------------------------------------------------


def test_a_new_node_gets_requests_within_2s_of_being_ready(front):
    f = front
    with f.load() as load:
        load.wait_requests(200)
        f.start_node("p4", wait=False)
        ready_at = registry_ready_since(f, "p4")
        wait_until(lambda: first_after(load.result.spans, "p4", 0) is not None, 5,
                   interval=0.02, what="a request answered by p4")
        load.wait_requests(200)
    first = first_after(load.result.spans, "p4", 0)
    figure("node_ready of a new node -> its first request through the front",
           first - ready_at)
    print(f"\nFIGURE join under load: {load.result.summary()}")
    assert first - ready_at <= 2.0
    # Booting, it was known to HAProxy but in maint: nothing reached it before ready.
    assert first >= ready_at - 0.01
    assert_no_failure(load, "a node joining", f)


def registry_ready_since(f: Front, node_id: str, timeout: float = 30.0) -> float:
    """Poll the registry until the node is ready; the earliest moment it may have
    become so (when the last poll that saw it not ready started), so a lag measured
    from it is never flattered. (A node whose workers are ready before its agent
    registers logs node_joined only, no node_ready event, hence the polling.)"""
    deadline = previous = time.monotonic()
    deadline += timeout
    while True:
        started = time.monotonic()
        if node_id in f.ready_nodes():
            return previous
        previous = started
        assert started < deadline, f"{node_id} not ready in the registry after {timeout}s"
        time.sleep(0.005)


# -- (c) drain ------------------------------------------------------------------------------------


def test_polycorn_ctl_drain_stops_new_requests_within_1s(front):
    f = front
    with f.load() as load:
        load.wait_requests(300)
        watch = AdminWatch(f.haproxy, _slot(f, "p2"), Admin.DRAIN)
        asked = time.monotonic()
        subprocess.run(ctl_argv("drain", "p2", "--no-wait", "--redis", f.redis.url,
                                "--cluster", f.name), check=True, capture_output=True)
        requested = next(e for e in f.store.read_events(count=10_000)
                         if e.kind == ev.DRAIN_REQUESTED and e.node == "p2")
        requested_at = wall_to_monotonic(requested.time_ms / 1000)
        time.sleep(1.5)
        drained_at = watch.stop()
        assert drained_at is not None
        load.wait_requests(300)
        last = max(s for s, _, ok, what in load.result.spans if what == "p2")
        # undrain: it takes new requests again
        undrain_at = time.monotonic()
        subprocess.run(ctl_argv("undrain", "p2", "--no-wait", "--redis", f.redis.url,
                                "--cluster", f.name), check=True, capture_output=True)
        wait_until(lambda: first_after(load.result.spans, "p2", undrain_at), 10,
                   interval=0.02, what="p2 serving again after undrain")
        back = first_after(load.result.spans, "p2", undrain_at) - undrain_at
    figure("drain_requested event -> p2's slot in drain (the sync's reaction)",
           drained_at - requested_at)
    # The sync follows the events stream (target: within 100 ms; 7-18 ms measured on a
    # quiet machine, the figure above). Half the feed's periodic re-read (0.5 s): a sync
    # that only polled would miss this about every other run, while a busy 2-core CI box
    # delaying the sync's wake-up (0.129 s seen once under xdist) stays well inside it.
    assert drained_at - requested_at < 0.25
    figure("drain_requested -> the last request p2 received", last - requested_at)
    figure("polycorn-ctl undrain run -> p2 serving again", back)
    print(f"\nFIGURE drain under load: {load.result.summary()}")
    assert last - requested_at < 1.0
    assert last >= asked - 5  # p2 did serve before the drain
    assert_no_failure(load, "drain and undrain", f)


def test_a_post_in_flight_on_a_drained_node_finishes(front):
    """A drained node's health path answers 503, so HAProxy's checks mark it down: what
    it holds must still finish (drain's promise). HAProxy's on-marked-down
    shutdown-sessions cut it (a POST answered 502); the sync shuts only a ready slot's
    sessions (hung.py)."""
    from concurrent.futures import ThreadPoolExecutor

    from support.http import get

    f = front
    slot = _slot(f, "p2")
    with ThreadPoolExecutor(3) as pool:
        # leastconn: one per node. (Two per node would hold both sync workers of every
        # node: their checks would time out and mark all three down, hung or not.)
        calls = [pool.submit(get, f.haproxy.port, "/sleep?s=8", method="POST", body=b"x",
                             timeout=15) for _ in range(3)]
        time.sleep(0.5)
        subprocess.run(ctl_argv("drain", "p2", "--no-wait", "--redis", f.redis.url,
                                "--cluster", f.name), check=True, capture_output=True)
        wait_until(lambda: f.haproxy.servers()[slot].op == "down", 5, interval=0.02,
                   what="p2 marked down by its checks (503 while drained)")
        # ... with the POSTs still in flight (the drain command takes seconds to start
        # on a busy machine: hence 8 s requests): p1's and p3's at least are.
        assert sum(not call.done() for call in calls) >= 2
        time.sleep(1.5)
        answers = [call.result()[:2] for call in calls]
    log = wait_until(lambda: (text := f.haproxy.log()).count('"POST /sleep') >= 3 and text,
                     10, what="HAProxy's three log lines")
    on_p2 = [line for line in log.splitlines()
             if '"POST /sleep' in line and f"{BACKEND}/{slot} " in line]
    assert on_p2, "no POST reached p2: the drain proved nothing"
    assert answers == [(200, b"slept 8.00")] * 3, (answers, on_p2)


# -- (d) Redis stopped ----------------------------------------------------------------------------


def test_redis_stopped_for_5s_leaves_the_backend_unchanged_and_fails_nothing(front):
    f = front
    before = f.haproxy.servers()
    changed = []
    with f.load() as load:
        load.wait_requests(300)
        f.redis.signal(signal.SIGSTOP)
        try:
            # Sample through the outage and the 5 s after it, when every heartbeat has
            # lapsed at once (the sync's guard must hold until the nodes are back).
            end = time.monotonic() + 5.0
            while time.monotonic() < end:
                now = f.haproxy.servers()
                if now != before:
                    changed.append(now)
                time.sleep(0.05)
        finally:
            f.redis.signal(signal.SIGCONT)
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            now = f.haproxy.servers()
            if {n: (s.admin, s.endpoint, s.weight) for n, s in now.items()} != {
                    n: (s.admin, s.endpoint, s.weight) for n, s in before.items()}:
                changed.append(now)
            time.sleep(0.05)
        load.wait_requests(300)
    print(f"\nFIGURE Redis SIGSTOPped 5 s under load: {load.result.summary()}")
    assert not changed, f"the backend changed: {changed[0]}\n{f.sync.log()}"
    assert_no_failure(load, "Redis stopped", f)
    assert "registry unreadable" in f.sync.log()
    assert f.serving() == set(NODES)


def _unchanged(f: Front, before: dict, seconds: float) -> list:
    """Every sample of the backend (admin, address, weight) that differs from before."""
    def key(servers):
        return {n: (s.admin, s.endpoint, s.weight) for n, s in servers.items()}
    changed, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        now = f.haproxy.servers()
        if key(now) != key(before):
            changed.append(now)
        time.sleep(0.05)
    return changed


@pytest.mark.slow
def test_redis_restarted_empty_leaves_the_backend_unchanged(front):
    """Redis back without its data (no persistence): the registry is empty until every
    node heartbeats again; Redis' new run id holds the sync's guard meanwhile."""
    f = front
    before = f.haproxy.servers()
    with f.load() as load:
        load.wait_requests(300)
        f.redis.crash()
        f.redis.start()
        restarted = time.monotonic()
        changed = _unchanged(f, before, 9.0)  # past the recovery grace (7 s)
        wait_until(lambda: f.ready_nodes() == set(NODES), 10, what="the nodes registered")
        load.wait_requests(300)
    print(f"\nFIGURE Redis restarted empty under load: {load.result.summary()}")
    assert time.monotonic() - restarted > 9.0
    assert not changed, f"the backend changed: {changed[0]}\n{f.sync.log()}"
    assert_no_failure(load, "Redis restarted empty", f)


# -- (e) HAProxy restarted --------------------------------------------------------------------


def test_a_restarted_haproxy_gets_every_slot_back_within_1s(front):
    f = front
    # Without its state file the new HAProxy starts with every slot disabled: only the
    # sync can fill them. The sync saves the state just after the commands HAProxy
    # already shows as serving: wait for that save, or on busy cores the kill lands
    # between the two (no file to remove) or the save lands after the removal.
    wait_until(lambda: os.path.exists(f.haproxy.state_file), 5,
               what="the sync's first save of the server state")
    f.haproxy.kill()
    os.unlink(f.haproxy.state_file)
    f.haproxy.start()
    reapplied = f.wait_serving(set(NODES), 5)
    figure("HAProxy restarted without its state file -> the sync re-applied every slot",
           reapplied)
    assert reapplied <= 1.0
    assert "HAProxy restarted or reloaded" in f.sync.log()
    # With the state file the sync saved, a restart starts with the slots as they
    # were, sync or no sync.
    wait_until(lambda: os.path.exists(f.haproxy.state_file), 2, what="the state file saved")
    assert f.sync.stop() == 0
    f.haproxy.kill()
    f.haproxy.start()
    assert f.serving() == set(NODES), f.haproxy.log()[-2000:]


# -- (f) a hung host --------------------------------------------------------------------------


def _stot(f: Front, slot: str) -> int:
    return int(parse_stat(f.haproxy.api.show_stat(BACKEND))[slot]["stot"])


def _completed(load: Load, start: float, end: float) -> int:
    return sum(1 for _, ended, ok, _ in load.result.spans if ok and start <= ended < end)


def test_sigstop_of_a_whole_node_costs_at_most_what_it_was_sent_and_stalls_nobody(front):
    f = front
    slot = _slot(f, "p2")
    pids = f.node_pids("p2")
    with f.load(threads=6) as load:
        load.wait_requests(300)
        time.sleep(2.0)
        sent_before = _stot(f, slot)
        stopped = time.monotonic()
        kill_all(pids, signal.SIGSTOP)
        try:
            wait_until(lambda: f.haproxy.servers()[slot].op == "down", 5, interval=0.01,
                       what="p2 marked down by its checks")
            down = time.monotonic()
            sent = _stot(f, slot) - sent_before
            time.sleep(max(0.0, stopped + 5.0 - time.monotonic()))
        finally:
            kill_all(pids, signal.SIGCONT)
        resumed = time.monotonic()
        wait_until(lambda: "p2" in f.serving(), 20, interval=0.05, what="p2 back in rotation")
        back = time.monotonic() - resumed
        load.wait_requests(300)
    before = _completed(load, stopped - 2.0, stopped) / 2.0
    during = _completed(load, stopped, stopped + 5.0) / 5.0
    worst = min(_completed(load, stopped + i, stopped + i + 1) for i in range(5))
    figure("SIGSTOP of a whole node -> HAProxy marks it down", down - stopped)
    print(f"\nFIGURE requests HAProxy sent to the stopped node before marking it down: {sent}")
    print(f"\nFIGURE throughput before / during the 5 s pause: {before:.0f} / {during:.0f} "
          f"req/s (worst second {worst})")
    figure("SIGCONT -> the node serving through the front again", back)
    print(f"\nFIGURE SIGSTOP of a whole node for 5 s under load: {load.result.summary()}")
    assert load.result.failed <= sent, load.result.summary()
    # No stall: not one second of the pause below half the rate before it. (With
    # roundrobin every client thread ends up waiting on the hung node until it is
    # marked down: 13 requests in the worst second, measured; leastconn stops
    # choosing it after one or two.)
    assert worst >= before / 2, (before, during, worst)


# -- what is resent, and what never is -----------------------------------------------------------


def test_a_get_in_flight_on_a_killed_node_is_resent_elsewhere_a_post_never(front):
    """The retry policy of the generated config, without the sync: p2 alone takes the
    requests, dies mid-request, and HAProxy resends the GET to another node (empty
    response, idempotent) but answers the POST with an error rather than replay it."""
    from concurrent.futures import ThreadPoolExecutor

    f = front
    assert f.sync.stop() == 0
    slots = {n: _slot(f, n) for n in NODES}
    for n in ("p1", "p3"):
        f.haproxy.api.set_command(f"set server {BACKEND}/{slots[n]} state maint")
    with ThreadPoolExecutor(4) as pool:
        calls = {(method, i): pool.submit(get, f.haproxy.port, "/sleep?s=1", method=method,
                                          body=b"x" if method == "POST" else None,
                                          timeout=10)
                 for method in ("GET", "POST") for i in range(2)}
        time.sleep(0.5)  # all four are being served by p2
        for n in ("p1", "p3"):
            f.haproxy.api.set_command(f"set server {BACKEND}/{slots[n]} state ready")
        f.kill_node("p2")
        answers = {key: call.result()[:2] for key, call in calls.items()}
    for (method, _), (status, body) in answers.items():
        if method == "GET":
            assert (status, body) == (200, b"slept 1.00"), answers
        else:
            assert status == 502, answers
    # HAProxy writes a request's line once it is done with it, which can be after the
    # client read its answer: wait for all four (read at once, one was missing once).
    log = wait_until(lambda: (text := f.haproxy.log()).count('"GET /sleep') >= 2
                     and text.count('"POST /sleep') >= 2 and text, 10,
                     what="HAProxy's four log lines")
    posts = [line for line in log.splitlines() if '"POST /sleep' in line]
    assert len(posts) == 2 and all(f"{BACKEND}/{slots['p2']} " in p and "/+" not in p
                                   for p in posts), posts
    gets = [line for line in log.splitlines() if '"GET /sleep' in line]
    assert len(gets) == 2 and all("/+1 " in g for g in gets), gets
