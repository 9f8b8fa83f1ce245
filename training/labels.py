"""Latency thresholds (SLOs) and the fast/slow labels a model is trained on.

A request is *slow* (the daemon answers EBUSY) when its latency exceeds a
threshold in µs. The threshold comes from the user (``"500us"``, ``"2ms"``,
``"p99"``) or from the data (``"auto"``: the knee of the latency CDF, the way
LinnOS and Heimdall label). A multi-threshold head is trained on a *ladder* of
thresholds so that one model serves requests with different deadlines; see
:func:`threshold_index_for` for the rule that maps a deadline onto a head.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from mittd.predictor.thresholds import threshold_index_for

__all__ = [
    "LADDER_PERCENTILES",
    "inflection_point",
    "labels",
    "ladder",
    "parse_slo",
    "threshold_index_for",
]

_UNITS_US = {"ns": 1e-3, "us": 1.0, "µs": 1.0, "μs": 1.0, "ms": 1e3, "s": 1e6}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_DURATION = re.compile(rf"^({_NUMBER})\s*(ns|us|µs|μs|ms|s)?$")
_PERCENTILE = re.compile(rf"^p({_NUMBER})$")

# Percentiles of the default ladders, by number of thresholds k.
LADDER_PERCENTILES: dict[int, tuple[float, ...]] = {
    1: (99.0,),
    2: (95.0, 99.0),
    3: (90.0, 99.0, 99.9),
    4: (90.0, 95.0, 99.0, 99.9),
    5: (90.0, 95.0, 99.0, 99.5, 99.9),
    6: (80.0, 90.0, 95.0, 99.0, 99.5, 99.9),
}

# Heimdall's and LinnOS' knee finder looks at the CDF below this percentile only,
# so that a few huge outliers do not squash the body of the distribution.
KNEE_TRIM_PERCENTILE = 97.0


def _finite(latencies: np.ndarray | Sequence[float], what: str) -> np.ndarray:
    lat = np.asarray(latencies, dtype=np.float64).reshape(-1)
    lat = lat[np.isfinite(lat)]
    if lat.size == 0:
        raise ValueError(f"{what} needs at least one known (finite) latency")
    return lat


def inflection_point(latencies: np.ndarray | Sequence[float]) -> float:
    """The knee of the latency CDF in µs: the ``auto`` SLO.

    Method (Heimdall, EuroSys'25, and its LinnOS re-implementation: the
    "tangent-based" finder, ``default_ip_finder.tangent_based`` /
    ``calc_inflection_point.py`` in github.com/ucare-uchicago/Heimdall):

    1. keep the latencies at or below their 97th percentile;
    2. scale them to [0, 1] by dividing by the largest one kept;
    3. take the empirical CDF F of the scaled values and return the latency
       where ``F(x) - x`` is largest, i.e. where the CDF's slope falls to 1 (its
       tangent is parallel to the 45° diagonal): to the left the CDF still climbs
       steeply (the body, fast IOs), to the right it flattens (the tail).

    Heimdall evaluates F on a 10,000-point grid; ``F(x) - x`` peaks at a sample
    (F jumps there, ``-x`` only falls in between), so this evaluates it exactly at
    the samples instead. NaN latencies are ignored. Labels are ``latency >
    knee``: the knee itself is the slowest *fast* IO.
    """
    lat = _finite(latencies, "the auto SLO (CDF knee)")
    cut = np.percentile(lat, KNEE_TRIM_PERCENTILE)
    body = np.sort(lat[lat <= cut])
    top = float(body[-1])
    if top <= 0.0:
        return top
    cdf = np.searchsorted(body, body, side="right") / body.size
    return float(body[int(np.argmax(cdf - body / top))])


def parse_slo(text: str, latencies: np.ndarray | Sequence[float]) -> float:
    """The latency threshold in µs that ``text`` names.

    ``"500us"``, ``"0.5ms"``, ``"2ms"``, ``"1s"``, ``"250ns"``, a bare number (µs);
    ``"p95"``, ``"p99.9"`` (that percentile of ``latencies``, NaN ignored);
    ``"auto"`` (:func:`inflection_point` of ``latencies``). Case and surrounding
    spaces do not matter. ``latencies`` is only read for percentiles and
    ``auto``; pass the *training* latencies so that no test data leaks in.
    """
    if not isinstance(text, str):
        raise ValueError(f"SLO must be a string such as '500us', 'p99' or 'auto', got {text!r}")
    s = text.strip().lower()
    if s == "auto":
        value = inflection_point(latencies)
    elif m := _PERCENTILE.match(s):
        q = float(m.group(1))
        if not 0.0 < q <= 100.0:
            raise ValueError(f"bad SLO {text!r}: the percentile must be in (0, 100]")
        value = float(np.percentile(_finite(latencies, f"SLO {text!r}"), q))
    elif m := _DURATION.match(s):
        value = float(m.group(1)) * _UNITS_US[m.group(3) or "us"]
    else:
        raise ValueError(
            f"bad SLO {text!r}: use a duration ('500us', '0.5ms', '2ms', '1s', or a bare "
            "number of µs), a percentile ('p95', 'p99.9') or 'auto'"
        )
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"bad SLO {text!r}: the threshold must be > 0 µs, got {value!r}")
    return value


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
    lat = _finite(latencies, "a threshold ladder")
    values = np.percentile(lat, LADDER_PERCENTILES[k])
    out: list[float] = []
    for v in values:
        r = _round_sig(float(v))
        if r > 0.0 and (not out or r > out[-1]):
            out.append(r)
    if not out:
        raise ValueError("a threshold ladder needs positive latencies")
    return out

