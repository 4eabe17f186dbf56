"""The dashboard's HTTP side: one page, its state as JSON, a Server-Sent Events stream
and, only when started with --allow-actions, the token-guarded action endpoints.

    GET  /                  the page (static/index.html, app.js, style.css)
    GET  /api/state         the cluster as JSON (nodes, leader, epoch, drained, rollout)
    GET  /api/events        the recent events as JSON (?after=ID)
    GET  /api/stream        SSE: `state` (JSON) on every reading, `cluster` per event
    POST /api/actions/drain|undrain   {"node": ID}           (--allow-actions only)
    POST /api/actions/upgrade         {"max_unavailable": K, "nodes": [..]}
    POST /api/actions/abort           stop the running rollout

The standard library's ThreadingHTTPServer: one thread per connection, which a
read-mostly operator page can afford; every page reads the hub, never Redis. Actions
go through polycorn-ctl's own requests (ha/ctl/actions.py), as `polycorn-ctl drain`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from polycorn.ha.ctl import actions
from polycorn.ha.ctl.common import EXIT_BUSY, EXIT_EMPTY, CtlError
from polycorn.ha.dashboard import guard
from polycorn.ha.dashboard.hub import Hub
from polycorn.ha.dashboard.limiter import FailureLimiter
from polycorn.ha.rollout import DEFAULT_NODE_TIMEOUT
from polycorn.ha.store import ClusterStore, StoreUnavailable

log = logging.getLogger("polycorn.dashboard")

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}
ACTIONS = ("drain", "undrain", "upgrade", "abort")
MAX_BODY = 4096  # bytes of an action's JSON body
MAX_STREAMS = 64  # open event streams; one thread each
PING = 15.0  # seconds between SSE comments, so a vanished client is noticed
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


def _static(name: str) -> bytes:
    return (resources.files("polycorn.ha.dashboard") / "static" / name).read_bytes()


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True  # an open event stream never holds up the exit

    def __init__(self, bind: guard.Bind, hub: Hub, store: ClusterStore, ttl_ms: int,
                 token: str) -> None:
        family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
        self.address_family = family
        super().__init__((bind.host, bind.port), Handler)
        self.bind = bind
        self.hub = hub
        self.store = store
        self.ttl_ms = ttl_ms
        self.token = token
        self.failures = FailureLimiter()  # wrong tokens per client address
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.files = {path: (_static(name), kind) for path, (name, kind) in STATIC.items()}


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "polycorn-dashboard"
    protocol_version = "HTTP/1.0"  # one response per connection: the stream ends it
    timeout = 30  # seconds a client may stall a read or a write before its thread ends

    # -- plumbing ------------------------------------------------------------------------

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        log.debug("%s %s", self.client_address[0], format % args)

    def _send(self, status: int, body: bytes, kind: str = "application/json",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: object, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), extra=extra)

    def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        self._json(status, {"ok": False, "error": message}, extra)

    def _host_ok(self) -> bool:
        if guard.host_allowed(self.headers.get("Host"), self.server.bind):
            return True
        self._error(HTTPStatus.MISDIRECTED_REQUEST, "this dashboard answers only to "
                    "loopback names (started without --allow-remote)")
        return False

    # -- reads ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        url = urlsplit(self.path)
        if url.path in self.server.files:
            body, kind = self.server.files[url.path]
            self._send(HTTPStatus.OK, body, kind)
        elif url.path == "/api/state":
            state = self.server.hub.state_json()
            if not state:
                self._error(HTTPStatus.SERVICE_UNAVAILABLE, "no reading of the registry yet",
                            {"Retry-After": "1"})
            else:
                self._send(HTTPStatus.OK, state.encode())
        elif url.path == "/api/events":
            after = parse_qs(url.query).get("after", [None])[0]
            self._json(HTTPStatus.OK, self.server.hub.events_after(after))
        elif url.path == "/api/stream":
            self._stream()
        elif self.server.hub.actions and url.path.removeprefix("/api/actions/") in ACTIONS:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "actions are POST only",
                        {"Allow": "POST"})
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    do_HEAD = do_GET

    def _stream(self) -> None:
        if not self.server.streams.acquire(blocking=False):
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "too many open streams",
                        {"Retry-After": "5"})
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.send_header("X-Accel-Buffering", "no")  # a proxy in front must not buffer
            self.end_headers()
            if self.command != "HEAD":
                self._pump(self.headers.get("Last-Event-ID"))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the page went away
        finally:
            self.server.streams.release()

    def _pump(self, last_id: str | None) -> None:
        hub = self.server.hub
        self.wfile.write(b"retry: 2000\n\n")
        sent_state = ""
        seen = -1
        while not hub.stopped:
            seen = hub.wait(seen, PING) if seen >= 0 else hub.version
            chunks = []
            for event in hub.events_after(last_id):
                last_id = event["id"]
                chunks.append(f"id: {last_id}\nevent: cluster\ndata: {json.dumps(event)}\n\n")
            state = hub.state_json()
            if state and state != sent_state:
                sent_state = state
                chunks.append(f"event: state\ndata: {state}\n\n")
            self.wfile.write("".join(chunks).encode() if chunks else b": ping\n\n")
            self.wfile.flush()

    # -- actions -------------------------------------------------------------------------

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        verb = urlsplit(self.path).path.removeprefix("/api/actions/")
        if not self.server.hub.actions or verb not in ACTIONS:
            self._error(HTTPStatus.NOT_FOUND, "not found" if self.server.hub.actions else
                        "read-only dashboard: started without --allow-actions")
            return
        who = self.client_address[0]
        # Checked before the token: a right guess must look like any other while refused.
        wait = self.server.failures.retry_after(who)
        if wait:
            log.warning("dashboard: %s refused for %s (pid %d): too many wrong tokens, "
                        "retry after %ds", verb, who, os.getpid(), wait)
            self._error(HTTPStatus.TOO_MANY_REQUESTS, "too many wrong tokens from this "
                        f"address: retry after {wait}s", {"Retry-After": str(wait)})
            return
        if not guard.token_matches(self.server.token, self.headers.get("Authorization")):
            self.server.failures.failed(who)
            log.warning("dashboard: %s refused for %s (pid %d): no or wrong token", verb, who,
                        os.getpid())
            self._error(HTTPStatus.UNAUTHORIZED, "a valid token is needed "
                        "(Authorization: Bearer TOKEN)", {"WWW-Authenticate": "Bearer"})
            return
        if not guard.origin_allowed(self.headers.get("Origin"), self.headers.get("Host")):
            self._error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            return
        if self.headers.get_content_type() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send a JSON body")
            return
        body = self._body()
        if body is not None:
            self._act(verb, body, who)

    def _body(self) -> dict | None:
        """The action's JSON object, or None once an error is answered."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._error(HTTPStatus.BAD_REQUEST, f"want a body of at most {MAX_BODY} bytes")
            return None
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"bad JSON: {exc}")
            return None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "want a JSON object")
            return None
        return body

    def _act(self, verb: str, body: dict, who: str) -> None:
        by = f"polycorn-ctl dashboard on {socket.gethostname()} (pid {os.getpid()}) for {who}"
        try:
            message = run_action(self.server, verb, body, by)
        except CtlError as exc:
            status = HTTPStatus.CONFLICT if exc.status in (EXIT_BUSY, EXIT_EMPTY) \
                else HTTPStatus.BAD_REQUEST
            self._error(status, str(exc))
            return
        except StoreUnavailable as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"Redis: {exc}")
            return
        log.info("dashboard: %s for %s (pid %d): %s", verb, who, os.getpid(), message)
        self._json(HTTPStatus.ACCEPTED, {"ok": True, "message": message})


def _node(body: dict) -> str:
    node = body.get("node")
    if not isinstance(node, str) or not node:
        raise CtlError("want {\"node\": NODE_ID}", 2)
    return node


def run_action(server: DashboardServer, verb: str, body: dict, by: str) -> str:
    """Record one operator request for the leader, as polycorn-ctl's verbs do; its message."""
    store, cluster = server.store, server.hub.cluster
    if verb == "abort":
        aborted = store.abort_rollout(f"aborted by {by}")
        if aborted is None:
            raise CtlError("no rollout is running", EXIT_EMPTY)
        return f"rollout {aborted} aborted"
    view = store.cluster_state(server.ttl_ms)
    if verb in ("drain", "undrain"):
        node = _node(body)
        if not actions.request_drain(view, store, cluster, node, verb == "drain", by):
            return f"{node} is not alive: its drain request is withdrawn"
        return f"{verb} of {node} requested; the leader carries it out"
    nodes = body.get("nodes") or []
    k = body.get("max_unavailable", 1)
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes) \
            or not isinstance(k, int) or isinstance(k, bool):
        raise CtlError("want {\"max_unavailable\": K, \"nodes\": [NODE_ID, ...]}", 2)
    rollout = actions.plan_rollout(view, cluster, nodes, k, DEFAULT_NODE_TIMEOUT, by)
    created, rollout_id = store.create_rollout(rollout, f"requested by {by}")
    if not created:
        raise CtlError(f"rollout {rollout_id} is already running", EXIT_BUSY)
    return (f"rollout {rollout_id}: upgrading {len(rollout.order)} nodes "
            f"({', '.join(rollout.order)}), at most {k} at a time")
