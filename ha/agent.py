"""The cluster agent: the sidecar process that represents one node in Redis.

One thread, one loop: wait on the master's channel (and a signal wake-up pipe)
until the next cycle is due; each cycle heartbeats the registry, reads one
snapshot, runs the election and the leader's duties, and relays fenced commands
to the master. Redis trouble never stops the loop: calls fail fast (bounded
timeouts), the agent backs off, and a leader steps down on its local deadline.
EOF on the channel means the master is gone: resign, mark the node gone, exit.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

from polycorn.ha import events as ev
from polycorn.ha import history
from polycorn.ha.backoff import Backoff
from polycorn.ha.campaign import Campaign
from polycorn.ha.decision import Decision
from polycorn.ha.duties import LeaderDuties
from polycorn.ha.election import Election
from polycorn.ha.events import Event
from polycorn.ha.fencing import Fence
from polycorn.ha.inbox import Inbox
from polycorn.ha.registry import LEADER_STATES, Departure, NodeInfo, NodeState
from polycorn.ha.settings import ClusterConfig
from polycorn.ha.store import ClusterStore, Heartbeat, StoreUnavailable
from polycorn.server import instrument, messages
from polycorn.server.messages import Hello, MasterEvent, Result, State
from polycorn.server.sidecar import Channel, ChannelClosed

log = logging.getLogger("polycorn.error.cluster")

HELLO_WAIT = 1.0  # seconds to wait for the master's hello before registering anyway
MIN_CYCLE = 0.02  # floor between cycles: a scheduling slip can never become a busy loop


class Membership(Enum):
    UNREGISTERED = "unregistered"
    REGISTERED = "registered"
    SUPERSEDED = "superseded"  # a newer incarnation owns the node id: act for nothing
    # The master rolled its upgrade back: the node id may have gone to the killed new
    # generation's agent, so this agent takes it back with a new incarnation.
    RECLAIMING = "reclaiming"
    LEFT = "left"  # deregistered on the way out


class Agent:
    def __init__(self, config: ClusterConfig, channel: Channel, store: ClusterStore,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.timing = config.timing
        self.channel = channel
        self.store = store
        self.clock = clock
        self.info = NodeInfo(node_id=config.node_id, host=socket.gethostname(),
                             address=config.advertise or "", pid=os.getppid(),
                             release=config.release, started=time.time(),
                             metrics_address=_address([config.metrics_address])
                             if config.metrics_address else "")
        self.membership = Membership.UNREGISTERED
        self.incarnation = 0
        self.election = Election(config.node_id, self.timing)
        self.fence = Fence(config.node_id)
        self.campaign = Campaign(store, self.election, clock,
                                 seen_epoch=lambda: self.fence.highest_epoch)
        self.duties = LeaderDuties(store, self.election, clock)
        self.inbox = Inbox(store, self.fence, channel, config.node_id)
        self.backoff = Backoff(cap=self.timing.backoff_cap)
        self.store_failed_at: float | None = None  # monotonic time of the last failed call
        self.store_down_since: float | None = None  # first failure of the current outage
        self.failed_calls = 0  # in the current outage
        self.store_retry_at = 0.0
        self.heartbeat_at = 0.0  # next heartbeat due (0: now)
        self.next_cycle = 0.0
        self.exit_reason: str | None = None
        self.exit_departure: Departure | None = None  # set when the way out is known
        self._routine_logged: set[str] = set()  # routine topics already logged at info
        self.heartbeat_answered = 0.0  # wall-clock time of the last heartbeat Redis took

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        wake_r = self._install_signals()
        try:
            first = self.channel.recv(HELLO_WAIT)  # the master sends hello right after fork
        except ChannelClosed:
            first, self.exit_reason = None, "master exited before its hello"
        while first is not None:  # hello, then whatever else the master already sent
            self.handle_message(first)
            first = self._buffered()
        while self.exit_reason is None:
            self._wait(wake_r, max(0.0, self.next_cycle - self.clock()))
            if self.exit_reason is None and self.clock() >= self.next_cycle:
                self.cycle()
        self.leave(self.exit_reason)
        return 0

    def _buffered(self) -> dict[str, Any] | None:
        """A message already read into the channel's buffer (select cannot see those)."""
        try:
            return self.channel.recv(0)
        except ChannelClosed:
            self.exit_reason = "master exited (EOF on the sidecar channel)"
            return None

    def _install_signals(self) -> int:
        """Reset what the master installed: its handlers would write to its own pipe."""
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN,
                    signal.SIGTTOU, signal.SIGWINCH):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._on_stop_signal)
        return wake_r

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        # Only record it: the loop leaves (resign, deregister) outside the handler. The
        # master stops its sidecars only when it stops on purpose (a graceful or quick
        # stop, or handing over to an upgraded master), whatever state message is still
        # unread on the channel.
        self.exit_reason = f"agent stopped by {signal.Signals(signum).name} (master shutting down)"
        self.exit_departure = Departure.LEFT

    def _wait(self, wake_r: int, timeout: float) -> None:
        try:
            ready, _, _ = select.select([self.channel.fileno(), wake_r], [], [], timeout)
        except InterruptedError:
            return
        if wake_r in ready:
            os.read(wake_r, 512)
        if self.channel.fileno() in ready:
            try:
                raws = self.channel.receive_ready()
            except ChannelClosed:
                self.exit_reason = "master exited (EOF on the sidecar channel)"
                return
            for raw in raws:
                self.handle_message(raw)

    # -- messages from the master --------------------------------------------------------

    def handle_message(self, raw: dict[str, Any]) -> None:
        """One message from the master, as the channel delivered it."""
        for received in messages.receive(
                [raw], messages.FOR_SIDECAR, f"agent of node {self.config.node_id}", log,
                "dropped it; the agent carries on"):
            # Commands go back in the version the master speaks (messages.speak).
            self.inbox.peer_version = received.version
            self._dispatch(received.message)

    def _dispatch(self, msg: messages.Message) -> None:
        if isinstance(msg, Hello):
            self._on_hello(msg)
        elif isinstance(msg, State):
            self._on_state(msg)
        elif isinstance(msg, MasterEvent):
            self._on_event(msg)
        elif isinstance(msg, Result):
            self._best_effort(lambda: self.inbox.result(msg))

    def _on_hello(self, msg: Hello) -> None:
        self.info = self.info.evolve(
            pid=msg.pid or self.info.pid,
            address=self.config.advertise or _address(list(msg.bind)),
            workers_configured=msg.workers,
            max_workers=msg.max_workers)

    def _on_state(self, msg: State) -> None:
        try:
            state = NodeState(msg.state)
        except ValueError:
            log.warning("unknown node state %r from the master", msg.state)
            return
        before = self.info

        def said(value: int | None, otherwise: int) -> int:
            return otherwise if value is None else value
        configured = said(msg.workers_configured, before.workers_configured)
        self.info = before.evolve(
            state=state, pid=msg.pid or before.pid,
            workers=said(msg.workers, before.workers),
            workers_configured=configured,
            workers_target=said(msg.workers_target, before.workers_target or configured),
            max_workers=said(msg.max_workers, before.max_workers))
        after = self.info
        if (after.state, after.workers, after.workers_target) != (
                before.state, before.workers, before.workers_target):
            history.current().record(
                "state", node=self.config.node_id, incarnation=self.incarnation,
                state=after.state.value, workers=after.workers,
                workers_target=after.workers_target, configured=after.workers_configured,
                max_workers=after.max_workers)
            # A state or worker-count change is news for the cluster now (the leader
            # waits on it to restore capacity), not at the next heartbeat; leaving the
            # leader states also resigns in that same cycle.
            self.heartbeat_at = self.next_cycle = 0.0

    def _on_event(self, msg: MasterEvent) -> None:
        name = msg.event
        if not ev.EVENT_NAME.match(name):
            log.warning("dropping master event with a bad name %r", name)
            return
        self._best_effort(lambda: self.store.emit(Event(
            name, self.config.node_id, self.election.epoch, msg.reason,
            {"incarnation": str(self.incarnation)})))
        if name == ev.UPGRADE_ROLLED_BACK and self.membership in (Membership.REGISTERED,
                                                                   Membership.SUPERSEDED):
            # The new generation's agent may have registered (and superseded us) before
            # it was killed: this master is the node again, under a new incarnation.
            self.membership = Membership.RECLAIMING
            self.heartbeat_at = self.next_cycle = 0.0

    # -- one cycle ---------------------------------------------------------------------

    def cycle(self) -> None:
        now = self.clock()
        expired = self.election.expire(now)
        if expired:
            history.current().record("step_down", node=self.config.node_id, reason=expired)
            self._say(expired)
            self._best_effort(lambda: self.campaign.announce_step_down(0, expired))
        if self.membership in (Membership.SUPERSEDED, Membership.LEFT):
            self.next_cycle = now + 3600  # nothing to do until the master exits
            return
        if self._call_could_outlive_leadership(now):
            # A call now could block past the deadline and leave a deposed leader
            # believing it leads until the call returns: wait for the deadline instead.
            self.next_cycle = self.election.deadline
            return
        if now >= self.store_retry_at:
            self._talk_to_store(now)
        now = self.clock()
        due = [self.heartbeat_at, self.election.next_wakeup(now)]
        if self.election.is_leader(now):
            due.append(now + self.timing.duty_interval)
        if self.store_retry_at > now:  # backing off: the store is not retried sooner
            due = [max(t, self.store_retry_at) for t in due]
            if self.election.is_leader(now):
                due.append(self.election.deadline)  # the local step-down stays on time
        self.next_cycle = max(min(due), now + MIN_CYCLE)
        self._report(now)

    def _report(self, now: float) -> None:
        """The node as this agent sees it, for the instruments (Prometheus's gauges)."""
        instruments = instrument.current()
        if instruments.active:
            instruments.cluster_state({
                "state": self.info.state.value, "leader": self.election.is_leader(now),
                "epoch": max(self.election.epoch, self.fence.highest_epoch),
                "heartbeat": self.heartbeat_answered})

    def _call_could_outlive_leadership(self, now: float) -> bool:
        return (self.election.is_leader(now)
                and self.election.deadline - now < self.timing.call_bound)

    def _talk_to_store(self, now: float) -> None:
        try:
            self._registry(now)
            if self.membership is not Membership.REGISTERED:
                return
            # The lease and the epoch are all the election needs (the leader's duties
            # read the members with everything else, cluster_state); the commands come
            # in the same round trip and are relayed at once, after the fence has seen
            # the current epoch, so none taken is lost to a later failed call.
            snap, commands = self.store.cycle_read(self.config.node_id, self.fence.incarnation)
            self.fence.observe(snap.epoch)
            self.duties.watch_redis(snap.server_id)
            self.inbox.deliver(commands)
            if snap.lease is None and self.heartbeat_at > now:
                # About to campaign: heartbeat first, so an agent whose node id a newer
                # incarnation took (an upgrade) learns it now, not after winning a lease
                # that the newer agent would only have to release again.
                self.heartbeat_at = now
                self._registry(now)
                if self.membership is not Membership.REGISTERED:
                    return
            eligible, why_not = self._eligibility()
            self._say(self.campaign.cycle(snap, eligible, why_not))
            duty = self.duties.cycle(self._store_stable_for())
            if duty:
                self._say(duty)
        except StoreUnavailable as exc:
            instrument.current().cluster_count("redis_error")
            delay = self.backoff.next_delay()
            self.store_retry_at = self.clock() + delay
            self.store_failed_at = self.clock()  # stability restarts after this failure
            self._store_failed(self.election.call_failed(self.clock(), delay, str(exc)))
            return
        self._store_answered()
        self.backoff.reset()
        self.store_retry_at = 0.0

    def _store_failed(self, sentence: str) -> None:
        """The first failed call of an outage is a warning; the retries that follow are
        debug lines (a long outage must not fill the error log), until Redis answers."""
        self.failed_calls += 1
        if self.store_down_since is None:
            self.store_down_since = self.clock()
            log.warning("cluster: node %s: Redis unreachable: %s", self.config.node_id,
                        sentence)
        else:
            log.debug("cluster: %s", sentence)

    def _store_answered(self) -> None:
        if self.store_down_since is None:
            return
        log.info("cluster: node %s: Redis reachable again after %.1fs (%d failed calls)",
                 self.config.node_id, self.clock() - self.store_down_since, self.failed_calls)
        self.store_down_since, self.failed_calls = None, 0

    def _store_stable_for(self) -> float:
        """Seconds since this agent's last failed Redis call (forever if none failed)."""
        if self.store_failed_at is None:
            return float("inf")
        return self.clock() - self.store_failed_at

    def _registry(self, now: float) -> None:
        ttl_ms = int(self.timing.node_ttl * 1000)
        if self.membership in (Membership.UNREGISTERED, Membership.RECLAIMING):
            why = ("after my master rolled its upgrade back"
                   if self.membership is Membership.RECLAIMING else "")
            self.incarnation = self.store.register(self.info, ttl_ms)
            self.heartbeat_answered = time.time()
            self.fence.incarnation = self.incarnation
            self.membership = Membership.REGISTERED
            self.heartbeat_at = now + self.timing.heartbeat
            self._say(f"registered as {self.config.node_id} incarnation {self.incarnation} "
                      f"{why}".rstrip())
            return
        if now < self.heartbeat_at:
            return
        outcome = self.store.heartbeat(self.info, self.incarnation, ttl_ms)
        self.heartbeat_at = now + self.timing.heartbeat
        self.heartbeat_answered = time.time()
        if outcome is Heartbeat.SUPERSEDED:
            self._superseded()
        elif outcome is Heartbeat.REJOINED:
            self._say("heartbeat re-created my registration (it had lapsed)")
        elif outcome is Heartbeat.DECLARED_DEAD:
            # Commands queued for the old incarnation belong to a node the cluster wrote
            # off: come back as a new one (node_rejoined) rather than resume silently.
            self.membership = Membership.UNREGISTERED
            self.heartbeat_at = self.next_cycle = 0.0
            self._say(f"the leader declared incarnation {self.incarnation} dead while I was "
                      f"away: rejoining as a new incarnation")

    def _superseded(self) -> None:
        self.membership = Membership.SUPERSEDED
        reason = (f"a newer incarnation of {self.config.node_id} registered; incarnation "
                  f"{self.incarnation} acts for nothing from now on")
        resigned = self.campaign.resign_now("superseded by a newer incarnation")
        if resigned:
            self._say(resigned)
        self.store.emit(Event(ev.NODE_SUPERSEDED, self.config.node_id, 0, reason,
                              {"incarnation": str(self.incarnation)}))
        self._say(reason)

    def _eligibility(self) -> tuple[bool, str]:
        if self.info.state not in LEADER_STATES:
            return False, f"node is {self.info.state.value}"
        return True, ""

    # -- leaving -----------------------------------------------------------------------

    def leave(self, reason: str) -> None:
        """Master gone or stopping: give the lease back first (the others take over
        sooner), then mark the node gone. Each step is best effort."""
        self._say(f"leaving: {reason}")
        history.current().record("leaving", node=self.config.node_id, reason=reason)
        if self.membership is not Membership.REGISTERED:
            return
        self._best_effort(lambda: self._say(self.campaign.resign_now(reason) or
                                            "not the leader, nothing to resign"))
        departure = self._departure()
        self._best_effort(lambda: self.store.deregister(
            self.config.node_id, self.incarnation, ev.NODE_GONE, reason, departure))
        self.membership = Membership.LEFT

    def _departure(self) -> Departure:
        """How this node leaves: stopped on purpose by its master, or (its master gone)
        judged from the master's last state: stopping, dying while booting (e.g. a new
        generation rolled back), or lost while serving."""
        if self.exit_departure is not None:
            return self.exit_departure
        if self.info.state is NodeState.STOPPING:
            return Departure.LEFT
        if self.info.state is NodeState.BOOTING:
            return Departure.ABORTED
        return Departure.LOST

    # -- helpers -----------------------------------------------------------------------

    def _best_effort(self, action: Callable[[], object]) -> None:
        try:
            action()
        except StoreUnavailable as exc:
            log.warning("cluster: %s", exc)

    def _say(self, said: Decision | str) -> None:
        """Log each decision; a routine one (Decision.routine_topic) only the first time
        per topic since the last real decision, so a steady leader does not fill the log."""
        decision = said if isinstance(said, Decision) else Decision(said)
        if not decision.routine:
            self._routine_logged.clear()
            log.info("cluster: %s", decision.sentence)
        elif decision.routine_topic in self._routine_logged:
            log.debug("cluster: %s", decision.sentence)
        else:
            self._routine_logged.add(decision.routine_topic)
            log.info("cluster: %s", decision.sentence)


def _address(binds: list[str]) -> str:
    """The first bound address, with a wildcard host replaced by this host's name."""
    if not binds:
        return ""
    first = str(binds[0])
    host, sep, port = first.rpartition(":")
    if sep and host in ("0.0.0.0", "::", "[::]", ""):
        return f"{socket.gethostname()}:{port}"
    return first


def run_agent(config: ClusterConfig, channel: Channel) -> None:
    """The sidecar target: build the Redis client here, after the fork, and run."""
    from polycorn.ha.redis_client import make_client
    from polycorn.ha.redis_store import RedisStore

    client = make_client(config.target, config.timing,
                         client_name=f"polycorn-agent-{config.node_id}")
    store: Any = RedisStore(client, config.cluster)
    recorder = history.open_from_env(config.node_id)
    if recorder.enabled:  # a chaos run's checker reads what this agent did
        store = history.RecordingStore(store, recorder)
    try:
        raise SystemExit(Agent(config, channel, store).run())
    finally:
        store.close()
