"""Size limits on what a client may send, with Gunicorn's meanings.

One frozen value per worker, shared by every connection. ``max_request_line`` and
``max_header_size`` accept 0 for "unlimited" (Gunicorn's --limit-request-line 0);
``max_header_count`` <= 0 falls back to Gunicorn's hard cap of 32768 fields.
The defaults are Gunicorn's but for the request line: 8190, not 4094, because
RFC 9112 section 3 recommends accepting request lines of at least 8,000 octets.
8190 is the largest Gunicorn allows (its MAX_REQUEST_LINE), the default field size
limit beside it, and a line that fits nginx's 8 KiB large_client_header_buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Gunicorn's MAX_HEADERS: the field count can never be unlimited.
HEADER_COUNT_CAP = 32768


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_line: int = 8190  # --limit-request-line (0 = unlimited); over -> 414
    max_header_count: int = 100  # --limit-request-fields; over -> 431
    max_header_size: int = 8190  # --limit-request-field_size (0 = unlimited); over -> 431
    permit_obsolete_folding: bool = False
    max_chunk_size_digits: int = 16
    max_chunk_ext_size: int = 4096

    # Derived once here, not per connection (the event worker makes a parser for each):
    # the effective field-count limit (never unlimited), and the smallest size limit
    # in force (0: neither is), below which a head cannot break either.
    header_count: int = field(init=False, repr=False, compare=False)
    smallest_size_limit: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        count = self.max_header_count
        object.__setattr__(self, "header_count",
                           count if 0 < count <= HEADER_COUNT_CAP else HEADER_COUNT_CAP)
        positive = [n for n in (self.max_request_line, self.max_header_size) if n > 0]
        object.__setattr__(self, "smallest_size_limit", min(positive) if positive else 0)
