"""The dashboard in a real headless Chromium against three real polycorn nodes: the page
lists the nodes and the leader, shows a kill -9'd master's node dead with its event
within 2 s and without a reload, and fits 1280x800 and a phone's width; read-only it
shows no action control; with --allow-actions, the page's own buttons drain a node and
start a rolling upgrade whose progress it shows.

Set POLYCORN_SCREENSHOTS=DIR to keep the pictures: docs/dashboard.png (mid-rollout, a node
dead) and docs/dashboard-phone.png come from here.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from dashsupport import Browser, Dashboard
from polycorn.ha.dashboard.guard import TOKEN_ENV
from support.procs import wait_until

ROWS = """[...document.querySelectorAll('#nodes tbody tr')].map(tr => ({
  node: tr.dataset.node, leader: tr.querySelector('.star') !== null,
  state: tr.querySelector('.badge').textContent}))"""
EVENTS = """[...document.querySelectorAll('#events li')].map(li => [li.dataset.event,
  li.textContent])"""
FITS = "document.documentElement.scrollWidth <= window.innerWidth"
CONTROLS = """[...document.querySelectorAll('button, input')].filter(e => e.offsetParent !== null)
  .length"""
TOKEN = "a-token-for-the-browser-test-0123"


def test_page_in_chromium_shows_nodes_leader_and_a_kill_live(cluster, tmp_path):
    d = Dashboard(tmp_path, cluster.redis_url, cluster.name)
    browser = None
    try:
        browser = Browser(tmp_path, d.url)
        leader = cluster.store.snapshot().lease.holder

        def listed():
            rows = browser.eval(ROWS) or []
            return rows if len(rows) == 3 and all(r["state"] == "ready" for r in rows) else None
        rows = wait_until(listed, 20, interval=0.1, what="three ready nodes on the page")
        assert sorted(r["node"] for r in rows) == ["p1", "p2", "p3"]
        assert [r["node"] for r in rows if r["leader"]] == [leader]
        assert browser.eval("document.getElementById('leader').textContent") == leader
        assert browser.eval("document.getElementById('link').textContent") == "live"
        assert browser.eval(FITS), "the page scrolls sideways at 1280x800"
        browser.eval("window.__loaded = performance.timeOrigin")  # gone if the page reloads

        victim = next(n for n in ("p1", "p2", "p3") if n != leader)
        master = cluster.records()[victim].info.pid
        killed = time.monotonic()
        os.kill(master, signal.SIGKILL)

        def dead_with_event():
            row = next(r for r in browser.eval(ROWS) if r["node"] == victim)
            seen = [e for e in browser.eval(EVENTS)
                    if e[0] in ("node_gone", "node_dead") and f" {victim}" in e[1]]
            return row["state"] == "dead" and seen and time.monotonic() - killed
        took = wait_until(dead_with_event, 10, interval=0.05,
                          what=f"{victim} dead on the page with its event")
        print(f"\nDASHBOARD kill -9 of {victim}'s master -> dead + event on the page: "
              f"{took:.2f}s")
        assert took < 2.0
        assert browser.eval("window.__loaded") is not None  # no reload happened
        assert browser.eval(CONTROLS) == 0  # read-only: no button, no token field
        assert len(browser.eval(ROWS)) == 3  # the dead node stays listed
        keep = os.environ.get("POLYCORN_SCREENSHOTS")
        where = Path(keep) if keep else tmp_path
        browser.screenshot(where / "dashboard-phone.png", 390, 844, mobile=True)
        assert browser.eval(FITS), "the page scrolls sideways on a phone's width"
        assert browser.eval(CONTROLS) == 0
        assert (where / "dashboard-phone.png").stat().st_size > 10_000
        browser.call("Emulation.clearDeviceMetricsOverride")
        actions_phase(cluster, browser, tmp_path, victim)
    finally:
        if browser is not None:
            browser.stop()
        d.stop()


def row_state(browser: Browser, node: str) -> str | None:
    return next((r["state"] for r in browser.eval(ROWS) if r["node"] == node), None)


def actions_phase(cluster, browser: Browser, tmp_path: Path, dead: str) -> None:
    """The same browser on a dashboard started with --allow-actions."""
    d = Dashboard(tmp_path, cluster.redis_url, cluster.name, "--allow-actions",
                  env={TOKEN_ENV: TOKEN})
    try:
        browser.call("Page.navigate", url=d.url)
        wait_until(lambda: row_state(browser, dead) == "dead", 20, interval=0.1,
                   what="the page of the second dashboard")
        live = sorted(n for n in ("p1", "p2", "p3") if n != dead)
        # the operator's answers to the page's confirm() and prompt()
        browser.eval("window.confirm = () => true; window.prompt = () => '1'")
        button = f"document.querySelector('button[data-node=\"{live[0]}\"]')"
        browser.eval(f"{button}.click()")  # no token typed yet: refused
        wait_until(lambda: "refused (401)" in browser.eval(
            "document.getElementById('action-result').textContent"), 5, what="a 401 shown")
        assert cluster.store.cluster_state(60_000).drained == frozenset()
        browser.eval(f"document.getElementById('token').value = '{TOKEN}'")
        browser.eval(f"{button}.click()")
        start = time.monotonic()
        wait_until(lambda: row_state(browser, live[0]) == "draining", 10, interval=0.05,
                   what=f"{live[0]} draining on the page")
        print(f"\nDASHBOARD Drain button -> draining on the page: {time.monotonic() - start:.2f}s")
        browser.eval(f"{button}.click()")  # now the Undrain button
        wait_until(lambda: row_state(browser, live[0]) == "ready", 10, interval=0.05,
                   what=f"{live[0]} ready again")

        cluster.site.release("r2")
        cluster.site.switch("r2")
        browser.eval("document.getElementById('upgrade').click()")
        wait_until(lambda: browser.eval("!document.getElementById('rollout').hidden"), 10,
                   interval=0.05, what="the rollout shown")
        wait_until(lambda: browser.eval(
            "document.getElementById('rollout-line').textContent.includes('upgrading for')"),
            30, interval=0.05, what="a node upgrading on the page")
        keep = os.environ.get("POLYCORN_SCREENSHOTS")
        where = Path(keep) if keep else tmp_path
        browser.screenshot(where / "dashboard.png", 1280, 800)

        def finished():
            rollout = cluster.store.cluster_state(60_000).rollout
            return rollout if rollout.state.value != "running" else None
        rollout = wait_until(finished, 120, interval=0.2, what="the rollout finished")
        assert rollout.state.value == "done", rollout
        assert {r.info.release for r in cluster.records().values() if r.alive} == {"r2"}
        assert "dashboard" in rollout.requested_by
        wait_until(lambda: browser.eval("document.getElementById('rollout').hidden"), 10,
                   interval=0.1, what="the finished rollout hidden")
    finally:
        d.stop()
