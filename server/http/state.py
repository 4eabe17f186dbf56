"""The two state machines of a server connection, as transition tables.

Rules: the request side (what the client sends) and the response side (what we
send) move independently within one cycle; a new cycle starts only when both
are DONE and the connection may persist. A pair missing from a table is a
misuse by our own caller (LocalProtocolError); a client fault moves the request
side to ERROR, which has no way out.
"""

from __future__ import annotations

import enum

from polycorn.server.http.errors import LocalProtocolError


class _FastHashEnum(enum.Enum):
    # Enum.__hash__ is Python code hashing the name; members are singletons, so the
    # identity hash is equivalent and keeps the table lookups of every request cheap.
    __hash__ = object.__hash__


class RequestState(_FastHashEnum):
    IDLE = "waiting for a request head"
    BODY = "reading the request body"
    DONE = "request complete; pipelined bytes wait"
    CLOSED = "client closed between requests"
    ERROR = "client broke the protocol; nothing more is parsed"


class ResponseState(_FastHashEnum):
    IDLE = "no response begun"
    BODY = "head sent, body in progress"
    DONE = "response complete"


class Step(_FastHashEnum):
    HEAD = "request head parsed / response head built"
    END = "request body complete / response body complete"
    EOF = "client closed between requests"
    WHOLE = "a whole response (an error response) in one go"
    NEXT_CYCLE = "start the next request cycle"


# The members as module globals for the hot path: on Python 3.11 a member read from
# its class goes through EnumType.__getattr__ (about 50 ns), and every request reads many.
REQ_IDLE, REQ_BODY, REQ_DONE, REQ_CLOSED, REQ_ERROR = (
    RequestState.IDLE, RequestState.BODY, RequestState.DONE, RequestState.CLOSED,
    RequestState.ERROR)
RESP_IDLE, RESP_BODY, RESP_DONE = ResponseState.IDLE, ResponseState.BODY, ResponseState.DONE

REQUEST_TRANSITIONS: dict[tuple[RequestState, Step], RequestState] = {
    (RequestState.IDLE, Step.HEAD): RequestState.BODY,
    (RequestState.IDLE, Step.EOF): RequestState.CLOSED,
    (RequestState.BODY, Step.END): RequestState.DONE,
    (RequestState.DONE, Step.NEXT_CYCLE): RequestState.IDLE,
}

RESPONSE_TRANSITIONS: dict[tuple[ResponseState, Step], ResponseState] = {
    (ResponseState.IDLE, Step.HEAD): ResponseState.BODY,
    (ResponseState.IDLE, Step.WHOLE): ResponseState.DONE,
    (ResponseState.BODY, Step.END): ResponseState.DONE,
    (ResponseState.DONE, Step.NEXT_CYCLE): ResponseState.IDLE,
}


def advance_request(state: RequestState, step: Step) -> RequestState:
    try:
        return REQUEST_TRANSITIONS[state, step]
    except KeyError:
        raise LocalProtocolError(f"cannot {step.value} while {state.value}") from None


def advance_response(state: ResponseState, step: Step) -> ResponseState:
    try:
        return RESPONSE_TRANSITIONS[state, step]
    except KeyError:
        raise LocalProtocolError(f"cannot {step.value} while {state.value}") from None


def only_move(table: dict, step: Step) -> tuple:
    """The one (from, to) pair of ``step`` in ``table``.

    The connection's hot path tests the state it holds against ``from`` by identity
    and moves to ``to``, asking advance_* only to name a misuse; reading the pair
    here keeps that path the table's, and a step given a second source fails at import.
    """
    moves = [(state, to) for (state, each), to in table.items() if each is step]
    if len(moves) != 1:
        raise ValueError(f"{step.name} has {len(moves)} sources in the table, not one")
    return moves[0]
