"""PendingTracker: pending set, completion history, expiry, capacity — against a plain model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mittd.predictor.tracker import NEVER, PendingTracker, TrackerStats, completion_times_us


def test_complete_unknown_id_returns_false() -> None:
    tr = PendingTracker()
    assert tr.complete(42, 10) is False
    tr.issue(1, 0, 4096, 4096, 0)
    assert tr.complete(1, 5) is True
    assert tr.complete(1, 6) is False  # already completed
    assert len(tr) == 0


def test_latency_defaults_to_elapsed_and_queue_length_at_issue() -> None:
    tr = PendingTracker()
    tr.issue(10, 100, 0, 4096, 0)  # saw 0 pending
    tr.issue(11, 101, 0, 8192, 1)  # saw 1
    tr.issue(12, 102, 0, 512, 0)  # saw 2
    assert tr.complete(12, 150)  # default latency 48
    assert tr.complete(10, 160, 7.5)  # explicit latency wins
    assert tr.complete(11, 170, float("nan"))  # NaN -> default 69
    hist = tr.recent_completions(5)
    np.testing.assert_array_equal(hist, [[69.0, 1, 8192], [7.5, 0, 4096], [48.0, 2, 512]])
    reads = tr.recent_completions(5, reads_only=True)
    np.testing.assert_array_equal(reads, [[7.5, 0, 4096], [48.0, 2, 512]])
    assert tr.stats() == TrackerStats(pending=0, completed=3, expired=0, dropped=0)


def test_expiry_removes_without_history() -> None:
    tr = PendingTracker(timeout_us=100)
    tr.issue(1, 0, 0, 4096, 0)
    tr.issue(2, 50, 0, 4096, 0)
    assert tr.expire(99) == 0
    assert tr.expire(100) == 1  # pending for exactly timeout_us
    assert 1 not in tr and 2 in tr
    assert tr.complete(1, 101, 20.0) is False
    # A completion arriving at or after the timeout is refused even before any expire().
    assert tr.complete(2, 150) is False
    assert len(tr.recent_completions(8)) == 0
    assert tr.stats().expired == 2


def test_issue_expires_and_unknown_latency_leaves_by_expiry() -> None:
    tr = PendingTracker(timeout_us=10)
    tr.issue(1, 0, 0, 1, 0)  # never completed
    tr.issue(2, 9, 0, 1, 0)
    assert len(tr) == 2
    tr.issue(3, 10, 0, 1, 0)  # 1 has been pending 10 µs: gone before 3 is counted
    assert len(tr) == 2 and 1 not in tr
    tr.complete(3, 11)
    assert tr.recent_completions(1)[0, 1] == 1  # 3 saw only request 2


def test_capacity_drops_oldest_and_bounds_memory() -> None:
    tr = PendingTracker(capacity=3)
    for i in range(5):
        tr.issue(i, i, i * 4096, 4096, 0)
    assert len(tr) == 3
    assert tr.stats().dropped == 2
    np.testing.assert_array_equal(tr.pending_offsets(10), [4 * 4096, 3 * 4096, 2 * 4096])
    assert tr.complete(0, 10) is False
    assert tr.complete(3, 10) is True
    for i in range(100, 10_000):
        tr.issue(i, i, 0, 4096, 1)
    assert len(tr) == 3 and len(tr._slots) == 3


def test_queue_length_at_issue_counts_the_full_queue() -> None:
    tr = PendingTracker(capacity=2)
    tr.issue(1, 0, 0, 1, 0)
    tr.issue(2, 1, 0, 1, 0)
    tr.issue(3, 2, 0, 1, 0)  # saw 2 pending (then 1 was dropped)
    tr.complete(3, 3)
    assert tr.recent_completions(1)[0, 1] == 2


def test_pending_offsets_most_recent_first() -> None:
    tr = PendingTracker()
    for i in range(6):
        tr.issue(i, i, 1000 + i, 1, 0)
    tr.complete(4, 10)
    tr.complete(1, 10)
    np.testing.assert_array_equal(tr.pending_offsets(3), [1005, 1003, 1002])
    np.testing.assert_array_equal(tr.pending_offsets(10), [1005, 1003, 1002, 1000])
    assert tr.pending_offsets(0).shape == (0,)


def test_out_of_order_issue_times_still_expire() -> None:
    tr = PendingTracker(timeout_us=100)
    tr.issue(1, 500, 0, 1, 0)
    tr.issue(2, 100, 0, 1, 0)  # earlier clock value than its predecessor
    assert tr.expire(200) == 1 and 2 not in tr and 1 in tr
    assert tr.expire(600) == 1 and len(tr) == 0


def test_reissued_id_replaces_the_old_request() -> None:
    tr = PendingTracker()
    tr.issue(7, 0, 0, 1, 0)
    tr.issue(7, 5, 4096, 1, 0)
    assert len(tr) == 1
    assert tr.complete(7, 10) is True
    assert tr.recent_completions(1)[0, 0] == 5.0


def test_history_ring_wraps() -> None:
    tr = PendingTracker(history=3)
    for i in range(7):
        tr.issue(i, i, 0, 1, i % 2)
        tr.complete(i, i + 1, float(i))
    np.testing.assert_array_equal(tr.recent_completions(9)[:, 0], [6.0, 5.0, 4.0])
    np.testing.assert_array_equal(tr.recent_completions(9, reads_only=True)[:, 0], [6.0, 4.0, 2.0])


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="timeout_us"):
        PendingTracker(timeout_us=0)
    with pytest.raises(ValueError, match="capacity"):
        PendingTracker(capacity=0)
    with pytest.raises(ValueError, match="history"):
        PendingTracker(history=-1)


def test_completion_times_match_the_definition() -> None:
    ts = np.array([0, 10, 20, 30, 40, 50], np.int64)
    lat = np.array([0.0, 2.1, -3.0, np.nan, 99.5, 100.0])
    got = completion_times_us(ts, lat, 100)
    assert got.tolist() == [0, 13, 20, NEVER, NEVER, NEVER]  # ceil(99.5) = 100 >= timeout


# -- model-based: the tracker against a plain Python model ------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["issue", "complete", "expire"]),
        st.integers(0, 12),  # request id
        st.integers(0, 30),  # time step
        st.one_of(st.none(), st.floats(0, 50, allow_nan=False)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops=ops, timeout=st.integers(1, 40), capacity=st.integers(1, 6))
def test_tracker_matches_model(ops: list, timeout: int, capacity: int) -> None:
    tr = PendingTracker(timeout_us=timeout, capacity=capacity, history=4)
    pending: list[dict] = []  # issue order
    history: list[tuple[float, int, int, int]] = []  # (lat, qlen, size, op)
    now = 0

    def expire(t: int) -> int:
        gone = [p for p in pending if t - p["ts"] >= timeout]
        for p in gone:
            pending.remove(p)
        return len(gone)

    for kind, rid, step, lat in ops:
        now += step
        if kind == "issue":
            for p in [p for p in pending if p["id"] == rid]:
                pending.remove(p)
            expire(now)
            q = len(pending)
            if len(pending) == capacity:
                pending.pop(0)
            pending.append({"id": rid, "ts": now, "off": rid * 4096 + now, "size": 1 + rid,
                            "op": rid % 3, "q": q})
            tr.issue(rid, now, rid * 4096 + now, 1 + rid, rid % 3)
        elif kind == "complete":
            match = [p for p in pending if p["id"] == rid]
            want = bool(match) and now - match[0]["ts"] < timeout
            if match:
                pending.remove(match[0])
                if want:
                    p = match[0]
                    lv = float(now - p["ts"]) if lat is None or math.isnan(lat) else lat
                    history.append((lv, p["q"], p["size"], p["op"]))
            assert tr.complete(rid, now, lat) is want
        else:
            assert tr.expire(now) == expire(now)
        assert len(tr) == len(pending)
        want_offs = [p["off"] for p in reversed(pending)][:5]
        assert tr.pending_offsets(5).tolist() == want_offs
        recent = [h[:3] for h in reversed(history)][:4]
        assert [tuple(r) for r in tr.recent_completions(4).tolist()] == recent
        recent_reads = [h[:3] for h in reversed(history) if h[3] == 0][:4]
        assert [tuple(r) for r in tr.recent_completions(4, True).tolist()] == recent_reads


def test_the_tracker_arrays_are_views_of_its_one_buffer() -> None:
    """The fused decision kernel takes ``buf`` alone and rebuilds the four arrays
    with ``buffer_views``: they must be the same memory, in that layout."""
    from mittd.predictor.tracker import buffer_views

    t = PendingTracker(timeout_us=1000, capacity=5, history=2)
    t.issue(7, 10, 4096, 512, 0)
    t.issue(8, 11, 8192, 512, 0)
    t.complete(7, 20, 10.0)
    views = buffer_views(t.buf, 5)  # the compiled form the kernels inline
    for mine, theirs in zip((t.pend, t.free, t.meta, t.removed), views, strict=True):
        assert mine.base is t.buf
        np.testing.assert_array_equal(mine, theirs)
