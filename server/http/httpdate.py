"""The Date header value (RFC 9110 5.6.7 IMF-fixdate), formatted once per second.

Every response needs it and the text only changes each second, so a cache keyed
by the whole second is shared by all connections of a worker. The clock is
injectable so tests can pin the date.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Fixed English names: strftime's %a and %b follow the C locale setting.
_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
           b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def format_http_date(seconds: float) -> bytes:
    """IMF-fixdate, e.g. b"Sun, 06 Nov 1994 08:49:37 GMT"."""
    t = time.gmtime(seconds)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year,
        t.tm_hour, t.tm_min, t.tm_sec,
    )


class DateCache:
    # (second, text) is replaced as one tuple, so threads of a thread worker never
    # read a new second paired with the old text.
    __slots__ = ("_clock", "_cached")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._cached = (-1, b"")

    def current(self) -> bytes:
        second = int(self._clock())
        cached = self._cached
        if cached[0] == second:
            return cached[1]
        value = format_http_date(second)
        self._cached = (second, value)
        return value


SHARED_DATE_CACHE = DateCache()
