"""polycorn-ctl dashboard against real Redis: the state it serves, the live event stream,
the guarded actions (with real agents carrying out a drain), the read-only mode, the
bind/Host/token checks, and the requests/s column read from a node's /metrics."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dashsupport import Dashboard, EventStream
from polycorn.ha.ctl.actions import plan_rollout
from polycorn.ha.dashboard import guard, limiter
from polycorn.ha.dashboard.rates import RateMeter, request_total
from polycorn.ha.events import Event
from polycorn.ha.registry import Departure, NodeInfo, NodeState
from polycorn.ha.snapshot import Lease
from support.procs import free_port, wait_until
from test_agent import TTL_MS, ctl, observer, start_cluster

TOKEN = "s3cret-token-of-32-characters-xx"
LONG_TTL = ["--node-ttl", "60"]  # nodes registered by hand below never heartbeat again


@pytest.fixture
def dashboards(tmp_path):
    started: list[Dashboard] = []

    def start(*args, **kw) -> Dashboard:
        d = Dashboard(tmp_path, *args, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def ready_node(store, node_id: str, metrics: str = "") -> int:
    info = NodeInfo(node_id, "h", f"127.0.0.1:{1000 + int(node_id[1:])}", 7, "r1",
                    NodeState.READY, 2, 2, 4, 2, metrics_address=metrics)
    inc = store.register(info, 60_000)
    store.heartbeat(info, inc, 60_000)
    return inc


# -- the state --------------------------------------------------------------------------


def test_state_shows_nodes_leader_epoch_drained_and_rollout(shared_redis, cluster_name,
                                                            dashboards):
    store = observer(shared_redis.url, cluster_name)
    for n in ("n1", "n2", "n3"):
        ready_node(store, n)
    epoch = store.acquire_lease("n2", 60_000, "test")
    store.set_drained("n3", True, "test")
    view = store.cluster_state(60_000)
    rollout = plan_rollout(view, cluster_name, ["n1", "n3"], 1, 60, "test")
    assert store.create_rollout(rollout, "test")[0]
    d = dashboards(shared_redis.url, cluster_name, *LONG_TTL)

    state = wait_until(lambda: (s := d.state())["rollout"] and s, 10, what="a full state")
    assert (state["cluster"], state["leader"], state["epoch"]) == (cluster_name, "n2", epoch)
    by_id = {n["node_id"]: n for n in state["nodes"]}
    assert sorted(by_id) == ["n1", "n2", "n3"]
    assert [n for n in by_id if by_id[n]["leader"]] == ["n2"]
    assert by_id["n1"]["state"] == "ready" and by_id["n1"]["release"] == "r1"
    assert (by_id["n1"]["workers"], by_id["n1"]["workers_configured"],
            by_id["n1"]["max_workers"], by_id["n1"]["workers_target"]) == (2, 2, 4, 2)
    assert by_id["n1"]["address"] == "127.0.0.1:1001"
    assert 0 <= by_id["n1"]["heartbeat_age"] < 30
    assert state["drained"] == ["n3"] and by_id["n3"]["drain_requested"]
    assert not by_id["n1"]["drain_requested"]
    r = state["rollout"]
    assert (r["id"], r["done"], r["total"]) == (rollout.id, 0, 2)
    assert [n["node_id"] for n in r["nodes"]] == ["n1", "n3"]
    assert r["line"].startswith(f"rollout {rollout.id} running: 0 of 2 nodes done")
    assert by_id["n1"]["requests"]["status"] == "off"  # advertises no metrics endpoint
    assert state["actions"] is False and state["error"] == ""

    # the page and its files are served, with headers that keep it out of frames
    status, headers, body = d.request("GET", "/")
    assert status == 200 and b"/static/app.js" in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert d.get("/static/app.js")[0] == 200 and d.get("/static/style.css")[0] == 200
    assert d.get("/nope")[0] == 404

    # a change in Redis reaches the state without a restart
    store.set_drained("n3", False, "test")
    wait_until(lambda: d.state()["drained"] == [], 5, what="the undrain in the state")


def test_a_lapsed_node_shows_dead(shared_redis, cluster_name, dashboards):
    store = observer(shared_redis.url, cluster_name)
    info = NodeInfo("n1", "h", "127.0.0.1:1", 7, "r1", NodeState.READY, 2, 2, 4, 2)
    store.heartbeat(info, store.register(info, 1000), 1000)  # a 1 s TTL, never renewed
    d = dashboards(shared_redis.url, cluster_name, "--node-ttl", "1")
    state = wait_until(lambda: (s := d.state())["nodes"] and not s["nodes"][0]["alive"] and s,
                       10, what="n1 dead")
    assert state["nodes"][0]["state"] == "dead"


def test_a_node_whose_master_is_gone_stays_listed_until_declared_dead(
        shared_redis, cluster_name, dashboards):
    # between its agent's report and the leader's declaration the node is in no list but
    # "lost": it must show dead then, not vanish from the page for that moment
    store = observer(shared_redis.url, cluster_name)
    inc = ready_node(store, "n1")
    ready_node(store, "n2")
    store.deregister("n1", inc, "node_gone", "master exited (signal 9)", Departure.LOST)
    d = dashboards(shared_redis.url, cluster_name, *LONG_TTL)
    by_id = {n["node_id"]: n for n in d.state()["nodes"]}
    assert sorted(by_id) == ["n1", "n2"]
    assert by_id["n1"]["state"] == "dead" and not by_id["n1"]["alive"]
    assert by_id["n1"]["lost_reason"] == "master exited (signal 9)"
    text = ctl("status", "--redis", shared_redis.url, "--cluster", cluster_name, *LONG_TTL)
    assert "master gone, not yet declared dead: master exited (signal 9)" in text.stdout


def test_redis_stopped_shows_the_error_and_the_last_state(redis_farm, cluster_name,
                                                         dashboards):
    redis = redis_farm.server()
    store = observer(redis.url, cluster_name)
    ready_node(store, "n1")
    d = dashboards(redis.url, cluster_name, *LONG_TTL)
    os.kill(redis.pid, signal.SIGSTOP)
    try:
        state = wait_until(lambda: (s := d.state())["error"] and s, 10, interval=0.1,
                           what="the Redis error in the state")
        assert [n["node_id"] for n in state["nodes"]] == ["n1"]  # the last state read
        asked = time.monotonic()
        assert d.get("/api/state")[0] == 200  # a page never waits on Redis
        assert time.monotonic() - asked < 0.5
    finally:
        os.kill(redis.pid, signal.SIGCONT)
    wait_until(lambda: d.state()["error"] == "", 15, interval=0.1, what="the error cleared")


# -- the event stream -------------------------------------------------------------------


def test_stream_delivers_a_new_event_within_a_second(shared_redis, cluster_name, dashboards):
    store = observer(shared_redis.url, cluster_name)
    store.emit(Event("upgrade_started", "n1", 0, "before the page opened"))
    d = dashboards(shared_redis.url, cluster_name)
    stream = EventStream(d.port)
    try:
        first = [stream.next() for _ in range(2)]  # the backlog, then the state
        assert first[0][0] == "cluster" and json.loads(first[0][1])["reason"] == \
            "before the page opened"
        assert first[1][0] == "state" and json.loads(first[1][1])["cluster"] == cluster_name
        delays = []
        for i in range(3):
            sent = time.monotonic()
            store.emit(Event("upgrade_promoted", "n1", 0, f"live {i}"))
            while True:
                kind, data, ident = stream.next()
                if kind == "cluster" and json.loads(data)["reason"] == f"live {i}":
                    delays.append(time.monotonic() - sent)
                    assert ident == json.loads(data)["id"]
                    break
        print(f"\nDASHBOARD event -> page: {max(delays) * 1000:.0f} ms at most of 3")
        assert max(delays) < 1.0, delays
    finally:
        stream.close()
    # a page that reconnects with Last-Event-ID gets only what it missed
    store.emit(Event("node_ready", "n2", 0, "missed"))
    again = EventStream(d.port, last_event_id=ident)
    try:
        kind = ""
        while kind != "cluster":  # states may come first, until the feed reads the event
            kind, data, _ = again.next()
        assert json.loads(data)["reason"] == "missed"  # not the events it had seen
    finally:
        again.close()


def test_term_stops_it_promptly_with_a_stream_open(shared_redis, cluster_name, dashboards):
    d = dashboards(shared_redis.url, cluster_name)
    stream = EventStream(d.port)
    try:
        assert stream.next()[0] == "state"
        asked = time.monotonic()
        os.kill(d.proc.pid, signal.SIGTERM)
        assert d.proc.wait(10) == 0
        assert time.monotonic() - asked < 3.0  # not held by the stream's thread
        assert "dashboard stopped" in d.log()
    finally:
        stream.close()


# -- actions ----------------------------------------------------------------------------


def test_actions_need_the_token_and_a_drain_takes_effect(redis_farm, fake_nodes, cluster_name,
                                                         dashboards, tmp_path):
    redis = redis_farm.server()
    nodes, store, leader, _lease = start_cluster(fake_nodes, redis.url, cluster_name)
    target = next(n.node_id for n in nodes if n is not leader)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    d = dashboards(redis.url, cluster_name, "--allow-actions", "--token-file", str(token_file))
    assert d.state()["actions"] is True

    assert d.post("drain", {"node": target})[0] == 401
    assert d.post("drain", {"node": target}, token="x" * len(TOKEN))[0] == 401
    assert d.post("drain", {"node": target}, token=TOKEN[:-1])[0] == 401
    status, _, _ = d.request("GET", f"/api/actions/drain?node={target}")
    assert status == 405  # never by GET (a link or an <img> cannot act)
    evil = {"Origin": "http://evil.example"}
    assert d.post("drain", {"node": target}, token=TOKEN, headers=evil)[0] == 403
    status, _, _ = d.request("POST", "/api/actions/drain", f"node={target}".encode(),
                             {"Authorization": f"Bearer {TOKEN}",
                              "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415  # a plain form cannot send JSON
    assert d.post("drain", {"node": "nope"}, token=TOKEN)[0] == 400
    time.sleep(0.3)
    assert store.cluster_state(TTL_MS).drained == frozenset()  # none of those got through

    origin = {"Origin": f"http://127.0.0.1:{d.port}"}
    status, reply = d.post("drain", {"node": target}, token=TOKEN, headers=origin)
    assert status == 202 and reply["ok"], reply
    start = time.monotonic()

    def draining():
        return next((n for n in d.state()["nodes"]
                     if n["node_id"] == target and n["state"] == "draining"), None)
    node = wait_until(draining, 10, interval=0.05, what=f"{target} draining")
    print(f"\nDASHBOARD drain -> node draining on the page: {time.monotonic() - start:.2f}s")
    assert node["drain_requested"]
    events = [(e.kind, e.node) for e in store.read_events()]
    assert ("drain_requested", target) in events
    assert "dashboard" in next(e.reason for e in store.read_events()
                               if e.kind == "drain_requested")

    assert d.post("undrain", {"node": target}, token=TOKEN)[0] == 202
    wait_until(lambda: not draining(), 10, interval=0.05, what=f"{target} ready again")
    assert d.post("abort", {}, token=TOKEN)[0] == 409  # no rollout running
    assert "refused" in d.log() and TOKEN not in d.log()


def test_wrong_tokens_from_one_address_are_limited_then_refused_with_retry_after(
        shared_redis, cluster_name, dashboards):
    """A token cannot be guessed at network speed: after LIMIT wrong tokens an address
    gets 429 with Retry-After, even for the right token, while another address is not
    held back by it."""
    d = dashboards(shared_redis.url, cluster_name, "--allow-actions",
                   env={guard.TOKEN_ENV: TOKEN})

    def post(token: str, source: str = "127.0.0.1") -> tuple[int, dict, dict]:
        status, headers, body = d.request(
            "POST", "/api/actions/drain", json.dumps({"node": "nope"}).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}, source)
        return status, headers, json.loads(body)

    wrong = "w" * len(TOKEN)
    assert [post(wrong)[0] for _ in range(limiter.LIMIT)] == [401] * limiter.LIMIT
    status, headers, reply = post(wrong)
    assert status == 429, reply
    assert 1 <= int(headers["Retry-After"]) <= limiter.WINDOW
    assert post(TOKEN)[0] == 429  # the right token too: a refusal tells a guesser nothing
    assert post(TOKEN, source="127.0.0.2")[0] == 400  # admitted (then "nope" is no node)
    assert post(wrong, source="127.0.0.2")[0] == 401
    assert "too many wrong tokens" in d.log() and TOKEN not in d.log()


def test_failure_limiter_window_and_bound():
    now = [100.0]
    lim = limiter.FailureLimiter(limit=2, window=10.0, max_clients=2, clock=lambda: now[0])
    lim.failed("a")
    assert lim.retry_after("a") == 0
    lim.failed("a")
    assert lim.retry_after("a") == 10
    now[0] += 7.5
    assert lim.retry_after("a") == 3  # whole seconds, rounded up
    now[0] += 2.5
    assert lim.retry_after("a") == 0  # the window ended: counted afresh
    lim.failed("b"), lim.failed("b"), lim.failed("c"), lim.failed("d")
    assert lim.retry_after("b") == 0  # past max_clients the oldest window went
    assert len(lim._windows) == 2


def test_read_only_dashboard_has_no_action_endpoints(shared_redis, cluster_name, dashboards):
    store = observer(shared_redis.url, cluster_name)
    ready_node(store, "n1")
    d = dashboards(shared_redis.url, cluster_name, *LONG_TTL,
                   env={guard.TOKEN_ENV: TOKEN})  # a token in the environment changes nothing
    assert d.state()["actions"] is False
    for verb in ("drain", "undrain", "upgrade", "abort"):
        status, reply = d.post(verb, {"node": "n1"}, token=TOKEN)
        assert status == 404 and "read-only" in reply["error"]
        assert d.get(f"/api/actions/{verb}")[0] == 404
    assert store.cluster_state(60_000).drained == frozenset()
    assert store.cluster_state(60_000).rollout is None


def test_host_header_of_another_name_is_refused(shared_redis, cluster_name, dashboards):
    d = dashboards(shared_redis.url, cluster_name)
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own Host
    assert d.request("GET", "/api/state", headers={"Host": "evil.example"})[0] == 421
    assert d.request("GET", "/api/state", headers={"Host": f"localhost:{d.port}"})[0] == 200


# -- bad arguments ----------------------------------------------------------------------


def test_bad_arguments_are_clear_errors(shared_redis, cluster_name, tmp_path):
    args = ["--redis", shared_redis.url, "--cluster", cluster_name]

    def run(*extra: str, env: dict | None = None):
        done = ctl("dashboard", *args, *extra) if env is None else _ctl_env(env, *args, *extra)
        assert "Traceback" not in done.stderr
        return done.returncode, done.stderr.strip()

    code, err = run("--bind", "0.0.0.0:0")
    assert code == 2 and "is not a loopback address: pass --allow-remote" in err
    code, err = run("--bind", "nohost")
    assert code == 2 and "want HOST:PORT" in err
    code, err = run("--bind", "127.0.0.1:http")
    assert code == 2 and "is not a number" in err
    code, err = run("--bind", "127.0.0.1:70000")
    assert code == 2 and "0..65535" in err
    code, err = run("--allow-actions", env={})
    assert code == 2 and "--allow-actions needs a token" in err
    code, err = run("--allow-actions", "--token-file", str(tmp_path / "missing"))
    assert code == 2 and "No such file" in err
    short = tmp_path / "short"
    short.write_text("abc")
    code, err = run("--allow-actions", "--token-file", str(short))
    assert code == 2 and "shorter than 16" in err
    code, err = run("--token-file", str(short))
    assert code == 2 and "read-only" in err
    with _listening() as port:
        code, err = run("--bind", f"127.0.0.1:{port}")
        assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err
    done = ctl("dashboard", "--redis", f"redis://127.0.0.1:{free_port()}/0", "--cluster", "x",
               "--bind", "127.0.0.1:0")
    assert done.returncode == 3 and "cannot use Redis" in done.stderr


def _ctl_env(env: dict, *argv: str):
    import os
    import subprocess
    import sys
    clean = {k: v for k, v in os.environ.items() if k != guard.TOKEN_ENV}
    return subprocess.run([sys.executable, "-m", "polycorn.ha.ctl", "dashboard", *argv],
                          env={**clean, **env}, capture_output=True, text=True, timeout=30)


class _listening:
    def __enter__(self) -> int:
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


def test_allow_remote_admits_a_wildcard_bind():
    from polycorn.ha.ctl.cli import build_parser
    from polycorn.ha.dashboard.cli import checked_options

    args = build_parser().parse_args(["dashboard", "--bind", "0.0.0.0:8470", "--allow-remote"])
    bind, token = checked_options(args)
    assert (bind.host, bind.port, bind.loopback, token) == ("0.0.0.0", 8470, False, "")
    args = build_parser().parse_args(["dashboard"])
    assert checked_options(args)[0] == guard.Bind("127.0.0.1", 8470, True)


def test_guard_checks():
    assert guard.parse_bind("127.0.0.1:0").loopback
    assert guard.parse_bind("[::1]:8470").loopback
    assert guard.parse_bind("localhost:1").loopback
    assert not guard.parse_bind("0.0.0.0:8470").loopback
    assert guard.token_matches(TOKEN, f"Bearer {TOKEN}")
    assert guard.token_matches(TOKEN, f"bearer  {TOKEN}")
    assert not guard.token_matches(TOKEN, f"Basic {TOKEN}")
    assert not guard.token_matches(TOKEN, None) and not guard.token_matches("", "Bearer ")
    loop = guard.parse_bind("127.0.0.1:8470")
    assert guard.host_allowed("127.0.0.1:8470", loop) and guard.host_allowed("[::1]:1", loop)
    assert not guard.host_allowed("evil.example:8470", loop)
    assert not guard.host_allowed(None, loop)
    assert guard.host_allowed("anything", guard.Bind("0.0.0.0", 1, False))
    assert guard.origin_allowed(None, "h:1") and guard.origin_allowed("http://h:1", "h:1")
    assert not guard.origin_allowed("http://evil:1", "h:1")
    assert not guard.origin_allowed("null", "h:1")
    assert guard.load_token(None, {guard.TOKEN_ENV: f" {TOKEN}\n"}) == TOKEN
    assert guard.load_token(None, {}) == ""


# -- requests/s from the nodes' /metrics ---------------------------------------------------


EXPOSITION = """# HELP polycorn_requests_total Requests served.
# TYPE polycorn_requests_total counter
polycorn_requests_total{method="GET",status="2xx"} %d
polycorn_requests_total{method="POST",status="5xx"} 1.0
polycorn_requests_created{method="GET",status="2xx"} 1.7e9
polycorn_requests_in_flight 3
"""


def test_request_total_sums_the_counter_and_ignores_the_rest():
    assert request_total(EXPOSITION % 41) == 42.0
    assert request_total('polycorn_http_requests_total{path="a b}"} 5 1700000000\n') == 5.0
    assert request_total("# nothing\nother_total 3\n") is None
    assert request_total("polycorn_requests_total garbage\n") is None
    meter = RateMeter()
    assert meter.reading("n1", 10.0, 100).status == "pending"
    assert meter.reading("n1", 12.0, 150).per_second == 25.0
    assert meter.reading("n1", 14.0, 10).status == "pending"  # a reset: no negative rate
    assert meter.reading("n1", 15.0, 20).per_second == 10.0


class _Metrics(BaseHTTPRequestHandler):
    count = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).count += 50  # 50 more requests served between two scrapes
        body = (EXPOSITION % self.count).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_requests_per_second_from_an_advertised_metrics_endpoint(shared_redis, cluster_name,
                                                                 dashboards):
    metrics = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=metrics.serve_forever, daemon=True)
    thread.start()
    try:
        store = observer(shared_redis.url, cluster_name)
        ready_node(store, "n1", metrics=f"127.0.0.1:{metrics.server_address[1]}")
        ready_node(store, "n2", metrics=f"127.0.0.1:{free_port()}")  # nobody listens
        ready_node(store, "n3")  # metrics off
        store.acquire_lease("n1", 60_000, "test")
        d = dashboards(shared_redis.url, cluster_name, *LONG_TTL)

        def rates():
            by_id = {n["node_id"]: n["requests"] for n in d.state()["nodes"]}
            return by_id if by_id["n1"]["status"] == "ok" else None
        by_id = wait_until(rates, 15, interval=0.2, what="a requests/s figure for n1")
        assert 5 < by_id["n1"]["per_second"] < 100  # 50 per scrape, ~2 s apart
        assert by_id["n2"]["status"] == "unreachable" and by_id["n2"]["per_second"] is None
        assert by_id["n3"] == {"status": "off", "per_second": None, "detail": ""}
    finally:
        metrics.shutdown()
        metrics.server_close()
        thread.join(5)


def test_lease_is_only_read(shared_redis, cluster_name, dashboards):
    """The dashboard holds no authority: it never takes or touches the lease."""
    store = observer(shared_redis.url, cluster_name)
    ready_node(store, "n1")
    epoch = store.acquire_lease("n1", 60_000, "test")
    d = dashboards(shared_redis.url, cluster_name, *LONG_TTL)
    wait_until(lambda: d.state()["leader"] == "n1", 5, what="the leader shown")
    assert store.snapshot().lease == Lease("n1", epoch)
    assert store.snapshot().epoch == epoch
