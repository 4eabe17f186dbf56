"""The dashboard in a real headless Chromium against three real polycorn nodes: the page
lists the nodes and the leader, shows a kill -9'd master's node dead with its event
within 2 s and without a reload, and fits 1280x800 and a phone's width.

Set POLYCORN_SCREENSHOTS=DIR to keep the pictures (docs/dashboard*.png come from here).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from dashsupport import Browser, Dashboard
from support.procs import wait_until

ROWS = """[...document.querySelectorAll('#nodes tbody tr')].map(tr => ({
  node: tr.dataset.node, leader: tr.querySelector('.star') !== null,
  state: tr.querySelector('.badge').textContent}))"""
EVENTS = """[...document.querySelectorAll('#events li')].map(li => [li.dataset.event,
  li.textContent])"""
FITS = "document.documentElement.scrollWidth <= window.innerWidth"


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
        assert browser.eval(ROWS)[0]["node"]  # the other nodes are still listed
        keep = os.environ.get("POLYCORN_SCREENSHOTS")
        where = Path(keep) if keep else tmp_path
        time.sleep(1.2)  # the next state push: heartbeat ages settle after the kill
        browser.screenshot(where / "dashboard.png", 1280, 800)
        browser.screenshot(where / "dashboard-phone.png", 390, 844, mobile=True)
        assert browser.eval(FITS), "the page scrolls sideways on a phone's width"
        assert (where / "dashboard.png").stat().st_size > 10_000
    finally:
        if browser is not None:
            browser.stop()
        d.stop()
