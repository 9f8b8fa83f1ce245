"""Naming a latency threshold (an SLO): ``500us``, ``p99`` or ``auto``.

One grammar for ``mittd train --slo``, ``mittd replay --slo`` and every other
place a user names a threshold. It lives below ``training`` (numpy only) because
the replayer and the daemon tools need it without TensorFlow;
``mittd.training.labels`` re-exports it for the code that builds labels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from mittd.traces.units import NUMBER, parse_duration_us

__all__ = ["KNEE_TRIM_PERCENTILE", "finite_latencies", "inflection_point", "parse_slo"]

_PERCENTILE = re.compile(rf"^p({NUMBER})$")

# Heimdall's and LinnOS' knee finder looks at the CDF below this percentile only,
# so that a few huge outliers do not squash the body of the distribution.
KNEE_TRIM_PERCENTILE = 97.0


def finite_latencies(latencies: np.ndarray | Sequence[float], what: str) -> np.ndarray:
    """The known (finite) latencies as a flat float64 array; ValueError if none."""
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
    lat = finite_latencies(latencies, "the auto SLO (CDF knee)")
    cut = np.percentile(lat, KNEE_TRIM_PERCENTILE)
    body = np.sort(lat[lat <= cut])
    top = float(body[-1])
    if top <= 0.0:
        return top
    cdf = np.searchsorted(body, body, side="right") / body.size
    return float(body[int(np.argmax(cdf - body / top))])


def parse_slo(text: str, latencies: np.ndarray | Sequence[float]) -> float:
    """The latency threshold in µs that ``text`` names.

    A duration in the grammar of ``mittd.traces.units`` (``"500us"``, ``"0.5ms"``,
    ``"2ms"``, ``"1s"``, ``"250ns"``; a bare number is µs); ``"p95"``, ``"p99.9"``
    (that percentile of ``latencies``, NaN ignored); ``"auto"``
    (:func:`inflection_point` of ``latencies``). Case and surrounding spaces do not
    matter. ``latencies`` is only read for percentiles and ``auto``; pass the
    *training* latencies so that no test data leaks in.
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
        value = float(np.percentile(finite_latencies(latencies, f"SLO {text!r}"), q))
    else:
        try:
            value = parse_duration_us(s, "SLO", bare="us")
        except ValueError:
            raise ValueError(
                f"bad SLO {text!r}: use a duration ('500us', '0.5ms', '2ms', '1s', or a bare "
                "number of µs), a percentile ('p95', 'p99.9') or 'auto'") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"bad SLO {text!r}: the threshold must be > 0 µs, got {value!r}")
    return value
