"""Rolling batches with Ansible's meanings (pure functions).

`serial` is a host count or a percentage of all hosts ("1", "30%"), or a
comma-separated progression ("1,2,50%") whose last step repeats, as Ansible's
serial list. A batch fails when the percentage of its hosts that failed is
greater than `max_fail_percent` (so 0 means any failure fails the batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class BatchError(ValueError):
    """A bad serial or max_fail_percent value (one line)."""


def parse_percent(value: float | int | str, name: str) -> float:
    text = str(value).strip().removesuffix("%")
    try:
        number = float(text)
    except ValueError:
        raise BatchError(f"{name}: want a number from 0 to 100, got {value!r}") from None
    if not 0 <= number <= 100:
        raise BatchError(f"{name}: want a number from 0 to 100, got {value!r}")
    return number


def parse_serial(text: str) -> tuple[int | float, ...]:
    """Steps of the progression: an int is a host count, a float a fraction of all hosts."""
    steps: list[int | float] = []
    for part in str(text).split(","):
        part = part.strip()
        if part.endswith("%"):
            percent = parse_percent(part, "serial")
            if percent <= 0:
                raise BatchError(f"serial: a percentage must be above 0, got {part!r}")
            steps.append(percent / 100)
        elif part.isdigit() and int(part) > 0:
            steps.append(int(part))
        else:
            raise BatchError(f"serial: want a host count or a percentage like 30%, got {part!r}")
    return tuple(steps)


def batch_sizes(total: int, serial: str) -> list[int]:
    """How many hosts go in each batch. A percentage is of all hosts, rounded down,
    at least one host (Ansible's rule)."""
    steps = parse_serial(serial)
    sizes: list[int] = []
    left, i = total, 0
    while left > 0:
        step = steps[min(i, len(steps) - 1)]
        size = step if isinstance(step, int) else max(1, math.floor(total * step))
        size = min(size, left)
        sizes.append(size)
        left -= size
        i += 1
    return sizes


def make_batches(items: Sequence[T], serial: str) -> list[list[T]]:
    batches, start = [], 0
    for size in batch_sizes(len(items), serial):
        batches.append(list(items[start:start + size]))
        start += size
    return batches


def batch_failed(failed: int, size: int, max_fail_percent: float) -> bool:
    """Ansible's max_fail_percentage: the batch fails when failed/size exceeds it."""
    return size > 0 and failed * 100 / size > max_fail_percent
