"""A real statsd receiver for tests: a UDP (or unix datagram) socket read by a thread.

Every line of every datagram is kept and parsed ("name:value|type|@rate|#tags"), so a
test asserts on metric names, types, values and tags exactly as a statsd server sees them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    value: str
    type: str  # c, ms, g, h
    rate: str | None
    tags: str | None

    @classmethod
    def parse(cls, line: str) -> Metric:
        name, _, rest = line.partition(":")
        fields = rest.split("|")
        rate = next((f[1:] for f in fields[2:] if f.startswith("@")), None)
        tags = next((f[1:] for f in fields[2:] if f.startswith("#")), None)
        return cls(name, fields[0], fields[1] if len(fields) > 1 else "", rate, tags)


class StatsdReceiver:
    """Receives datagrams on 127.0.0.1:<free port>, or on a unix path when given one."""

    def __init__(self, unix_path: str | None = None) -> None:
        family = socket.AF_UNIX if unix_path else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        # A large queue (capped by net.core.rmem_max): no datagram dropped under load.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(unix_path or ("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.unix_path = unix_path
        self.address = f"unix:{unix_path}" if unix_path else f"127.0.0.1:{self.port}"
        self.datagrams: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.datagrams.append(data.decode("ascii"))

    def metrics(self) -> list[Metric]:
        with self._lock:
            lines = [line for d in self.datagrams for line in d.split("\n") if line]
        return [Metric.parse(line) for line in lines]

    def named(self, name: str) -> list[Metric]:
        return [m for m in self.metrics() if m.name == name]

    def total(self, name: str) -> float:
        """The sum of a counter's values (the rate is always 1.0 here)."""
        return sum(float(m.value) for m in self.named(name))

    def wait_total(self, name: str, at_least: float, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while (got := self.total(name)) < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: {got} < {at_least} after {timeout}s; got "
                                     f"{sorted({m.name for m in self.metrics()})}")
            time.sleep(0.02)
        return got

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        if self.unix_path:
            with contextlib.suppress(OSError):
                os.unlink(self.unix_path)

    def __enter__(self) -> StatsdReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
