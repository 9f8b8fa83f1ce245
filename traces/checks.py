"""Value rules for trace rows: the one home of "which rows are malformed".

Why one home: a text reader checks its raw fields (``Size must be > 0``) and the
Parquet reader checks the canonical columns (``size must be > 0``); both evaluate
their rules with :func:`first_failed`, so a row is judged the same way whatever
file it came from, and the canonical rules (:data:`CANONICAL_CHECKS`) are what any
canonical row — converted, collected or recorded by the daemon — must satisfy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Rule = Callable[[pa.Table | pa.RecordBatch], pa.Array]
Check = tuple[str, Rule]

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def first_failed(table: pa.Table | pa.RecordBatch, checks: Sequence[Check]
                 ) -> tuple[np.ndarray, list[str]]:
    """Per row, the index of the first check it fails (-1: valid), and the checks'
    reasons. A null result (a null field) fails the check."""
    first = np.full(table.num_rows, -1, dtype=np.int64)
    names = []
    for i, (reason, rule) in enumerate(checks):
        ok = rule(table)
        bad = ~np.asarray(pc.fill_null(ok, False).to_numpy(zero_copy_only=False), bool)
        first[(first < 0) & bad] = i
        names.append(reason)
    return first, names


def non_negative(name: str) -> Rule:
    return lambda t: pc.greater_equal(t.column(name), 0)


def positive(name: str) -> Rule:
    return lambda t: pc.greater(t.column(name), 0)


def one_of(name: str, values: Sequence) -> Rule:
    return lambda t: pc.is_in(t.column(name), value_set=pa.array(list(values)))


def in_range(name: str, lo: float, hi: float) -> Rule:
    """``lo <= value <= hi``; NaN and infinities fail (for bounds that keep a unit
    conversion inside int64: seconds → µs, sectors → bytes)."""
    return lambda t: pc.and_(pc.greater_equal(t.column(name), lo),
                             pc.less_equal(t.column(name), hi))


def _latency_ok(t: pa.Table | pa.RecordBatch) -> pa.Array:
    """NaN (or null) means "no latency recorded" (Alibaba, Tencent, rejected IOs) and
    is valid; otherwise a latency must be finite and >= 0."""
    lat = t.column("latency_us")
    finite_ok = pc.and_(pc.greater_equal(lat, 0.0), pc.less(lat, float("inf")))
    return pc.fill_null(pc.or_(pc.is_nan(lat), finite_ok), True)


def _op_ok(t: pa.Table | pa.RecordBatch) -> pa.Array:
    return pc.is_in(t.column("op"), value_set=pa.array(["read", "write", "other"]))


def _not_null(name: str) -> Rule:
    return lambda t: pc.is_valid(t.column(name))


# The canonical trace's rules (mittd.traces.schema), applied to every Parquet row read.
# Issue times may be negative (fio logs without issue times: completion - latency) and
# out of order (completion-ordered sources), so only their presence is required.
CANONICAL_CHECKS: tuple[Check, ...] = (
    ("ts_issue_us must not be null", _not_null("ts_issue_us")),
    ("op must be read, write or other", _op_ok),
    ("latency_us must be >= 0 and finite (NaN: none recorded)", _latency_ok),
    ("offset must be >= 0", non_negative("offset")),
    ("size must be > 0", positive("size")),
    ("device must not be null", _not_null("device")),
)
