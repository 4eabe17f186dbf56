"""What the chaos runner reads from HAProxy: its log lines, and the facts per fault.

The log lines are HAProxy 2.6's own output (`log stdout format iso` with the
generated log-format); the facts are computed from a log and `show stat` samples
recorded in a run directory, as the runner does after the load.
"""

from __future__ import annotations

from polycorn.ha.process_tracker import ProcessTracker

from loadtests.faults import FaultRecord
from loadtests.front import HaproxyFront, front_facts, parse_log, taken_out_at
from loadtests.scenario import Fault

T0 = 1_796_297_600


def iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat()


def accept_date(t: float) -> str:
    """HAProxy's httplog accept date, in local time."""
    from datetime import datetime

    return datetime.fromtimestamp(t).strftime("%d/%b/%Y:%H:%M:%S.%f")[:-3]


def request_line(t: float, server: str, status: int, ta: int, state: str = "----",
                 retries: str = "0") -> str:
    """A line as HAProxy 2.6 writes it with `log stdout format iso` and `option httplog`."""
    return (f"{iso(t)} 127.0.0.1:47942 [{accept_date(t)}] polycorn_front polycorn/{server} "
            f"0/0/0/0/{ta} {status} 116 - - {state} 1/1/0/0/{retries} 0/0 \"GET / HTTP/1.1\"")


LOG = "\n".join([
    "[WARNING]  (6512) : Server polycorn/n1 is UP/READY (leaving forced maintenance).",
    f"{iso(T0 + 1)} Server polycorn/n1 is UP/READY (leaving forced maintenance).",
    request_line(T0 + 10.281, "n2", 200, 8),
    request_line(T0 + 10.400, "n2", 200, 9),
    request_line(T0 + 10.900, "n2", 504, 2001, "sH--"),
    request_line(T0 + 11.100, "n1", 200, 3),
    request_line(T0 + 12.100, "n2", 200, 3),
    request_line(T0 + 9.999, "<NOSRV>", 503, 0, "SC--"),
    "[WARNING]  (6512) : Server polycorn/n2 is DOWN, reason: Layer7 timeout, check duration: "
    "200ms.", ""])


def test_request_and_state_lines_are_read_from_haproxys_log():
    text = LOG + f"{iso(T0 + 10.95)} Server polycorn/n2 is DOWN, reason: Layer7 timeout.\n"
    requests, changes = parse_log(text)
    assert [(r.server, r.status, r.total_ms, r.termination) for r in requests[:3]] == [
        ("n2", 200, 8, "----"), ("n2", 200, 9, "----"), ("n2", 504, 2001, "sH--")]
    assert abs(requests[0].accepted - (T0 + 10.281)) < 1e-6
    assert requests[-1].server == "<NOSRV>"
    assert [(c.server, c.state) for c in changes] == [("n1", "UP"), ("n2", "DOWN")]
    assert abs(changes[-1].at - (T0 + 10.95)) < 1e-3


def front_in(tmp_path, log: str, samples) -> HaproxyFront:
    front = HaproxyFront(ProcessTracker(tmp_path), tmp_path, "c", "redis://127.0.0.1:1", 1)
    front.log_path.write_text(log)
    front.samples = samples
    return front


def row(status: str, port: int, stot: int = 0) -> dict:
    return {"status": status, "addr": f"127.0.0.1:{port}", "stot": str(stot)}


class Node:
    def __init__(self, port: int) -> None:
        self.port = port


class Cluster:
    nodes = {"n1": Node(8001), "n2": Node(8002), "n4": Node(8004)}


def test_a_paused_node_may_lose_what_haproxy_sent_it_before_taking_it_out(tmp_path):
    samples = [(T0 + 10.0, {"n1": row("UP", 8001), "n2": row("UP", 8002)}),
               (T0 + 11.0, {"n1": row("UP", 8001), "n2": row("DOWN", 8002)})]
    log = LOG + f"{iso(T0 + 10.95)} Server polycorn/n2 is DOWN, reason: Layer7 timeout.\n"
    front = front_in(tmp_path, log, samples)
    assert taken_out_at(front, "n2", T0 + 10.2) == T0 + 10.95  # the log beats the sampler
    pause = FaultRecord(Fault(10.0, "pause-node", "n2", 5.0), node="n2", started=T0 + 10.2,
                        ended=T0 + 15.2)
    seconds = [{"t": T0 + t, "requests": 400 if t in (11, 12) else 500} for t in range(20)]
    front_facts(front, [pause], Cluster(), 500.0, seconds)
    # accepted at .281, .400 and .900 of second 10, before the DOWN at 10.95; not 11.1 (n1)
    assert pause.allowed_failures == 3
    assert pause.facts["slot"] == "n2"
    assert pause.facts["front_out_s"] == 0.75
    assert pause.facts["pause_throughput_share"] == 0.9  # seconds 11-14: (2 x 400 + 2 x 500) / 2000


def test_a_node_cut_from_the_front_may_lose_what_haproxy_sent_it_before_taking_it_out(
        tmp_path):
    samples = [(T0 + 10.0, {"n1": row("UP", 8001), "n2": row("UP", 8002)})]
    log = LOG + f"{iso(T0 + 10.95)} Server polycorn/n2 is DOWN, reason: Layer4 timeout.\n"
    cut = FaultRecord(Fault(10.0, "cut-front", "n2", 3.0), node="n2", started=T0 + 10.3,
                      ended=T0 + 13.3, allowed_failures=None)
    front_facts(front_in(tmp_path, log, samples), [cut], Cluster(), 500.0, [])
    # .400 and .900; not .281 (done in 8 ms, before the cut), not 12.100 (after the DOWN)
    assert cut.allowed_failures == cut.facts["exposed_requests"] == 2
    assert cut.facts["front_out_s"] == 0.65
    assert "pause_throughput_share" not in cut.facts


def test_a_link_fault_may_lose_the_requests_the_node_held_during_it_and_no_more(tmp_path):
    """cut-front or lossy-node: what HAProxy had on the node at some moment of the fault
    (in flight at its start included), up to the heal when HAProxy never took the node
    out or took it out only long after (another fault's doing)."""
    log = "\n".join([request_line(T0 + 9.0, "n2", 200, 5),        # done before
                      request_line(T0 + 9.8, "n2", -1, 2400, "sH--"),  # in flight at the start
                      request_line(T0 + 10.5, "n2", 200, 1500),    # slowed by the losses
                      request_line(T0 + 11.0, "n1", 200, 3),       # another node
                      request_line(T0 + 12.9, "n2", 200, 4),       # just before the heal
                      request_line(T0 + 13.5, "n2", 200, 4), ""])  # after the heal
    samples = [(T0 + 10.0, {"n1": row("UP", 8001), "n2": row("UP", 8002)})]
    lossy = FaultRecord(Fault(10.0, "lossy-node", "n2", 3.0), node="n2", started=T0 + 10.0,
                        ended=T0 + 13.0)
    front_facts(front_in(tmp_path, log, samples), [lossy], Cluster(), 500.0, [])
    assert lossy.allowed_failures == lossy.facts["exposed_requests"] == 3
    assert lossy.facts["front_out_s"] is None
    late = log + f"{iso(T0 + 20.0)} Server polycorn/n2 is DOWN, reason: Layer4 timeout.\n"
    cut = FaultRecord(Fault(10.0, "cut-front", "n2", 3.0), node="n2", started=T0 + 10.0,
                      ended=T0 + 13.0)
    front_facts(front_in(tmp_path, late, samples), [cut], Cluster(), 500.0, [])
    assert cut.allowed_failures == 3  # a DOWN 7 s after the heal is not this cut's
    unfinished = FaultRecord(Fault(10.0, "lossy-node", "n2", 3.0), node="n2", started=T0 + 10.0)
    front_facts(front_in(tmp_path, log, samples), [unfinished], Cluster(), 500.0, [])
    assert unfinished.allowed_failures is None  # cut short: no end, no bound


def test_a_request_redispatched_off_the_faulted_node_counts_for_its_fault(tmp_path):
    """chaos --random 1: six requests on a slowed node waited 2.6 s until the sync shut its
    sessions, were redispatched and answered 200 by other nodes (logged under them, with
    '+1' retries), and had timed out at the client: the slow-front's allowance was 0."""
    log = "\n".join([request_line(T0 + 10.5, "n1", 200, 2600, retries="+1"),  # off n2
                      request_line(T0 + 10.6, "n1", 200, 3),  # an ordinary request
                      request_line(T0 + 14.0, "n1", 200, 2600, retries="+1"), ""])  # after
    requests, _ = parse_log(log)
    assert [r.redispatched for r in requests] == [True, False, True]
    samples = [(T0 + 10.0, {"n1": row("UP", 8001), "n2": row("UP", 8002)})]
    slow = FaultRecord(Fault(10.0, "slow-front", "n2", 3.0), node="n2", started=T0 + 10.0,
                       ended=T0 + 13.0)
    front_facts(front_in(tmp_path, log, samples), [slow], Cluster(), 500.0, [])
    assert slow.allowed_failures == 1
    down = log + f"{iso(T0 + 11.0)} Server polycorn/n2 is DOWN, reason: Layer7 timeout.\n"
    paused = FaultRecord(Fault(10.0, "pause-node", "n2", 3.0), node="n2", started=T0 + 10.0,
                         ended=T0 + 13.0)
    front_facts(front_in(tmp_path, down, samples), [paused], Cluster(), 500.0, [])
    assert paused.allowed_failures == paused.facts["sent_before_out"] == 1


def test_a_joining_node_is_timed_to_its_first_request(tmp_path):
    samples = [(T0 + 11.0, {"n3": row("UP", 8004)})]
    log = request_line(T0 + 12.5, "n3", 200, 1) + "\n"
    join = FaultRecord(Fault(8.0, "join-node"), node="n4", started=T0 + 8.0)
    join.facts["ready_at"] = T0 + 12.0
    front_facts(front_in(tmp_path, log, samples), [join], Cluster(), 500.0, [])
    assert join.facts["slot"] == "n3"
    assert join.facts["first_request_after_ready_s"] == 0.5


def test_the_generated_config_logs_what_the_runner_reads():
    from polycorn.ha.haproxy.config import FrontOptions, render

    text = render(FrontOptions(cluster="c", redis="redis://127.0.0.1:1"))
    assert "log stdout format iso" in text  # state changes need a time of their own
    assert "option httplog" in text
