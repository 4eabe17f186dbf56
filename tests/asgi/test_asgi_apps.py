"""-k asgi serving real apps (FastAPI, Django's ASGI handler) through a running polycorn."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from support.http import get
from support.procs import EXAMPLES, ROOT, free_port, wait_until

APPS = ROOT / "tests" / "apps"


@pytest.fixture
def marks(tmp_path) -> Path:
    path = tmp_path / "marks.log"
    path.touch()
    return path


@pytest.fixture
def fastapi_server(polycorn, port, marks):
    server = polycorn("-k", "asgi", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5",
                      "fastapi_app:app", wait_port=port, cwd=APPS,
                      env={"ASGI_MARKS": str(marks)})
    return server, port


def the_worker(server, port: int) -> int:
    """The one worker's pid, once it serves (the port opens before the fork)."""
    assert get(port, "/json")[0] == 200
    return server.workers()[0]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_json(fastapi_server):
    _, port = fastapi_server
    status, body, headers = get(port, "/json?a=1")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["args"] == {"a": "1"}


def test_a_streaming_response_is_chunked(fastapi_server):
    _, port = fastapi_server
    status, body, headers = get(port, "/stream?n=3")
    assert (status, body) == (200, b"part 0\npart 1\npart 2\n")
    assert headers["transfer-encoding"] == "chunked"


def test_lifespan_state_reaches_every_request_and_shutdown_runs_on_term(fastapi_server, marks):
    server, port = fastapi_server
    worker = the_worker(server, port)
    status, body, _ = get(port, "/state")
    assert status == 200
    assert json.loads(body) == {"started_by": worker, "greeting": "hello from lifespan"}
    assert lines(marks) == ["startup"]
    server.signal(signal.SIGTERM)
    wait_until(lambda: server.proc.poll() is not None, 15, what="the master to exit")
    assert lines(marks) == ["startup", "shutdown"]


def test_a_background_task_runs_after_the_response(fastapi_server, marks):
    server, port = fastapi_server
    the_worker(server, port)
    started = time.monotonic()
    status, body, _ = get(port, "/background", method="POST", body=b"")
    assert (status, body) == (202, b"accepted")
    assert time.monotonic() - started < 0.3  # the response did not wait for the task
    wait_until(lambda: "background done" in lines(marks), 5, what="the background task")
    # The connection that carried it serves on meanwhile.
    assert get(port, "/json")[0] == 200


def test_a_large_upload_is_read_in_chunks_in_bounded_memory(fastapi_server):
    server, port = fastapi_server
    worker = the_worker(server, port)
    get(port, "/reset", method="POST", body=b"")
    size = 64 * 1024 * 1024
    before = vm_kib(worker, "VmHWM")
    piece = b"u" * (256 * 1024)

    def body():
        for _ in range(size // len(piece)):
            yield piece

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/upload", body=body(), headers={"Content-Length": str(size)})
    resp = conn.getresponse()
    assert (resp.status, json.loads(resp.read())) == (200, {"received": size})
    conn.close()
    progress = json.loads(get(port, "/progress")[1])
    # The body came in many pieces, none near its size, and the worker's peak memory
    # grew by a small part of it (the event worker would have spooled it whole).
    assert progress["chunks"] > 64 and progress["largest_chunk"] < 1024 * 1024, progress
    assert vm_kib(worker, "VmHWM") - before < 16 * 1024, (before, vm_kib(worker, "VmHWM"))


def test_a_client_that_reads_slowly_holds_the_app_back(fastapi_server):
    server, port = fastapi_server
    get(port, "/reset", method="POST", body=b"")
    chunk, count = 64 * 1024, 512  # 32 MiB in all
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /stream?n=%d&size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (count, chunk))
        time.sleep(1.0)  # read nothing: send() must wait on the transport's drain
        produced = json.loads(get(port, "/progress")[1])["produced"]
        assert produced < 8 * 1024 * 1024, produced  # far from the 32 MiB it would make
        received = 0
        data = b""
        while received < chunk * count:
            part = sock.recv(1 << 20)
            assert part, "the connection closed early"
            data = (data + part)[-64:]
            received += len(part)
    assert json.loads(get(port, "/progress")[1])["produced"] == chunk * count


def test_a_client_that_leaves_is_an_http_disconnect(fastapi_server, marks):
    _, port = fastapi_server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
    wait_until(lambda: "disconnected" in lines(marks), 5, what="http.disconnect in the app")


class Responses:
    """Reads responses with a Content-Length off one connection, pipelined ones too."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""

    def _more(self) -> None:
        part = self.sock.recv(65536)
        assert part, self.data
        self.data += part

    def next(self) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in self.data:
            self._more()
        head, _, rest = self.data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(rest) < length:
            self._more()
            head, _, rest = self.data.partition(b"\r\n\r\n")
        self.data = rest[length:]
        return head, rest[:length]


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    return Responses(sock).next()


def test_a_small_unread_body_keeps_the_connection(fastapi_server):
    _, port = fastapi_server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n"
                     + b"b" * 10000)
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and b"close" not in head.lower()
        sock.sendall(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["app"] == "fastapi"


def test_a_large_unread_body_closes_the_connection_cleanly(fastapi_server):
    _, port = fastapi_server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n"
                     + b"b" * 100000)
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
        assert body == b"not read"
    assert get(port, "/json")[0] == 200  # and the worker serves on


def test_an_app_error_is_a_500_and_the_worker_serves_on(fastapi_server):
    server, port = fastapi_server
    assert get(port, "/boom")[0] == 500
    assert get(port, "/json")[0] == 200
    assert "ValueError: boom" in server.log()


def test_pipelined_requests_are_answered_in_order(fastapi_server):
    _, port = fastapi_server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"".join(b"GET /json?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
                              for i in range(5)))
        responses = Responses(sock)
        answers = [json.loads(responses.next()[1])["args"]["i"] for _ in range(5)]
    assert answers == ["0", "1", "2", "3", "4"]


def test_django_asgi_handler(polycorn, port):
    polycorn("-b", f"127.0.0.1:{port}", "-k", "asgi", "django_app.asgi", wait_port=port,
             cwd=EXAMPLES)
    status, body, _ = get(port, "/")
    assert (status, body) == (200, b"Hello from Django\n")
    assert get(port, "/echo", method="POST", body=b"abc" * 100000)[1] == b"abc" * 100000
    status, body, headers = get(port, "/stream?n=3")
    assert (status, body) == (200, b"chunk 0\nchunk 1\nchunk 2\n")
    assert json.loads(get(port, "/json?a=1")[1])["args"] == {"a": "1"}
    assert get(port, "/missing")[0] == 404


def test_access_log_and_max_requests(polycorn, port, tmp_path):
    access = tmp_path / "access.log"
    server = polycorn("-k", "asgi", "-b", f"127.0.0.1:{port}", "--access-logfile", str(access),
                      "--max-requests", "3", "fastapi_app:app", wait_port=port, cwd=APPS)
    first = [the_worker(server, port)]
    for _ in range(2):
        assert get(port, "/json")[0] == 200
    wait_until(lambda: server.workers() and server.workers() != first, 10,
               what="a new worker after --max-requests")
    assert get(port, "/json")[0] == 200
    wait_until(lambda: len(access.read_text().splitlines()) == 4, 5, what="4 access log lines")
    logged = access.read_text().splitlines()
    assert len(logged) == 4 and all('"GET /json HTTP/1.1" 200' in line for line in logged), logged


def test_the_health_check_runs_after_lifespan_startup(polycorn, port, marks):
    server = polycorn("-k", "asgi", "-b", f"127.0.0.1:{port}", "--health-check", "/health",
                      "fastapi_app:app", wait_port=port, cwd=APPS, env={"ASGI_MARKS": str(marks)})
    wait_until(lambda: "ready" in server.log(), 15, what="the worker ready")
    assert get(port, "/health")[0] == 200


def test_a_failed_lifespan_startup_stops_the_boot(polycorn, port):
    server = polycorn("-k", "asgi", "-b", f"127.0.0.1:{port}", "fastapi_app:app", cwd=APPS,
                      env={"ASGI_FAIL_STARTUP": "1"})
    assert server.proc.wait(20) != 0
    assert "lifespan startup failed: " in server.log(), server.log()
    assert "the database is unreachable" in server.log()


@pytest.mark.parametrize("alias", ["uvicorn.workers.UvicornWorker",
                                   "uvicorn_worker.UvicornWorker"])
def test_uvicorn_worker_names_are_served_by_the_asgi_worker(polycorn, port, alias):
    server = polycorn("-k", alias, "-b", f"127.0.0.1:{port}", "fastapi_app:app",
                      wait_port=port, cwd=APPS)
    assert get(port, "/json")[0] == 200
    notices = [line for line in server.log().splitlines() if f"-k {alias} is served" in line]
    assert len(notices) == 1, server.log()


@pytest.mark.parametrize("worker,app,expected", [
    ("asgi", "wireapp:application", "is a WSGI application and -k asgi serves ASGI apps: "
                                    "run it with -k event"),
    ("event", "fastapi_app:app", "is an ASGI application and -k event serves WSGI apps: "
                                 "run it with -k asgi"),
    ("sync", "fastapi_app:app", "-k sync serves WSGI apps: run it with -k asgi"),
])
def test_an_app_of_the_wrong_shape_stops_the_boot_with_one_line(polycorn, port, worker, app,
                                                                 expected):
    server = polycorn("-k", worker, "-b", f"127.0.0.1:{port}", app, cwd=APPS)
    assert server.proc.wait(20) != 0
    matching = [line for line in server.log().splitlines() if expected in line]
    assert matching and app in matching[0], server.log()
    assert "Traceback" not in server.log()


def test_the_asgi_loop_can_be_asyncio(polycorn, port):
    polycorn("-k", "asgi", "--asgi-loop", "asyncio", "-b", f"127.0.0.1:{port}",
             "fastapi_app:app", wait_port=port, cwd=APPS)
    assert get(port, "/json")[0] == 200


def test_root_path_reaches_the_scope(polycorn, port, tmp_path):
    app = tmp_path / "rootapp.py"
    app.write_text(
        "async def app(scope, receive, send):\n"
        "    assert scope['type'] == 'http'\n"
        "    body = (scope['root_path'] + '|' + scope['path']).encode()\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': body})\n")
    polycorn("-k", "asgi", "--asgi-lifespan", "off", "--root-path", "/api",
             "-b", f"127.0.0.1:{port}", "rootapp:app", wait_port=port, cwd=tmp_path)
    assert get(port, "/api/x%20y")[1] == b"/api|/api/x y"


def test_without_lifespan_support_auto_goes_on_and_on_stops(polycorn, port):
    polycorn("-k", "asgi", "-b", f"127.0.0.1:{port}", "wireapp:asgi_application",
             wait_port=port, cwd=APPS, env={"WIRE_LOG": os.devnull})
    assert get(port, "/x")[1] == b"ok"
    other = polycorn("-k", "asgi", "--asgi-lifespan", "on", "-b", f"127.0.0.1:{free_port()}",
                     "wireapp:asgi_application", cwd=APPS, env={"WIRE_LOG": os.devnull})
    assert other.proc.wait(20) != 0
    assert "--asgi-lifespan on, but the app does not support lifespan" in other.log()


def test_a_closing_response_to_a_request_without_a_body_closes_at_once(fastapi_server):
    # The app never calls receive() for a GET: that is not an unread body to linger on
    # (a half-close, then a second waiting for the client's FIN): the socket closes.
    _, port = fastapi_server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
        sock.send(b"more")  # a closed socket answers with a reset, a lingering one reads it
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            sock.recv(65536)
            sock.send(b"more")
            sock.recv(65536)


def test_pre_and_post_request_hooks_see_every_request(polycorn, port, tmp_path):
    # Gunicorn 27's -k asgi calls pre_request and post_request around each request.
    notes = tmp_path / "hooks.log"
    conf = tmp_path / "hooks_conf.py"
    conf.write_text(
        f"NOTES = {str(notes)!r}\n"
        "def pre_request(worker, req):\n"
        "    open(NOTES, 'a').write(f'pre {req.method} {req.path}\\n')\n"
        "def post_request(worker, req, environ, resp):\n"
        "    open(NOTES, 'a').write(f'post {req.path} {resp.status}\\n')\n")
    polycorn("-k", "asgi", "-c", str(conf), "-b", f"127.0.0.1:{port}", "fastapi_app:app",
             wait_port=port, cwd=APPS)
    assert get(port, "/json")[0] == 200
    assert get(port, "/boom")[0] == 500
    wait_until(lambda: len(lines(notes)) == 4, 5, what="four hook notes")
    assert lines(notes) == ["pre GET /json", "post /json 200 OK",
                            "pre GET /boom", "post /boom 500 Internal Server Error"]


def test_a_drain_while_an_unread_body_is_skipped_closes_cleanly(fastapi_server):
    # The app answered without reading its body; the rest of the body is being
    # skipped (to keep the connection) when TERM begins the drain: the connection
    # then closes after the body, it does not try to carry another request.
    server, port = fastapi_server
    the_worker(server, port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n"
                     + b"b" * 100)
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and b"close" not in head.lower()
        server.signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(b"b" * 9900)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert rest == b""
    wait_until(lambda: server.proc.poll() is not None, 15, what="the master to exit")
    assert "LocalProtocolError" not in server.log(), server.log()


SLOW_STARTUP_APP = """
import asyncio


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await asyncio.sleep(4)  # warming a pool: longer than --timeout
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"warm"})
"""


def test_a_lifespan_startup_longer_than_the_timeout_is_not_killed(polycorn, port, tmp_path):
    (tmp_path / "slowstart.py").write_text(SLOW_STARTUP_APP)
    server = polycorn("-k", "asgi", "--timeout", "2", "-b", f"127.0.0.1:{port}",
                      "slowstart:app", wait_port=port, cwd=tmp_path)
    assert get(port, "/", timeout=15)[1] == b"warm"
    assert "no heartbeat" not in server.log() and "aborted" not in server.log(), server.log()
