"""Protocol errors that say whose fault they are and what status to answer with.

A worker answers a RemoteProtocolError with ``exc.status`` and closes the
connection; a LocalProtocolError is the application's fault (a bad header it
gave us) and is answered with 500 when nothing was sent yet.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class: ``status`` is the HTTP status to answer with."""

    status: int = 400

    def __init__(self, msg: str, status: int | None = None) -> None:
        super().__init__(msg)
        if status is not None:
            self.status = status


class RemoteProtocolError(ProtocolError):
    """The peer broke HTTP/1.1: answer ``status`` with Connection: close."""


class LocalProtocolError(ProtocolError):
    """We (the application) tried to send something HTTP/1.1 forbids."""

    status = 500
