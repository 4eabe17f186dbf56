"""A gunicorn.conf.py with hooks runs unchanged; Flask, Django and a validated app serve."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from support.http import get
from support.procs import EXAMPLES, ROOT, free_port, port_open, wait_until

APPS = ROOT / "tests" / "apps"

GUNICORN_CONF = '''
# A gunicorn.conf.py as operators write it, hooks included. Each hook appends one
# line "name pid args" to HOOK_LOG so the test can see who called it, where.
import os

bind = "127.0.0.1:{port}"
workers = 2
worker_class = "sync"
timeout = 30
graceful_timeout = 5
loglevel = "info"
accesslog = None
LOG = os.environ["HOOK_LOG"]


def _note(name, *args):
    with open(LOG, "a") as f:
        f.write(f"{{name}} {{os.getpid()}} {{' '.join(type(a).__name__ for a in args)}}\\n")


def on_starting(server): _note("on_starting", server)
def on_reload(server): _note("on_reload", server)
def when_ready(server): _note("when_ready", server)
def pre_fork(server, worker): _note("pre_fork", server, worker)
def post_fork(server, worker): _note("post_fork", server, worker)
def post_worker_init(worker): _note("post_worker_init", worker)
def worker_int(worker): _note("worker_int", worker)
def worker_abort(worker): _note("worker_abort", worker)
def pre_exec(server): _note("pre_exec", server)
def pre_request(worker, req): _note("pre_request", worker, req.method, req.path)
def post_request(worker, req, environ, resp): _note("post_request", worker, req, environ, resp.status)
def child_exit(server, worker): _note("child_exit", server, worker)
def worker_exit(server, worker): _note("worker_exit", server, worker)
def nworkers_changed(server, new_value, old_value): _note("nworkers_changed", server, new_value, old_value)
def on_exit(server): _note("on_exit", server)
'''


def hook_calls(path) -> list[tuple[str, int, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        name, pid, *types = line.split(" ", 2)
        out.append((name, int(pid), types[0] if types else ""))
    return out


def test_gunicorn_conf_with_hooks_runs_unchanged(polycorn, tmp_path):
    port = free_port()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(textwrap.dedent(GUNICORN_CONF).format(port=port))
    log = tmp_path / "hooks.log"
    server = polycorn("-c", str(conf), "testapp:application", wait_port=port, cwd=APPS,
                      env={"HOOK_LOG": str(log)})
    wait_until(lambda: sum(1 for c in hook_calls(log) if c[0] == "post_worker_init") == 2, 10,
               what="two workers initialised")
    assert get(port, "/pid")[0] == 200
    server.signal(signal.SIGTTIN)
    wait_until(lambda: any(c[0] == "nworkers_changed" for c in hook_calls(log)), 10,
               what="nworkers_changed")
    server.signal(signal.SIGHUP)
    wait_until(lambda: any(c[0] == "on_reload" for c in hook_calls(log)), 10, what="on_reload")
    wait_until(lambda: sum(1 for c in hook_calls(log) if c[0] == "child_exit") >= 3, 15,
               what="the old workers to exit")
    server.signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    calls = hook_calls(log)
    names = {c[0] for c in calls}
    master = server.pid
    for name in ("on_starting", "when_ready", "pre_fork", "post_fork", "post_worker_init",
                 "pre_request", "post_request", "child_exit", "worker_exit", "nworkers_changed",
                 "on_reload", "on_exit"):
        assert name in names, (name, calls)
    by_name = {}
    for name, pid, _ in calls:
        by_name.setdefault(name, set()).add(pid)
    # Gunicorn's places: master-side hooks in the master, worker-side ones in workers.
    for name in ("on_starting", "when_ready", "pre_fork", "child_exit", "on_exit", "on_reload"):
        assert by_name[name] == {master}, name
    for name in ("post_fork", "post_worker_init", "pre_request", "post_request", "worker_exit"):
        assert master not in by_name[name], name
    types = dict((c[0], c[2]) for c in calls)
    assert types["pre_fork"].split() == ["Arbiter", types["pre_fork"].split()[1]]
    assert types["post_request"].split()[2:] == ["dict", "str"]
    assert "pre_request" in names
    assert types["nworkers_changed"].split()[1:] == ["int", "int"]


def test_worker_abort_hook_on_timeout(polycorn, tmp_path):
    port = free_port()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(textwrap.dedent(GUNICORN_CONF).format(port=port).replace(
        "timeout = 30", "timeout = 1"))
    log = tmp_path / "hooks.log"
    polycorn("-c", str(conf), "-w", "1", "testapp:application", wait_port=port, cwd=APPS,
             env={"HOOK_LOG": str(log)})
    assert get(port, "/sleep?s=20", timeout=15)[0] == 500  # Gunicorn's answer, not a cut
    assert "worker_abort" in {c[0] for c in hook_calls(log)}


@pytest.mark.parametrize("worker", ["sync", "thread"])
def test_flask_example(polycorn, port, worker):
    polycorn("-b", f"127.0.0.1:{port}", "-k", worker, "flask_app:create_app()",
             wait_port=port, cwd=EXAMPLES)
    assert get(port, "/")[:2] == (200, b"Hello from Flask\n")
    assert get(port, "/echo", method="POST", body=b"x" * 5000)[1] == b"x" * 5000
    status, body, headers = get(port, "/stream?n=3")
    assert (status, body) == (200, b"chunk 0\nchunk 1\nchunk 2\n")
    assert headers.get("transfer-encoding") == "chunked"
    assert get(port, "/json?a=1")[1].startswith(b"{")


@pytest.mark.parametrize("worker", ["sync", "thread"])
def test_django_example(polycorn, port, worker):
    polycorn("-b", f"127.0.0.1:{port}", "-k", worker, "django_app.wsgi", wait_port=port,
             cwd=EXAMPLES)
    status, body, _ = get(port, "/")
    assert status == 200 and body
    assert get(port, "/echo", method="POST", body=b"abc" * 1000)[1] == b"abc" * 1000
    assert get(port, "/missing")[0] == 404


VALIDATED_APP = '''
from wsgiref.validate import validator


def _app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body) + 2))])
    return [b"ok", body]


application = validator(_app)
'''


@pytest.mark.parametrize("worker", ["sync", "thread"])
def test_wsgiref_validator_finds_nothing(polycorn, port, worker, tmp_path):
    (tmp_path / "validated.py").write_text(VALIDATED_APP)
    server = polycorn("-b", f"127.0.0.1:{port}", "-k", worker, "validated:application",
                      wait_port=port, cwd=tmp_path)
    for _ in range(3):
        assert get(port, "/x?y=1", method="POST", body=b"data")[:2] == (200, b"okdata")
        assert get(port, "/")[:2] == (200, b"ok")
    assert "AssertionError" not in server.log()
    assert "Traceback" not in server.log()


def test_unix_socket_and_ipv6(polycorn, tmp_path):
    path = tmp_path / "s.sock"
    port = free_port()
    polycorn("-b", f"unix:{path}", "-b", f"[::1]:{port}", "testapp:application", cwd=APPS)
    wait_until(lambda: path.exists() and port_open(port, "::1"), 10, what="both listeners")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(b"GET /version HTTP/1.0\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    assert get(port, "/version", host="::1")[0] == 200


def test_systemd_socket_activation(tmp_path):
    """LISTEN_FDS/LISTEN_PID: the listener at fd 3 is used and nothing is bound."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    # bash (dash marks such fds close-on-exec) moves the socket to fd 3 and sets LISTEN_PID to its own pid, which
    # `exec` hands on to polycorn: what systemd does.
    script = (f"exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec {sys.executable} "
              f"-m polycorn.server.main -b 127.0.0.1:1 testapp:application")
    proc = subprocess.Popen(["bash", "-c", script], cwd=APPS, pass_fds=[fd],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: _answers(port), 15, what="the activated socket to answer")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        listener.close()


def _answers(port: int) -> bool:
    try:
        return get(port, "/version", timeout=1)[0] == 200
    except OSError:
        return False


def test_fd_bind(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    proc = subprocess.Popen([sys.executable, "-m", "polycorn.server.main", "-b", f"fd://{fd}",
                             "testapp:application"], cwd=APPS, pass_fds=[fd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_until(lambda: _answers(port), 15, what="fd:// listener to answer")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        listener.close()
