"""Hooks where Gunicorn calls them, with what Gunicorn gives them; gunicorn.socket for
WebSocket libraries; the 500 a timed-out request gets (real processes and signals)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from support.http import get
from support.procs import ROOT, port_open, wait_until

APPS = ROOT / "tests" / "apps"

PARITY_CONF = '''
import json, os

bind = "unix:{sock}"  # its directory does not exist yet: on_starting makes it
workers = 2
LOG = os.environ["HOOK_LOG"]


def _note(**kw):
    with open(LOG, "a") as f:
        f.write(json.dumps(kw) + "\\n")


def nworkers_changed(server, new_value, old_value):
    _note(hook="nworkers_changed", new=new_value, old=old_value)


def on_starting(server):
    os.makedirs(os.path.dirname("{sock}"))
    _note(hook="on_starting", listeners=len(server.LISTENERS), proc_name=server.proc_name)


def when_ready(server):
    _note(hook="when_ready", listeners=[l.getsockname() for l in server.LISTENERS],
          workers=sorted(server.WORKERS), alive=[w.pid for w in server.WORKERS.values()],
          proc_name=server.proc_name)


def post_worker_init(worker):
    _note(hook="post_worker_init", pid=os.getpid(), wsgi=callable(worker.wsgi),
          sockets=[s.getsockname() for s in worker.sockets], booted=worker.booted)


def pre_request(worker, req):
    _note(hook="pre_request", booted=worker.booted, nr=worker.nr)
'''


def notes(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def unix_get(path, target: str = "/version") -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())
        return s.recv(4096)


def test_start_hooks_run_in_gunicorns_order_with_gunicorns_objects(polycorn, tmp_path):
    """nworkers_changed(server, 2, None), then on_starting before any socket is bound
    (here it makes the socket's directory), then the objects hooks read."""
    sock = tmp_path / "run" / "app.sock"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(textwrap.dedent(PARITY_CONF).format(sock=sock))
    log = tmp_path / "hooks.log"
    server = polycorn("-c", str(conf), "testapp:application", cwd=APPS,
                      env={"HOOK_LOG": str(log)})
    wait_until(lambda: any(n["hook"] == "when_ready" for n in notes(log)), 15,
               what=f"when_ready\n{server.log()}")
    assert unix_get(sock).startswith(b"HTTP/1.1 200")
    wait_until(lambda: any(n["hook"] == "pre_request" for n in notes(log)), 5, what="pre_request")
    got = notes(log)
    assert [n["hook"] for n in got[:2]] == ["nworkers_changed", "on_starting"]
    assert (got[0]["new"], got[0]["old"]) == (2, None)
    # The test harness names each server (-n), which Gunicorn's proc_name is.
    assert got[1] == {"hook": "on_starting", "listeners": 0, "proc_name": server.name}
    ready = next(n for n in got if n["hook"] == "when_ready")
    assert ready["listeners"] == [str(sock)] and ready["proc_name"] == server.name
    assert len(ready["workers"]) == 2 and sorted(ready["alive"]) == ready["workers"]
    inits = [n for n in got if n["hook"] == "post_worker_init"]
    assert {n["pid"] for n in inits} == set(ready["workers"])
    # Gunicorn sets worker.booted just after post_worker_init returns.
    assert all(n["wsgi"] and n["sockets"] == [str(sock)] and n["booted"] is False
               for n in inits)
    assert next(n for n in got if n["hook"] == "pre_request")["booted"] is True


ABORT_CONF = '''
import os

timeout = 1
workers = 1
LOG = os.environ["HOOK_LOG"]


def _note(*words):
    with open(LOG, "a") as f:
        f.write(" ".join(str(w) for w in words) + "\\n")


def worker_abort(worker):
    _note("worker_abort", getattr(worker, "aborted", None), worker.alive)


def post_request(worker, req, environ, resp):
    _note("post_request", req.path, resp.status)
'''


# The thread worker is left out: its heartbeat comes from its main loop, which a
# request hung in a pool thread does not stop, so no timeout fires for it.
@pytest.mark.parametrize("worker", ["sync", "event"])
def test_timed_out_request_gets_500_and_post_request(polycorn, port, tmp_path, worker):
    """Gunicorn's sync worker: SIGABRT after --timeout unwinds the app call, the client
    gets a 500 (not an empty reply), post_request runs, then the worker exits."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(textwrap.dedent(ABORT_CONF))
    log = tmp_path / "hooks.log"
    server = polycorn("-c", str(conf), "-k", worker, "-b", f"127.0.0.1:{port}",
                      "testapp:application", wait_port=port, cwd=APPS,
                      env={"HOOK_LOG": str(log)})
    (first,) = wait_until(lambda: (w := server.workers()) and len(w) == 1 and w, 10,
                          what="one worker")
    started = time.monotonic()
    status, _, headers = get(port, "/sleep?s=20", timeout=15)
    assert status == 500 and headers.get("connection") == "close"
    assert time.monotonic() - started < 10  # the 1 s timeout plus the master's turn
    wait_until(lambda: "post_request" in log.read_text(), 5, what="post_request")
    lines = log.read_text().splitlines()
    assert lines[0] == "worker_abort True False"
    assert lines[1] == "post_request /sleep 500 Internal Server Error"
    wait_until(lambda: (w := server.workers()) and first not in w, 10, what="a new worker")
    assert get(port, "/version")[0] == 200


WEBSOCKET_APP = '''
import simple_websocket


def application(environ, start_response):
    if environ["PATH_INFO"] != "/ws":
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    # What Flask-Sock does: simple-websocket takes the socket from environ
    # ("gunicorn.socket") and answers the handshake itself; after the session the
    # response raises StopIteration, Flask-Sock's word to Gunicorn to just close.
    ws = simple_websocket.Server(environ)
    assert ws.mode == "gunicorn"
    try:
        ws.send("echo: " + ws.receive(timeout=10))
    finally:
        # The client may close first (its close frame read by simple-websocket's thread):
        # then close() raises ConnectionClosed, which Flask-Sock swallows the same way.
        try:
            ws.close()
        except simple_websocket.ConnectionClosed:
            pass
    raise StopIteration()
'''


@pytest.mark.parametrize("worker", ["sync", "thread"])
def test_gunicorn_socket_serves_a_websocket(polycorn, port, tmp_path, worker):
    simple_websocket = pytest.importorskip("simple_websocket")
    (tmp_path / "wsapp.py").write_text(textwrap.dedent(WEBSOCKET_APP))
    server = polycorn("-k", worker, "-b", f"127.0.0.1:{port}", "wsapp:application",
                      wait_port=port, cwd=tmp_path)
    client = simple_websocket.Client.connect(f"ws://127.0.0.1:{port}/ws")
    try:
        client.send("hello")
        assert client.receive(timeout=10) == "echo: hello"
    finally:
        # The app closes the connection after its echo. simple-websocket's reader thread
        # then closes the socket, racing this close(): ConnectionClosed when it has said
        # so, EBADF (OSError) when the socket went first (seen once on the thread worker).
        with contextlib.suppress(simple_websocket.ConnectionClosed, OSError):
            client.close()
    assert get(port, "/")[:2] == (200, b"ok")  # the worker serves on
    assert "Traceback" not in server.log() and "Error handling" not in server.log()


def test_an_apps_own_sys_exit_is_a_500_and_the_worker_lives(polycorn, port, tmp_path):
    """An app calling sys.exit() is an application error (500), as in Gunicorn: it does
    not stop the worker (only the master's signals do)."""
    (tmp_path / "exitapp.py").write_text(textwrap.dedent('''
        import os, sys

        def application(environ, start_response):
            if environ["PATH_INFO"] == "/exit":
                sys.exit(3)
            start_response("200 OK", [("Content-Length", str(len(str(os.getpid()))))])
            return [str(os.getpid()).encode()]
    '''))
    polycorn("-w", "1", "-b", f"127.0.0.1:{port}", "exitapp:application", wait_port=port,
             cwd=tmp_path)
    before = get(port, "/")[1]
    assert get(port, "/exit")[0] == 500
    assert get(port, "/")[1] == before


@pytest.mark.parametrize("daemon", [False, True])
def test_a_failing_on_starting_ends_the_start_in_one_line(port, tmp_path, daemon):
    """Raised before any socket is bound; with -D, the daemon's error reaches the shell."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("def on_starting(server):\n    raise RuntimeError('no database')\n")
    argv = [sys.executable, "-m", "polycorn.server.main", "-c", str(conf), "-b",
            f"127.0.0.1:{port}", *(["-D"] if daemon else []), "testapp:application"]
    done = subprocess.run(argv, cwd=APPS, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "polycorn: error: start-up hook failed: RuntimeError('no database')")
    assert "Traceback" not in done.stderr
    assert not port_open(port)
