"""The phases of an event-worker connection (event_protocol.py, event_sendfile.py)."""

from __future__ import annotations

import enum

__all__ = ["Phase"]


class Phase(enum.Enum):
    IDLE = "between requests: waiting for the first byte of the next one"
    READING = "part of a request received"
    WRITING = "a response waits on the write buffer (reading paused)"
    SENDFILE = "a file response is being sent by os.sendfile"
    LINGERING = "half-closed after a refusal; discarding input until the client closes"
    CLOSED = "closed"


# Members as module globals: on Python 3.11 an Enum member read as a class attribute
# goes through EnumType.__getattr__ (about 50 ns), and a request reads many.
_IDLE, _READING, _WRITING, _SENDFILE, _LINGERING, _CLOSED = (
    Phase.IDLE, Phase.READING, Phase.WRITING, Phase.SENDFILE, Phase.LINGERING, Phase.CLOSED)
