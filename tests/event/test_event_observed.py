"""The event worker seen from outside: access log and request hooks, unix and IPv6 listeners."""

from __future__ import annotations

import contextlib
import socket

from event_support import HERE, EventServer, Reader, exchange, request
from support.procs import Polycorn, free_port, wait_until

CONFIG = '''
HOOKS = {hooks!r}

def pre_request(worker, req):
    with open(HOOKS, "a") as f:
        f.write("pre %s %s\\n" % (req.method, req.path))

def post_request(worker, req, environ, resp):
    with open(HOOKS, "a") as f:
        f.write("post %s %s %d\\n" % (req.path, resp.status_code, resp.sent))

accesslog = {access!r}
'''


def test_hooks_and_access_log_see_every_request(tmp_path) -> None:
    hooks, access = tmp_path / "hooks.log", tmp_path / "access.log"
    config = tmp_path / "event.conf.py"
    config.write_text(CONFIG.format(hooks=str(hooks), access=str(access)))
    server = EventServer(tmp_path, "-w", "1", "-c", str(config))
    try:
        with contextlib.closing(server.connect()) as sock:
            reader = Reader(sock)
            sock.sendall(request(target="/first?q=1") + request("POST", "/second", b"abc"))
            assert reader.response().status == 200
            assert reader.response().status == 200
        assert exchange(server, request(target="/_/fail")).status == 500
        wait_until(lambda: hooks.exists() and hooks.read_text().count("post") == 3, 10,
                   what="three post_request calls")
        lines = hooks.read_text().splitlines()
        assert lines[:2] == ["pre GET /first", "post /first 200 " + lines[1].split()[-1]]
        assert lines[2] == "pre POST /second" and lines[3].startswith("post /second 200 ")
        assert lines[4:] == ["pre GET /_/fail", "post /_/fail 500 " + lines[5].split()[-1]]
        wait_until(lambda: access.exists() and access.read_text().count("\n") >= 3, 10,
                   what="three access-log lines")
        log = access.read_text()
        assert '"GET /first?q=1 HTTP/1.1" 200' in log
        assert '"POST /second HTTP/1.1" 200' in log
        assert '"GET /_/fail HTTP/1.1" 500' in log
    finally:
        server.stop()


def test_unix_socket_and_ipv6_listeners(tmp_path) -> None:
    path = tmp_path / "event.sock"
    port = free_port()
    server = Polycorn(["-k", "event", "-w", "1", "-b", f"unix:{path}", "-b", f"[::1]:{port}",
                       "event_app:application"], cwd=HERE, log_path=tmp_path / "unix.log")
    try:
        wait_until(path.exists, 15, what="the unix socket")
        for family, address in ((socket.AF_UNIX, str(path)), (socket.AF_INET6, ("::1", port))):
            response = wait_until(lambda f=family, a=address: _try(_ask, f, a), 15,
                                  what=f"an answer over {family.name}")
            assert response.status == 200 and b'"uri": "/via"' in response.body
    finally:
        server.stop()


def _ask(family, address):
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as sock:
        sock.settimeout(5)
        sock.connect(address)
        sock.sendall(request(target="/via"))
        return Reader(sock).response()


def _try(fn, *args):
    try:
        return fn(*args)
    except OSError:
        return None
