"""Latency thresholds (SLOs) and the fast/slow labels a model is trained on.

A request is *slow* (the daemon answers EBUSY) when its latency exceeds a
threshold in µs. The threshold comes from the user (``"500us"``, ``"2ms"``,
``"p99"``) or from the data (``"auto"``: the knee of the latency CDF, the way
LinnOS and Heimdall label); the grammar is ``mittd.predictor.slo``'s, re-exported
here. A multi-threshold head is trained on a *ladder* of
thresholds so that one model serves requests with different deadlines; see
:func:`threshold_index_for` for the rule that maps a deadline onto a head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mittd.predictor.slo import finite_latencies, inflection_point, parse_slo
from mittd.predictor.thresholds import threshold_index_for

__all__ = [
    "LADDER_PERCENTILES",
    "inflection_point",
    "labels",
    "ladder",
    "parse_slo",
    "threshold_index_for",
]

# Percentiles of the default ladders, by number of thresholds k.
LADDER_PERCENTILES: dict[int, tuple[float, ...]] = {
    1: (99.0,),
    2: (95.0, 99.0),
    3: (90.0, 99.0, 99.9),
    4: (90.0, 95.0, 99.0, 99.9),
    5: (90.0, 95.0, 99.0, 99.5, 99.9),
    6: (80.0, 90.0, 95.0, 99.0, 99.5, 99.9),
}


def _thresholds(thresholds_us: float | Sequence[float]) -> tuple[np.ndarray, bool]:
    scalar = np.ndim(thresholds_us) == 0
    t = np.atleast_1d(np.asarray(thresholds_us, dtype=np.float64))
    if t.ndim != 1 or t.size == 0:
        raise ValueError("thresholds_us must be a number or a non-empty 1-D sequence")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"thresholds_us must be finite, got {t.tolist()}")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise ValueError(f"thresholds_us must be strictly ascending, got {t.tolist()}")
    return t, scalar


def labels(
    latencies: np.ndarray | Sequence[float], thresholds_us: float | Sequence[float]
) -> np.ndarray:
    """int8 labels, 1 = slow (latency > threshold), 0 = fast.

    Shape (n,) for a single threshold given as a number, (n, k) for a sequence
    of k strictly ascending thresholds (a ladder, one column per head). Unknown
    (NaN) latencies are refused rather than silently called fast: the dataset
    must drop those rows.
    """
    lat = np.asarray(latencies, dtype=np.float64)
    if lat.ndim != 1:
        raise ValueError(f"latencies must be 1-D, got shape {lat.shape}")
    if np.isnan(lat).any():
        raise ValueError(
            f"{int(np.isnan(lat).sum())} latencies are NaN (unknown); drop those rows "
            "before labelling"
        )
    t, scalar = _thresholds(thresholds_us)
    y = (lat[:, None] > t[None, :]).astype(np.int8)
    return y[:, 0] if scalar else y


def _round_sig(x: float, digits: int = 2) -> float:
    if x <= 0.0:
        return x
    return float(round(x, digits - 1 - math.floor(math.log10(x))))


def ladder(latencies: np.ndarray | Sequence[float], k: int = 4) -> list[float]:
    """A default ladder of k thresholds (µs) for a multi-threshold head.

    The thresholds are percentiles of ``latencies`` (see ``LADDER_PERCENTILES``;
    k = 4 gives p90, p95, p99, p99.9) rounded to two significant figures, so that
    they read as SLOs ("170 µs", "1,700 µs"). Values that round to the same
    number are merged, so a trace with few distinct latencies may give fewer
    than k; the list is strictly ascending.

    A deadline maps onto a head of the ladder by
    :func:`~mittd.predictor.thresholds.threshold_index_for` (see
    ``mittd.predictor.thresholds`` for the rule and why).
    """
    if not isinstance(k, int) or isinstance(k, bool) or k not in LADDER_PERCENTILES:
        raise ValueError(f"ladder k must be an int in [1, {max(LADDER_PERCENTILES)}], got {k!r}")
    lat = finite_latencies(latencies, "a threshold ladder")
    values = np.percentile(lat, LADDER_PERCENTILES[k])
    out: list[float] = []
    for v in values:
        r = _round_sig(float(v))
        if r > 0.0 and (not out or r > out[-1]):
            out.append(r)
    if not out:
        raise ValueError("a threshold ladder needs positive latencies")
    return out

