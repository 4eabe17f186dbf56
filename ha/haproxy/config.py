"""`polycorn-ctl haproxy config`: a complete, commented haproxy.cfg for one cluster (pure).

The backend is a fixed set of `server-template` slots that start disabled; the sync
fills them at run time (address, weight, ready/drain/maint) through the admin socket.
Every choice that decides what a lost or hung host costs is explained beside it in
the output, so the file can be read (and tuned) on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_BACKEND = "polycorn"
DEFAULT_BIND = "0.0.0.0:80"
DEFAULT_SLOTS = 32
DEFAULT_HEALTH_PATH = "/health"
SLOT_PREFIX = "s"  # slots are named s1..sN
# Where an unused slot points: port 1 on loopback never serves HTTP, and the slot
# stays in maintenance (no traffic, no checks) until the sync gives it a node.
PLACEHOLDER_ADDR, PLACEHOLDER_PORT = "127.0.0.1", 1
MAX_WEIGHT = 256  # HAProxy's ceiling for a server weight
# RFC 9110 9.2.2: the idempotent methods, which a client may resend after a failure
# because repeating them has the same intended effect. POST, PATCH and CONNECT may
# have had effects, so HAProxy never resends them once they reached a server.
IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ConfigError(ValueError):
    """An option that cannot make a valid configuration; the message names it."""


@dataclass(frozen=True)
class Checks:
    """Active health checks: how fast a dead or hung node leaves the rotation.

    A node killed outright refuses connections, and retries move its requests at
    once; checks matter for a hung host (SIGSTOP, a stuck kernel), which still
    completes TCP handshakes and then says nothing. It is marked down after `fall`
    checks time out: at most inter + fall * timeout + (fall - 1) * fastinter."""

    inter_ms: int = 250  # between checks of a healthy server
    fastinter_ms: int = 100  # once a check failed: confirm quickly
    downinter_ms: int = 500  # a server that is down: no need to hammer it
    timeout_ms: int = 400  # a check not answered in this long failed
    fall: int = 2  # consecutive failures before down (one slow answer is not death)
    rise: int = 2  # consecutive successes before up again

    def worst_detection_ms(self) -> int:
        return self.inter_ms + self.fall * self.timeout_ms + (self.fall - 1) * self.fastinter_ms


@dataclass(frozen=True)
class FrontOptions:
    cluster: str
    redis: str  # shown in the header only (its password masked), for the sync's command
    bind: str = DEFAULT_BIND
    slots: int = DEFAULT_SLOTS
    runtime_api: str = ""  # unix:PATH; default from the cluster name
    backend: str = DEFAULT_BACKEND
    health_path: str = DEFAULT_HEALTH_PATH
    state_file: str = ""  # default: beside the runtime API socket
    checks: Checks = Checks()
    connect_timeout_ms: int = 250
    server_timeout_s: int = 30

    @property
    def socket_path(self) -> str:
        return socket_path(self.runtime_api or default_runtime_api(self.cluster))

    @property
    def state_path(self) -> str:
        return self.state_file or default_state_file(self.socket_path)


def default_runtime_api(cluster: str) -> str:
    return f"unix:/run/haproxy/polycorn-{cluster}.sock"


def socket_path(runtime_api: str) -> str:
    """The path of a `unix:PATH` runtime API address (the only kind the sync speaks)."""
    if not runtime_api.startswith("unix:") or len(runtime_api) <= len("unix:"):
        raise ConfigError(f"--runtime-api {runtime_api!r}: want unix:PATH")
    return runtime_api[len("unix:"):]


def default_state_file(sock: str) -> str:
    """Beside the socket (same directory, same name, .state): config and sync agree on
    it without being told."""
    base = sock[:-len(".sock")] if sock.endswith(".sock") else sock
    return base + ".state"


def slot_names(slots: int) -> list[str]:
    return [f"{SLOT_PREFIX}{i}" for i in range(1, slots + 1)]


def _check(opts: FrontOptions) -> None:
    if not _NAME.match(opts.backend):
        raise ConfigError(f"--backend {opts.backend!r}: letters, digits, '.', '_', '-'")
    if not 1 <= opts.slots <= 4096:
        raise ConfigError(f"--slots {opts.slots}: want 1 to 4096")
    if not opts.health_path.startswith("/") or any(c.isspace() for c in opts.health_path):
        raise ConfigError(f"--health-path {opts.health_path!r}: want an absolute path "
                          f"without spaces")
    host, sep, port = opts.bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--bind {opts.bind!r}: want HOST:PORT")
    for path in (opts.socket_path, opts.state_path):
        if any(c.isspace() for c in path):
            raise ConfigError(f"{path!r}: paths with spaces are not supported")


def render(opts: FrontOptions) -> str:
    """The whole haproxy.cfg, comments included."""
    _check(opts)
    c = opts.checks
    be = opts.backend
    sync = (f"polycorn-ctl haproxy sync --cluster {opts.cluster} --redis {opts.redis} "
            f"--runtime-api unix:{opts.socket_path} --backend {be}")
    if opts.state_file:
        sync += f" --state-file {opts.state_path}"
    methods = " ".join(IDEMPOTENT_METHODS)
    return f"""\
# haproxy.cfg for Polycorn cluster {opts.cluster!r}, written by `polycorn-ctl haproxy config`.
#
# The servers of backend {be!r} are {opts.slots} empty slots; a sync process beside this
# HAProxy fills them from the cluster's registry through the admin socket below:
#
#   {sync}
#
# Run one sync per HAProxy (two HAProxies: two syncs). It gives each node a slot
# (address, port), a weight equal to its running workers and a state: ready, drain
# (polycorn-ctl drain) or maint (booting, stopping, dead). Without the sync every slot
# stays disabled and HAProxy answers 503.

global
    # The runtime API the sync speaks (one command per connection). Level admin is
    # needed for "set server"; mode 600 keeps it to this user (run the sync as it).
    stats socket {opts.socket_path} mode 600 level admin expose-fd listeners
    stats timeout 10s
    # The sync writes the slots' state here after every change, so a reload or a
    # restart starts with every slot as it was instead of all disabled.
    server-state-file {opts.state_path}
    # On standard output (haproxy -db, systemd, a container), each line with its ISO 8601
    # time: server state changes carry no time of their own.
    log stdout format iso local0

defaults
    mode http
    log global
    option httplog
    option dontlognull
    # Pass the client's address on (X-Forwarded-For); the node sees HAProxy's.
    option forwardfor
    load-server-state-from-file global
    # A dead host must cost milliseconds, not seconds: on a LAN a connection is set up
    # in well under a millisecond, and a refused or timed-out one is retried elsewhere.
    timeout connect {opts.connect_timeout_ms}ms
    timeout client 30s
    timeout server {opts.server_timeout_s}s
    timeout http-request 10s
    timeout http-keep-alive 5s
    timeout queue 5s
    timeout check {c.timeout_ms}ms

frontend polycorn_front
    bind {opts.bind}
    default_backend {be}

backend {be}
    # Fewest requests in flight first: a hung node (SIGSTOP, a stuck host) holds every
    # request it is sent, so it stops being chosen after a few of them instead of
    # receiving its round-robin share until its checks fail. Weights still apply.
    balance leastconn
    # Retries: up to 3 more attempts, each on another server (redispatch 1; plain
    # "option redispatch" only moves on the last one). conn-failure: the request never
    # left (refused, reset or timed out while connecting), so any method is safe to
    # send again. empty-response: the connection closed with nothing received (a node
    # killed mid-request); only idempotent methods are resent, see below.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    # A request that reached a server may have had effects: never resend POST, PATCH
    # and the like. The idempotent methods of RFC 9110 9.2.2 ({methods})
    # may be repeated with the same intended effect, so they are retried. Narrow the
    # list if your application breaks that rule (a PUT that appends, say).
    acl idempotent method {methods}
    http-request disable-l7-retry if !idempotent
    # Active checks on the nodes' drain-aware health path: it answers 503 while a node
    # is drained, and must be the path the nodes run with (--health-check {opts.health_path}).
    option httpchk GET {opts.health_path}
    # A hung node is down within about {c.worst_detection_ms()} ms at worst: inter, then {c.fall} checks that time
    # out ({c.timeout_ms} ms each), {c.fastinter_ms} ms apart. The sync closes its requests still in
    # flight 0.5 s later ("shutdown sessions server"): a GET is resent, and waiting for the
    # host to wake would hold each of their clients for the whole hang. Not HAProxy's
    # "on-marked-down shutdown-sessions": it also closes, unanswered, the requests
    # still connecting to the server at that instant, which a killed node would refuse
    # and HAProxy resend elsewhere (a reset for their clients, log state D---), and
    # those of a drained node, whose health path answers 503 by design.
    default-server inter {c.inter_ms}ms fastinter {c.fastinter_ms}ms downinter {c.downinter_ms}ms fall {c.fall} rise {c.rise}
    # The slots. "disabled": no traffic and no checks until the sync sets an address
    # and a state; the address below is a placeholder that never serves.
    server-template {SLOT_PREFIX} 1-{opts.slots} {PLACEHOLDER_ADDR}:{PLACEHOLDER_PORT} check disabled
"""
