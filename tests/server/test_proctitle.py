"""Process titles the Gunicorn way, with setproctitle installed (the proctitle extra):
`polycorn: master [NAME]` and `polycorn: worker [NAME]`, NAME from -n/--name, else the
application spec; a HUP that brings a new proc_name retitles. Reading titles back
(`name_of`) is what the test and deploy harnesses find processes by."""

from __future__ import annotations

import signal

import pytest
from polycorn.server import proctitle
from support.procs import ROOT, alive, wait_until

APPS = ROOT / "tests" / "apps"

needs_setproctitle = pytest.mark.skipif(not proctitle.available(),
                                        reason="setproctitle (the proctitle extra) is missing")


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def titles(server) -> tuple[tuple[str, str] | None, list[tuple[str, str] | None]]:
    return (proctitle.parse(cmdline(server.pid)),
            sorted(proctitle.parse(cmdline(w)) or ("?", "?") for w in server.workers()))


@needs_setproctitle
def test_master_and_workers_carry_the_name_given_by_n(polycorn, port):
    server = polycorn("-n", "shop", "-w", "2", "-b", f"127.0.0.1:{port}",
                      "testapp:application", wait_port=port, cwd=APPS)
    wait_until(lambda: len(server.workers()) == 2, 10, what="two workers")
    assert cmdline(server.pid).split(b"\0")[0] == b"polycorn: master [shop]"
    wait_until(lambda: titles(server) == (("master", "shop"),
                                          [("worker", "shop"), ("worker", "shop")]),
               10, what="the workers' titles")


@needs_setproctitle
def test_the_default_name_is_the_application_spec(polycorn, port):
    # Gunicorn's default proc_name: the application module string.
    server = polycorn("-w", "1", "-b", f"127.0.0.1:{port}", "testapp:application",
                      wait_port=port, cwd=APPS, auto_name=False)
    wait_until(lambda: titles(server) == (("master", "testapp:application"),
                                          [("worker", "testapp:application")]),
               10, what="titles named after the application")


@needs_setproctitle
def test_a_hup_with_a_new_proc_name_retitles(polycorn, port, tmp_path):
    conf = tmp_path / "polycorn.conf.py"
    conf.write_text('proc_name = "before"\n')
    server = polycorn("-c", str(conf), "-w", "1", "-b", f"127.0.0.1:{port}",
                      "testapp:application", wait_port=port, cwd=APPS, auto_name=False)
    wait_until(lambda: titles(server) == (("master", "before"), [("worker", "before")]), 10,
               what="the first titles")
    conf.write_text('proc_name = "after"\n')
    server.signal(signal.SIGHUP)
    wait_until(lambda: titles(server) == (("master", "after"), [("worker", "after")]), 20,
               what="the titles after HUP")
    assert alive(server.pid)


def test_name_of_reads_titles_and_the_name_option_of_polycorn_commands_only():
    assert proctitle.name_of(b"polycorn: agent [shop]\0\0\0") == "shop"
    assert proctitle.parse(b"polycorn: worker [a [b]]") == ("worker", "a [b]")
    assert proctitle.name_of(b"python3\0-m\0polycorn.server.main\0-n\0shop\0app:app\0") == "shop"
    assert proctitle.name_of(b"/srv/venv/bin/polycorn\0--name=shop\0app:app\0") == "shop"
    assert proctitle.name_of(b"/usr/bin/python3\0/srv/venv/bin/polycorn\0-nshop\0") == "shop"
    # Not polycorn, whatever the arguments say: never taken for one of its processes.
    assert proctitle.name_of(b"tail\0-n\0shop\0/var/log/polycorn.log\0") is None
    assert proctitle.name_of(b"python3\0-m\0polycorn.server.main\0app:app\0") is None
    assert proctitle.name_of(b"") is None
