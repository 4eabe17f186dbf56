"""A real Prometheus (Debian's package) scrapes a real three-node cluster with
--metrics-bind under load, through a USR2 of one node and a kill -9 of another; its
HTTP API then shows the requests (with no counter reset across the upgrade), the
upgrade, and the node's death (its target down, node_dead counted by the leader)."""

from __future__ import annotations

import json
import signal

import pytest
from polycorn.ha import events as ev
from support.load import Load
from support.procs import ROOT, alive, free_port, kill_all, wait_until
from support.prometheus import Prometheus, prometheus_binary
from support.scrape import try_scrape, value
from test_agent import TTL_MS, observer

pytestmark = pytest.mark.skipif(prometheus_binary() is None,
                                reason="Debian's prometheus is not installed "
                                       "(scripts/system-deps.sh installs it)")

GET_2XX = 'polycorn_http_requests_total{method="GET",status="2xx"}'


def dashboard_queries() -> list[str]:
    dashboard = json.loads((ROOT / "examples" / "grafana-dashboard.json").read_text())
    return [target["expr"].replace("$job", "polycorn").replace("$node", ".*")
            for panel in dashboard["panels"] for target in panel["targets"]]


def start_node(polycorn, url: str, cluster: str, node_id: str):
    port, mport = free_port(), free_port()
    proc = polycorn("-b", f"127.0.0.1:{port}", "-w", "2", "--redis", url, "--cluster", cluster,
                    "--node-id", node_id, "--graceful-timeout", "5", "--metrics-bind",
                    f"127.0.0.1:{mport}", "hello:application", wait_port=port)
    return proc, port, mport


def test_prometheus_sees_requests_an_upgrade_and_a_node_death(redis_farm, polycorn,
                                                               cluster_name, tmp_path):
    url = redis_farm.server().url
    nodes = {n: start_node(polycorn, url, cluster_name, n) for n in ("p1", "p2", "p3")}
    store = observer(url, cluster_name)

    def settled():
        snap, records = store.nodes(TTL_MS)
        ready = [r for r in records if r.alive and r.info.state.value == "ready"]
        return snap.lease is not None and len(ready) == 3 and snap
    leader = wait_until(settled, 30, 0.05, what="three ready nodes and a leader").lease.holder
    upgraded, victim = [n for n in nodes if n != leader]
    served = [nodes[leader][1], nodes[upgraded][1]]
    prom = Prometheus(tmp_path / "prometheus", {n: mport for n, (_, _, mport) in nodes.items()})
    try:
        wait_until(lambda: prom.values("up") == {"p1": 1.0, "p2": 1.0, "p3": 1.0}, 20, 0.2,
                   what="every node scraped")
        with Load(served, "/", threads=2) as load:
            load.wait_requests(200)
            old_master = nodes[upgraded][0].pid
            nodes[upgraded][0].signal(signal.SIGUSR2)
            wait_until(lambda: value(try_scrape(nodes[upgraded][2]), "polycorn_reloads_total",
                                     signal="usr2", outcome="promoted", reason="") == 1,
                       30, 0.1, what="the upgrade promoted")
            wait_until(lambda: not alive(old_master), 15, what="the old generation's exit")
            load.wait_requests(200)
            killed = nodes[victim][0]
            kill_all([killed.pid, *killed.track()])
            wait_until(lambda: any(e.kind == ev.NODE_DEAD for e in store.read_events()), 15,
                       what="node_dead")
            load.wait_requests(200)
        assert load.result.failed == 0, load.result.summary()
        # Prometheus's last scrape of the two survivors adds up to every request answered.
        wait_until(lambda: sum(prom.values(GET_2XX).values()) == load.result.ok, 15, 0.2,
                   what=f"{load.result.ok} requests in Prometheus")
        window = "[5m]"
        # The upgrade replaced every process of the node, yet rate() sees no reset.
        assert prom.values(f"resets({GET_2XX}{window})") == {leader: 0.0, upgraded: 0.0,
                                                             victim: 0.0}
        # (A dead target's series are stale: an instant query shows the survivors only.)
        assert prom.values('polycorn_reloads_total{signal="usr2",outcome="promoted"}') == {
            leader: 0.0, upgraded: 1.0}
        assert prom.values(f'changes(polycorn_generation_boot_seconds{window})')[upgraded] >= 1
        # The node's death: its target went down after it had been up, and the leader
        # counted a node_dead.
        assert prom.values("up") == {leader: 1.0, upgraded: 1.0, victim: 0.0}
        assert prom.values(f"max_over_time(up{window})")[victim] == 1.0
        assert prom.values('polycorn_cluster_events_total{event="node_dead"}')[leader] >= 1
        assert prom.values("polycorn_cluster_leader") == {leader: 1.0, upgraded: 0.0}
        assert prom.values('polycorn_cluster_node_state{state="ready"}') == {
            leader: 1.0, upgraded: 1.0}
        assert max(prom.values("polycorn_cluster_heartbeat_age_seconds").values()) < 5
        # Every query of the example Grafana dashboard is one this Prometheus accepts.
        for expr in dashboard_queries():
            prom.query(expr)
    finally:
        prom.stop()
