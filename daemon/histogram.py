"""Fixed-bucket histograms the admission core fills on the request path.

Kept free of prometheus_client so the core (shared with the offline replayer)
stays dependency-light and cheap: an observation is one ``bisect`` and two
additions under the device lock the caller already holds (or two in the fused
kernel). The metrics
collector turns a snapshot into a Prometheus histogram at scrape time.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

__all__ = ["IO_LATENCY_BUCKETS_US", "PREDICT_BUCKETS_NS", "Histogram", "HistogramSnapshot"]

# Prediction (featurise + model) time per decision: sub-µs to the 50 µs budget and beyond.
PREDICT_BUCKETS_NS = (500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 20_000, 50_000,
                      100_000, 1_000_000)
# Device IO latency: SSD reads (tens of µs) to HDD seeks and stalls (tens of ms).
IO_LATENCY_BUCKETS_US = (25, 50, 100, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000,
                         20_000, 50_000, 100_000, 1_000_000)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Bounds, per-bucket counts (last = +Inf), count and sum: a consistent copy."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    sum: float


class Histogram:
    """Counts per bucket (``value <= bound``, then +Inf) and the sum; not thread-safe.

    ``data`` holds the counts then the sum, as float64 (exact up to 2**53), so that
    the fused decision kernel (``mittd.daemon.fastpath``) observes into the same
    array as this class does.
    """

    __slots__ = ("_bounds_arr", "bounds", "data")

    def __init__(self, bounds: Sequence[float]) -> None:
        b = tuple(float(v) for v in bounds)
        if not b or any(y <= x for x, y in pairwise(b)):
            raise ValueError(f"histogram bounds must be non-empty and ascending, got {bounds!r}")
        self.bounds = b
        self._bounds_arr = np.asarray(b, np.float64)
        self.data = np.zeros(len(b) + 2, np.float64)

    @property
    def counts(self) -> list[int]:
        return [int(c) for c in self.data[:-1]]

    @property
    def total(self) -> float:
        return float(self.data[-1])

    def observe(self, value: float, n: int = 1) -> None:
        """Add ``n`` observations of ``value`` (a burst's mean per decision uses n > 1)."""
        d = self.data
        d[bisect.bisect_left(self.bounds, value)] += n
        d[-1] += value * n

    def observe_many(self, values: np.ndarray) -> None:
        """Add every value of a float array (one vectorised pass)."""
        if len(values):
            idx = np.searchsorted(self._bounds_arr, values, side="left")
            d = self.data
            d[:-1] += np.bincount(idx, minlength=len(d) - 1)
            d[-1] += float(values.sum())

    def snapshot(self) -> HistogramSnapshot:
        counts = tuple(self.counts)
        return HistogramSnapshot(self.bounds, counts, sum(counts), self.total)
