"""Trace statistics: percentiles within the documented 0.1 %, exact counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mittd.traces.schema import make_batch
from mittd.traces.stats import LogHistogram, TraceSummary, render


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=0.5, max_value=5e6, allow_nan=False), min_size=1, max_size=400),
    st.sampled_from([50.0, 90.0, 99.0, 99.9, 100.0]),
)
def test_histogram_percentile_within_a_tenth_of_a_percent(values: list[float], q: float) -> None:
    h = LogHistogram()
    arr = np.array(values)
    h.add(arr)
    exact = float(np.percentile(arr, q, method="inverted_cdf"))
    assert h.percentile(q) == pytest.approx(exact, rel=1.001e-3)
    assert h.max == arr.max() and h.min == arr.min() and h.count == len(values)


def test_nan_latencies_are_not_counted() -> None:
    h = LogHistogram()
    h.add(np.array([np.nan, 10.0, np.nan]))
    assert h.count == 1 and h.percentile(50) == pytest.approx(10.0, rel=1e-3)


def test_summary_counts_and_rates() -> None:
    s = TraceSummary()
    n = 1000
    ops = np.array([0] * 700 + [1] * 300)
    s.add(make_batch(np.arange(n) * 1000, np.full(n, 100.0), ops, np.zeros(n, np.int64),
                     np.full(n, 4096), "d0"))
    info = s.to_dict()
    assert info["ios"] == 1000 and info["reads"] == 700 and info["writes"] == 300
    assert info["duration_s"] == pytest.approx(0.999)
    assert info["iops"] == pytest.approx(1000 / 0.999)
    assert info["bytes_read"] == 700 * 4096
    assert info["latency_us"]["read"]["p99"] == pytest.approx(100.0, rel=1e-3)
    assert info["size_bytes"]["p50"] == 4096
    text = render(info, "t")
    assert "R:W 70:30" in text and "p99.9" in text


def test_summary_without_latency_says_so() -> None:
    s = TraceSummary()
    s.add(make_batch(np.arange(3), np.full(3, np.nan), np.zeros(3, np.int8),
                     np.zeros(3, np.int64), np.full(3, 512), "v"))
    info = s.to_dict()
    assert info["latency_us"] == {} and info["unknown_latency"] == 3
    assert "not recorded" in render(info, "t")
