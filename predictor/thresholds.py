"""Which trained latency threshold answers a request with a given deadline.

Lives in ``predictor`` (not ``training``) because the daemon applies the rule on
every request and must not import the training package; ``training.labels``
re-exports :func:`threshold_index_for` for the code that builds ladders.

Deadlines the model was not trained for: with ascending trained thresholds
``t_0 < ... < t_{k-1}`` and a request whose latency budget is ``d`` µs, the
daemon asks the head ``i = min{i : t_i >= d}`` — the smallest trained
threshold at or above the budget — and rejects only when that head predicts
slow. So a deadline between two thresholds uses the looser one, and one below
every threshold uses ``t_0``: it rejects only requests predicted to exceed
even ``t_0 > d``, which certainly miss the deadline, and admits the rest
(conservative, fail-open). A deadline above ``t_{k-1}`` is beyond what the
model was trained to judge: always admit. :func:`threshold_index_for`
implements the rule; :func:`index_in` is its unchecked hot-path form.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from itertools import pairwise

__all__ = ["check_thresholds", "index_in", "threshold_index_for"]


def check_thresholds(thresholds_us: float | Sequence[float]) -> tuple[float, ...]:
    """Thresholds as a tuple of floats; refuses empty, non-finite, non-positive or
    non-ascending ones."""
    if isinstance(thresholds_us, (int, float)):
        values: list[float] = [float(thresholds_us)]
    else:
        try:
            values = [float(t) for t in thresholds_us]
        except TypeError:
            raise ValueError(
                "thresholds_us must be a number or a non-empty 1-D sequence") from None
    if not values:
        raise ValueError("thresholds_us must be a number or a non-empty 1-D sequence")
    if not all(math.isfinite(t) for t in values):
        raise ValueError(f"thresholds_us must be finite, got {values}")
    if values[0] <= 0.0:
        raise ValueError(f"thresholds_us must be > 0 µs, got {values}")
    if any(b <= a for a, b in pairwise(values)):
        raise ValueError(f"thresholds_us must be strictly ascending, got {values}")
    return tuple(values)


def index_in(deadline_us: float, thresholds_us: Sequence[float]) -> int | None:
    """:func:`threshold_index_for` on thresholds already checked (no validation:
    the daemon checks a bundle's thresholds once, at load)."""
    i = bisect.bisect_left(thresholds_us, deadline_us)
    return i if i < len(thresholds_us) else None


def threshold_index_for(deadline_us: float, thresholds_us: Sequence[float]) -> int | None:
    """Which head of a ladder answers a request with a ``deadline_us`` budget.

    The index of the smallest trained threshold >= the deadline (index 0 when
    the deadline is below them all); None when the deadline is longer than every
    trained threshold, where the model cannot say and the daemon admits. See the
    module docstring for why.
    """
    d = float(deadline_us)
    if math.isnan(d):
        raise ValueError("deadline_us must be a number, got NaN")
    return index_in(d, check_thresholds(list(thresholds_us)))
