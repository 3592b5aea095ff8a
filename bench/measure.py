"""Timing primitives: a figure's samples, their median and tail, and the warm-up-then-
repeat loop every sequential figure goes through."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Unavailable(Exception):
    """The target does not offer what a figure measures (a 404 or 406, no ETag, no
    process to watch): the figure is reported as ``n/a (reason)``, the run goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Measurement:
    """One figure on one target: its samples, or why there are none."""

    samples: list[float] = field(default_factory=list)
    unavailable: str | None = None
    #: Anything worth keeping next to the samples (result counts, request latencies...).
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return percentile(self.samples, 50) if self.samples else None

    def tail(self, higher_is_better: bool) -> float | None:
        """The bad end of the distribution: the 90th-percentile latency, or the rate
        exceeded 90 % of the time (the 10th percentile) for a rate."""
        if not self.samples:
            return None
        return percentile(self.samples, 10 if higher_is_better else 90)

    def to_json(self, higher_is_better: bool) -> dict[str, Any]:
        return {
            "median": self.median,
            "tail": self.tail(higher_is_better),
            "samples": self.samples,
            "unavailable": self.unavailable,
            **({"detail": self.detail} if self.detail else {}),
        }


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default).

    >>> percentile([1, 2, 3, 4], 50), percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90)
    (2.5, 9.1)
    """
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Plan:
    """How many times to run each sequential figure."""

    warmup: int
    repetitions: int
    #: Stop repeating after this many seconds, once at least ``MIN_SAMPLES`` are in: a
    #: peer that takes seconds per request must not stretch the run to an hour.
    budget_seconds: float

    @property
    def runs(self) -> int:
        return self.warmup + self.repetitions


MIN_SAMPLES = 5


def repeat(plan: Plan, probe: Callable[[int], float]) -> Measurement:
    """Call ``probe(i)`` for the warm-up runs, then for the measured ones, keeping what it
    returns (one sample each). ``i`` counts from 0 across both, so a probe can pick its
    i-th prepared request. :class:`Unavailable` ends the figure as ``n/a``."""
    measurement = Measurement()
    try:
        for index in range(plan.warmup):
            probe(index)
        began = time.perf_counter()
        for index in range(plan.warmup, plan.runs):
            measurement.samples.append(probe(index))
            spent = time.perf_counter() - began
            if spent > plan.budget_seconds and len(measurement.samples) >= MIN_SAMPLES:
                measurement.detail["stopped_by_budget"] = True
                break
    except Unavailable as unavailable:
        return Measurement(unavailable=f"n/a ({unavailable.reason})")
    return measurement
