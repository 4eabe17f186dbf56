"""Run one function per host in threads (each host has its own SSH session), keeping
every host's result or exception: one host's failure never hides another's."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
MAX_PARALLEL = 16


@dataclass(frozen=True)
class Done(Generic[T, R]):
    item: T
    result: R | None
    error: Exception | None


def each(items: Sequence[T], func: Callable[[T], R], limit: int = MAX_PARALLEL
         ) -> list[Done[T, R]]:
    """func(item) for every item at once (up to `limit` threads), in the items' order."""
    if not items:
        return []
    with concurrent.futures.ThreadPoolExecutor(min(limit, len(items))) as pool:
        futures = [pool.submit(func, item) for item in items]
        out = []
        for item, future in zip(items, futures, strict=True):
            try:
                out.append(Done(item, future.result(), None))
            except Exception as exc:  # every host's failure is reported, none is lost
                out.append(Done(item, None, exc))
        return out
