"""The cluster's timers and the arithmetic that makes them safe together.

All durations are seconds (float). `Timing.check()` validates, at start-up, the
invariants that keep a leader from outliving its lease and a healthy node from
being declared dead by one slow Redis call (Patroni's `loop_wait + 2*retry <= ttl`).
"""

from __future__ import annotations

from dataclasses import dataclass


class TimingError(ValueError):
    """A combination of timers that cannot be safe; the message names the invariant."""


@dataclass(frozen=True)
class Timing:
    heartbeat: float = 1.0  # node heartbeat interval
    node_ttl: float = 3.0  # a node silent this long is dead
    lease: float = 6.0  # leader lease held in Redis (PX)
    renew: float = 1.0  # leader renewal interval
    step_down: float = 4.0  # local monotonic deadline after a successful acquire/renew
    connect_timeout: float = 0.5  # Redis connect timeout per attempt
    read_timeout: float = 1.0  # Redis read timeout per attempt
    retries: int = 1  # retries of one Redis call after the first attempt

    @property
    def call_bound(self) -> float:
        """Longest a single Redis call can block against a connected server: every
        attempt may spend the whole read timeout."""
        return self.read_timeout * (1 + self.retries)

    @property
    def follower_poll(self) -> float:
        """How often a non-leader looks at the lease: half the renew interval, so a
        resigned lease is taken over well within a second."""
        return self.renew / 2

    @property
    def candidate_jitter(self) -> float:
        """Upper bound of the random wait before a candidate tries to acquire: spreads
        simultaneous starts without delaying a takeover noticeably."""
        return min(0.2, self.renew / 5)

    @property
    def backoff_cap(self) -> float:
        """Longest wait between two attempts to reach an unreachable Redis."""
        return max(1.0, 2 * self.heartbeat)

    @property
    def recovery_grace(self) -> float:
        """How long after Redis trouble (the leader's own calls failing, a failover) a
        silent node may still be on its way back: a node TTL, plus the longest back-off
        it may be sleeping in when Redis returns, plus one call it may be stuck in.
        Nodes reconnect at different moments; the leader may just be the first."""
        return self.node_ttl + self.backoff_cap + self.call_bound

    @property
    def duty_interval(self) -> float:
        """How often the leader runs its duties: a quarter heartbeat, so a lapsed node
        is declared dead within a fraction of a second of its registration expiring."""
        return self.heartbeat / 4

    def check(self) -> Timing:
        """Raise TimingError naming the first broken invariant; return self when sound."""
        for name in ("heartbeat", "node_ttl", "lease", "renew", "step_down",
                     "connect_timeout", "read_timeout"):
            if getattr(self, name) <= 0:
                raise TimingError(f"{name} must be positive, got {getattr(self, name)}")
        if self.retries < 0:
            raise TimingError(f"retries must be >= 0, got {self.retries}")
        # The deadline must fall strictly before Redis expires the lease: the margin
        # absorbs clock-rate drift and the time the acquiring request spent in flight.
        if self.step_down >= self.lease:
            raise TimingError(
                f"step-down deadline ({self.step_down}s) must be shorter than the lease "
                f"({self.lease}s)")
        # A renewal started on schedule must be able to finish (all attempts) before
        # the deadline, or one slow call costs the leadership.
        if self.renew + self.call_bound > self.step_down:
            raise TimingError(
                f"renew ({self.renew}s) + {1 + self.retries} x read timeout "
                f"({self.read_timeout}s) must be <= step-down deadline ({self.step_down}s)")
        # Likewise a heartbeat delayed by one slow call must still land within the TTL.
        if self.heartbeat + self.call_bound > self.node_ttl:
            raise TimingError(
                f"heartbeat ({self.heartbeat}s) + {1 + self.retries} x read timeout "
                f"({self.read_timeout}s) must be <= node TTL ({self.node_ttl}s)")
        return self
