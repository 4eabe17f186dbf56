"""The node's metrics as a fixed table of slots: every series any process may report.

Each process of the node (master, worker, agent) owns one slot file holding one
float per series of this table, in this order; the table is written into the
file's header, so the aggregator reads a file by its own table (a USR2 to a
release with a different table still adds up). Labels come from small fixed
sets (bounded cardinality): anything else is counted under "other".

How a slot is summed over the node's processes (`Family.kind`):
- COUNTER: live files plus the retired totals of dead processes (never decreases);
- GAUGE: live files only, summed (a dead process's gauge leaves with it);
- GAUGE_MAX: live files only, the largest (one agent per node; two for a moment).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

COUNTER, GAUGE, GAUGE_MAX = "counter", "gauge", "gauge_max"

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Prometheus client's default buckets, seconds (+Inf is the count).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0)
WORKER_STATES = ("booting", "ready", "stopping")
EXIT_REASONS = ("max_requests", "exited", "timeout", "killed", "crashed", "boot_failed",
                "retired")
# HUP and USR2 outcomes: (kind, outcome) pairs the master reports, and why a rollback.
RELOAD_OUTCOMES = (("hup", "promoted"), ("hup", "rolled_back"), ("usr2", "started"),
                   ("usr2", "promoted"), ("usr2", "rolled_back"))
ROLLBACK_REASONS = ("", "timeout", "boot_failed", "exited", "sockets", "protocol", "other")
NODE_STATES = ("booting", "ready", "draining", "upgrading", "stopping", "other")
COMMAND_OUTCOMES = ("applied", "rejected")


@dataclass(frozen=True)
class Family:
    name: str  # the Prometheus name, without the _total of a counter
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    values: tuple[tuple[str, ...], ...] = ((),)  # every label combination, in slot order


def _family(name: str, kind: str, help_text: str, **labels: tuple[str, ...]) -> Family:
    return Family(name, kind, help_text, tuple(labels),
                  tuple(product(*labels.values())) if labels else ((),))


FAMILIES: tuple[Family, ...] = (
    _family("polycorn_http_requests", COUNTER, "HTTP requests answered, by method and "
            "status class.", method=METHODS, status=STATUS_CLASSES),
    _family("polycorn_http_requests_started", COUNTER, "HTTP requests whose cycle began "
            "(in flight: started minus answered, over live workers)."),
    # Per-bucket (not cumulative) counts: one slot is written per request; the
    # exposition makes them cumulative.
    _family("polycorn_http_request_duration_seconds", COUNTER, "Seconds from a request's "
            "head to the end of its response.", le=tuple(str(b) for b in DURATION_BUCKETS)
            + ("+Inf",)),
    _family("polycorn_http_request_duration_seconds_sum", COUNTER, "Sum of the durations."),
    _family("polycorn_http_request_body_bytes", COUNTER, "Request body bytes the "
            "application read."),
    _family("polycorn_http_response_body_bytes", COUNTER, "Response body bytes sent."),
    _family("polycorn_http_connections_open", GAUGE, "Client connections the node's "
            "workers hold (each worker's count at its last heartbeat)."),
    _family("polycorn_workers", GAUGE, "Workers of the node's masters, by state.",
            state=WORKER_STATES),
    _family("polycorn_worker_exits", COUNTER, "Workers that exited, by reason "
            "(exited: on its own with status 0 other than max-requests, e.g. an orphan or "
            "a TERM from outside; retired: stopped by the master).",
            reason=EXIT_REASONS),
    _family("polycorn_reloads", COUNTER, "HUP reloads and USR2 upgrades by outcome; a "
            "rollback says why.", signal=("hup", "usr2"),
            outcome=("started", "promoted", "rolled_back"), reason=ROLLBACK_REASONS),
    _family("polycorn_handoff_owner_changes", COUNTER, "Times a master of the node took "
            "over the hand-off path from a dead owner."),
    _family("polycorn_master_restarts", COUNTER, "Masters of a --masters group restarted "
            "by a peer after they died."),
    _family("polycorn_generation_boot_seconds", GAUGE_MAX, "Seconds the newest generation "
            "of a master took from start to all workers ready."),
    _family("polycorn_cluster_node_state", GAUGE_MAX, "1 for the node's state in the "
            "cluster registry.", state=NODE_STATES),
    _family("polycorn_cluster_leader", GAUGE_MAX, "1 while this node holds the leader "
            "lease."),
    _family("polycorn_cluster_epoch", GAUGE_MAX, "Highest leader epoch this node has seen."),
    _family("polycorn_cluster_last_heartbeat_timestamp_seconds", GAUGE_MAX, "Unix time of "
            "the node's last heartbeat that Redis answered."),
    _family("polycorn_cluster_redis_errors", COUNTER, "Redis calls of the agent that failed."),
    _family("polycorn_cluster_fenced_commands", COUNTER, "Leader commands this node applied "
            "or rejected (fencing).", outcome=COMMAND_OUTCOMES),
    _family("polycorn_cluster_events", COUNTER, "Cluster events this node's agent caused "
            "(node_dead by the leader, leader_changed by the winner).",
            event=("node_dead", "leader_changed")),
)

SlotKey = tuple[str, tuple[tuple[str, str], ...]]


def slot_keys() -> list[SlotKey]:
    """Every series, in slot order: (family name, ((label, value), ...))."""
    return [(f.name, tuple(zip(f.labels, values, strict=True)))
            for f in FAMILIES for values in f.values]


KEYS = slot_keys()
INDEX = {key: i for i, key in enumerate(KEYS)}
BY_NAME = {f.name: f for f in FAMILIES}


def index(name: str, **labels: str) -> int:
    """The slot of one series (KeyError for a series not in the table)."""
    family = BY_NAME[name]
    return INDEX[(name, tuple((label, labels[label]) for label in family.labels))]


def rollback_reason(text: str) -> str:
    """A rollback's free-text reason, as one of ROLLBACK_REASONS."""
    text = text.lower()
    for needle, reason in (("not ready within", "timeout"), ("failed to boot", "boot_failed"),
                           ("exited", "exited"), ("closed its channel", "exited"),
                           ("vanished", "exited"), ("could not pass", "sockets"),
                           ("cannot read", "protocol")):
        if needle in text:
            return reason
    return "other"
