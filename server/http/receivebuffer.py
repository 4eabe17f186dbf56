"""The bytes received and not yet parsed, with searches that never rescan.

Promises: a head or line search resumes where the previous one stopped, so a head
fed one byte at a time costs linear time, not quadratic; extraction copies only
what it returns. Size limits are the caller's: it reads the line statistics kept
here (``newline_count``, ``first_newline``, ``last_newline``,
``longest_field_line``) to judge a head that is still incomplete.
"""

from __future__ import annotations

import re

# The end of a head is the first empty line. "\n\r?\n" also finds heads ended by a
# bare LF, so that a head with bare LFs is seen whole and refused with 400 instead
# of waiting for more bytes until a size limit turns it into a misleading 431.
_head_end_re = re.compile(rb"\n\r?\n")


class ReceiveBuffer:
    __slots__ = ("_data", "_head_searched", "_line_searched",
                 "newline_count", "first_newline", "last_newline", "longest_field_line")

    def __init__(self) -> None:
        self._data = bytearray()
        self._reset_searches()

    def _reset_searches(self) -> None:
        self._head_searched = 0  # no head end starts before this offset
        self._line_searched = 0  # no LF before this offset
        # Line statistics of an incomplete head, up to _head_searched.
        self.newline_count = 0
        self.first_newline = -1
        self.last_newline = -1
        self.longest_field_line = 0  # without line ending; lines after the first

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def __bytes__(self) -> bytes:
        return bytes(self._data)

    def append(self, data: bytes) -> None:
        self._data += data

    def startswith(self, prefix: bytes) -> bool:
        return self._data.startswith(prefix)

    def ends_with_cr(self) -> bool:
        return self._data.endswith(b"\r")

    def byte_before(self, index: int) -> int:
        """The byte at index - 1 (the CR expected before an LF), or -1 at the start."""
        return self._data[index - 1] if index > 0 else -1

    def prefix(self, end: int) -> bytes:
        """A copy of the bytes through index ``end`` (an LF), left in place."""
        return bytes(self._data[: end + 1])

    def extract(self, count: int) -> bytes:
        """Remove and return up to ``count`` bytes from the front."""
        data = self._data
        if count >= len(data):
            out = bytes(data)
            data.clear()
        else:
            out = bytes(data[:count])
            del data[:count]
        self._reset_searches()
        return out

    def extract_head(self) -> bytes | None:
        """Remove and return everything through the first empty line, or None if none yet.

        When None, the line statistics describe the incomplete head received so far.
        """
        data = self._data
        start = self._head_searched
        # A terminator may straddle the previous search's end: back up two bytes.
        match = _head_end_re.search(data, start - 2 if start > 2 else 0)
        if match is not None:
            return self.extract(match.end())
        # Line statistics of the newly searched bytes: one find per line, never per byte.
        newline = data.find(b"\n", start)
        while newline >= 0:
            if self.first_newline < 0:
                self.first_newline = newline
            else:
                length = newline - self.last_newline - 1 - (data[newline - 1] == 0x0D)
                if length > self.longest_field_line:
                    self.longest_field_line = length
            self.last_newline = newline
            self.newline_count += 1
            newline = data.find(b"\n", newline + 1)
        self._head_searched = len(data)
        return None

    def extract_line(self) -> bytes | None:
        """Remove and return one line through its LF, or None if no LF has arrived."""
        data = self._data
        end = data.find(b"\n", self._line_searched)
        if end < 0:
            self._line_searched = len(data)
            return None
        return self.extract(end + 1)
