"""Per-device pending-request tracker, shared by the live daemon and the offline featurisers.

The featurisers describe a new IO by the device's state when it arrives: which
requests are still pending and how the last completed IOs fared. The daemon keeps
that state live in a :class:`PendingTracker`; training rebuilds it from a recorded
trace (``mittd.predictor.features``) by running *the same numba kernels* below on
a virtual clock, so the two can never disagree.

Semantics (the offline path mirrors them exactly; all times are integer µs):

* **Featurise, then issue.** A new IO is featurised BEFORE it is added to the
  pending set: ``expire(t)`` (or ``encode_live(..., now_us=t)``), then
  ``encode_live``, then ``issue``. The queue length a request saw at issue is the
  number pending just before it (before any capacity drop) — what its featuriser saw.
* **Completions before issues.** A completion at time ``c`` has happened before an
  issue at time ``t`` when ``c <= t``. Completions are applied in order of
  (completion time, issue order). Offline, the completion time of an IO with a
  known latency ``L`` is ``ts_issue_us + ceil(max(L, 0))`` (:func:`completion_times_us`),
  so ``c <= t`` is the same as ``ts_issue + L <= t`` for real-valued ``L``.
* **Timeout.** A request pending for ``>= timeout_us`` is expired: it leaves the
  pending set at the next ``issue``/``expire`` at or after that moment, never enters
  the completion history, and a completion for it at or after that moment is
  refused (``complete`` returns False). The result never depends on when
  ``expire`` happens to be called. An IO with unknown latency (NaN) never
  completes and leaves by expiry.
* **Capacity.** At most ``capacity`` requests are pending; issuing into a full
  tracker drops the oldest-issued pending request (counted in ``dropped``).
* **Issue order** is call order. Expiry scans from the oldest request and stops at
  the first unexpired one while issue times are non-decreasing; after an
  out-of-order issue time it scans the whole (capacity-bounded) set.

Not thread-safe: one tracker per device, driven by one thread (or under a lock).
"""

from __future__ import annotations

import math
from collections.abc import KeysView
from dataclasses import dataclass

import numba
import numpy as np

from mittd.traces.schema import OP_READ  # the one home of the op codes

DEFAULT_TIMEOUT_US = 10_000_000
DEFAULT_CAPACITY = 4096
DEFAULT_HISTORY = 8

NIL = -1
INT64_MIN = np.iinfo(np.int64).min
NEVER = np.iinfo(np.int64).max  # completion time of an IO that never completes

# Columns of the pending table `pend` (int64, capacity x P_COLS); slots form a
# doubly linked list in issue order (head = oldest, tail = most recent).
P_ID, P_TS, P_OFF, P_SIZE, P_OP, P_QLEN, P_PREV, P_NEXT = range(8)
P_COLS = 8

# Fields of `meta` (int64).
M_HEAD, M_TAIL, M_COUNT, M_NFREE, M_LAST_TS, M_UNORDERED = range(6)
M_DROPPED, M_EXPIRED, M_COMPLETED = 6, 7, 8
M_POS = 9  # ring write position of history h at M_POS + h
M_LEN = 11  # number of entries in history h at M_LEN + h
M_SIZE = 16

# Completion history `hist` (float64, 2 x history x 3): ring h = 0 all IOs, 1 reads.
H_ALL, H_READS = 0, 1
H_LAT, H_QLEN, H_SIZE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class TrackerStats:
    """A tracker's counters since creation (``expired``: by timeout; ``dropped``: by
    capacity)."""

    pending: int = 0
    completed: int = 0
    expired: int = 0
    dropped: int = 0


@numba.njit(cache=True)
def init_state(pend, free, meta, hist):  # pragma: no cover - numba
    """Reset a tracker's arrays to the empty state (used live and offline)."""
    cap = pend.shape[0]
    pend[:] = 0
    for i in range(cap):
        free[i] = cap - 1 - i
    meta[:] = 0
    meta[M_HEAD] = NIL
    meta[M_TAIL] = NIL
    meta[M_NFREE] = cap
    meta[M_LAST_TS] = INT64_MIN
    hist[:] = 0.0


@numba.njit(cache=True)
def _unlink(pend, free, meta, slot):  # pragma: no cover - numba
    prev = pend[slot, P_PREV]
    nxt = pend[slot, P_NEXT]
    if prev == NIL:
        meta[M_HEAD] = nxt
    else:
        pend[prev, P_NEXT] = nxt
    if nxt == NIL:
        meta[M_TAIL] = prev
    else:
        pend[nxt, P_PREV] = prev
    free[meta[M_NFREE]] = slot
    meta[M_NFREE] += 1
    meta[M_COUNT] -= 1


@numba.njit(cache=True)
def t_expire(pend, free, meta, removed, now, timeout):  # pragma: no cover - numba
    """Drop requests pending >= timeout at `now`; their ids go to `removed`."""
    n = 0
    ordered = meta[M_UNORDERED] == 0
    slot = meta[M_HEAD]
    while slot != NIL:
        nxt = pend[slot, P_NEXT]
        if now - pend[slot, P_TS] >= timeout:
            removed[n] = pend[slot, P_ID]
            n += 1
            _unlink(pend, free, meta, slot)
        elif ordered:
            break
        slot = nxt
    meta[M_EXPIRED] += n
    return n


@numba.njit(cache=True)
def t_issue(pend, free, meta, removed, req_id, ts, offset, size, op, timeout):  # pragma: no cover
    """Add a request; returns (slot, number of ids written to `removed`)."""
    if ts < meta[M_LAST_TS]:
        meta[M_UNORDERED] = 1
    meta[M_LAST_TS] = ts
    n = t_expire(pend, free, meta, removed, ts, timeout)
    qlen = meta[M_COUNT]
    if meta[M_NFREE] == 0:
        head = meta[M_HEAD]
        removed[n] = pend[head, P_ID]
        n += 1
        _unlink(pend, free, meta, head)
        meta[M_DROPPED] += 1
    meta[M_NFREE] -= 1
    slot = free[meta[M_NFREE]]
    pend[slot, P_ID] = req_id
    pend[slot, P_TS] = ts
    pend[slot, P_OFF] = offset
    pend[slot, P_SIZE] = size
    pend[slot, P_OP] = op
    pend[slot, P_QLEN] = qlen
    tail = meta[M_TAIL]
    pend[slot, P_PREV] = tail
    pend[slot, P_NEXT] = NIL
    if tail == NIL:
        meta[M_HEAD] = slot
    else:
        pend[tail, P_NEXT] = slot
    meta[M_TAIL] = slot
    meta[M_COUNT] += 1
    return slot, n


@numba.njit(cache=True)
def _push(hist, meta, h, lat, qlen, size):  # pragma: no cover - numba
    depth = hist.shape[1]
    pos = meta[M_POS + h]
    hist[h, pos, H_LAT] = lat
    hist[h, pos, H_QLEN] = qlen
    hist[h, pos, H_SIZE] = size
    meta[M_POS + h] = pos + 1 if pos + 1 < depth else 0
    if meta[M_LEN + h] < depth:
        meta[M_LEN + h] += 1


@numba.njit(cache=True)
def t_complete(pend, free, meta, hist, slot, ts, latency, has_latency, timeout):  # pragma: no cover
    """Complete the request in `slot`; False (no history) when it had already expired."""
    t0 = pend[slot, P_TS]
    if ts - t0 >= timeout:
        _unlink(pend, free, meta, slot)
        meta[M_EXPIRED] += 1
        return False
    lat = latency if has_latency else float(ts - t0)
    qlen = float(pend[slot, P_QLEN])
    size = float(pend[slot, P_SIZE])
    if hist.shape[1] > 0:
        _push(hist, meta, H_ALL, lat, qlen, size)
        if pend[slot, P_OP] == OP_READ:
            _push(hist, meta, H_READS, lat, qlen, size)
    _unlink(pend, free, meta, slot)
    meta[M_COMPLETED] += 1
    return True


@numba.njit(cache=True)
def t_complete_many(pend, free, meta, hist, slots, ts, latency, timeout, known):  # pragma: no cover
    """t_complete for each slot (NIL: unknown id); a NaN/inf latency means ts - issue."""
    for i in range(slots.shape[0]):
        s = slots[i]
        if s == NIL:
            known[i] = False
            continue
        lat = latency[i]
        has = np.isfinite(lat)
        known[i] = t_complete(pend, free, meta, hist, s, ts, lat if has else 0.0, has, timeout)


@numba.njit(cache=True)
def t_discard(pend, free, meta, slot):  # pragma: no cover - numba
    """Remove a request without history (its id was reused by a new issue)."""
    _unlink(pend, free, meta, slot)
    meta[M_DROPPED] += 1


@numba.njit(cache=True)
def pending_offsets_into(out, pend, meta):  # pragma: no cover - numba
    """Offsets of the len(out) most recent pending requests, most recent first; returns count."""
    slot = meta[M_TAIL]
    n = 0
    while slot != NIL and n < out.shape[0]:
        out[n] = pend[slot, P_OFF]
        n += 1
        slot = pend[slot, P_PREV]
    return n


@numba.njit(cache=True)
def completion_times_us(ts, latency, timeout):  # pragma: no cover - numba
    """Offline completion time of each IO: ts + ceil(max(lat, 0)), or NEVER.

    NEVER when the latency is unknown (NaN, inf) or >= timeout: such an IO is
    expired before its completion could be accepted, exactly as live.
    """
    out = np.empty(ts.shape[0], np.int64)
    for i in range(ts.shape[0]):
        lat = latency[i]
        if not np.isfinite(lat) or lat >= timeout:
            out[i] = NEVER
            continue
        c = np.int64(math.ceil(lat)) if lat > 0.0 else np.int64(0)
        out[i] = ts[i] + c if c < timeout else NEVER
    return out


def tracker_words(capacity: int) -> int:
    """int64 words of a tracker's buffer: pend, free, meta, removed."""
    return capacity * P_COLS + capacity + M_SIZE + capacity


@numba.njit(cache=True, inline="always")
def buffer_views(buf, capacity):  # pragma: no cover - numba
    """(pend, free, meta, removed) as views of one tracker buffer (the tracker calls
    the same source as plain Python: ``buffer_views.py_func``)."""
    a = capacity * P_COLS
    b = a + capacity
    c = b + M_SIZE
    return buf[:a].reshape((capacity, P_COLS)), buf[a:b], buf[b:c], buf[c:c + capacity]


class PendingTracker:
    """Pending requests and completion history of one device (see module docstring).

    State lives in preallocated numpy arrays (``pend``, ``meta``, ``hist``) that
    the featuriser kernels read directly; treat them as read-only. Request ids
    must fit in int64; an id issued again while pending replaces the old request
    (counted as dropped).
    """

    __slots__ = ("_cap", "_hdepth", "_slots", "_timeout", "buf", "free", "hist", "meta", "pend",
                 "removed")

    def __init__(
        self,
        timeout_us: int = DEFAULT_TIMEOUT_US,
        capacity: int = DEFAULT_CAPACITY,
        history: int = DEFAULT_HISTORY,
    ) -> None:
        check_tracker_params(timeout_us, capacity)
        if not isinstance(history, int) or history < 0:
            raise ValueError(f"history must be an int >= 0, got {history!r}")
        self._timeout = int(timeout_us)
        self._cap = int(capacity)
        self._hdepth = int(history)
        # one int64 buffer, viewed as pend | free | meta | removed (buffer_views): the
        # fused decision kernel (mittd.daemon.fastpath) takes one array, not four
        self.buf = np.zeros(tracker_words(capacity), np.int64)
        self.pend, self.free, self.meta, self.removed = buffer_views.py_func(self.buf, capacity)
        self.hist = np.zeros((2, history, 3), np.float64)
        self._slots: dict[int, int] = {}
        init_state(self.pend, self.free, self.meta, self.hist)

    @property
    def timeout_us(self) -> int:
        return self._timeout

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def history(self) -> int:
        """Depth of each completion-history ring (all IOs, reads)."""
        return self._hdepth

    def issue(self, req_id: int, ts_us: int, offset: int, size: int, op: int) -> None:
        """Record a new pending request (after it has been featurised)."""
        slots = self._slots
        old = slots.pop(req_id, None)
        if old is not None:
            t_discard(self.pend, self.free, self.meta, old)
        slot, n = t_issue(
            self.pend, self.free, self.meta, self.removed,
            req_id, ts_us, offset, size, op, self._timeout,
        )
        if n:
            self._forget(n)
        slots[req_id] = slot

    def complete(self, req_id: int, ts_us: int, latency_us: float | None = None) -> bool:
        """Complete a pending request; False (never raises) for unknown or expired ids.

        ``latency_us`` defaults to ``ts_us`` minus the issue time (also when it is
        NaN or infinite).
        """
        slot = self._slots.pop(req_id, None)
        if slot is None:
            return False
        has = latency_us is not None and math.isfinite(latency_us)
        return t_complete(
            self.pend, self.free, self.meta, self.hist, slot, ts_us,
            float(latency_us) if has else 0.0, has, self._timeout,
        )

    def withdraw(self, req_id: int) -> bool:
        """Remove a pending request that never reached the device (a rejected IO of a
        burst, see ``AdmissionCore.admit_burst``): no history, and not counted as
        completed, expired or dropped. False for an unknown id."""
        slot = self._slots.pop(req_id, None)
        if slot is None:
            return False
        _unlink(self.pend, self.free, self.meta, slot)
        return True

    def adopt(self, ids: list[int], slots: list[int], removed: list[int]) -> None:
        """Update the id -> slot map after a numba kernel issued ``ids`` into ``slots``
        and expired or dropped the ``removed`` ids (``mittd.predictor.burst``).
        The ``ids`` must be unique and not pending before."""
        s = self._slots
        s.update(zip(ids, slots, strict=True))
        for rid in removed:
            del s[rid]

    def complete_many(self, req_ids: list[int], ts_us: int,
                      latencies_us: np.ndarray) -> np.ndarray:
        """:meth:`complete` for many ids at one time, in order, in one kernel call;
        returns a bool array: which ids were known (and not expired)."""
        return self.complete_slots(self.take_slots(req_ids), ts_us, latencies_us)

    def take_slots(self, req_ids: list[int]) -> np.ndarray:
        """The slots of ``req_ids`` (NIL: unknown), forgotten by the id map: the first
        half of :meth:`complete_many`, for callers that need the slots too."""
        pop = self._slots.pop
        return np.fromiter((pop(r, NIL) for r in req_ids), np.int64, len(req_ids))

    def complete_slots(self, slots: np.ndarray, ts_us: int,
                       latencies_us: np.ndarray) -> np.ndarray:
        """The second half of :meth:`complete_many`: complete the slots :meth:`take_slots`
        gave; which were known (and not expired)."""
        known = np.empty(len(slots), np.bool_)
        t_complete_many(self.pend, self.free, self.meta, self.hist, slots, int(ts_us),
                        np.asarray(latencies_us, np.float64), self._timeout, known)
        return known

    def expire(self, now_us: int) -> int:
        """Drop requests pending >= timeout_us at ``now_us``; returns how many."""
        n = t_expire(self.pend, self.free, self.meta, self.removed, now_us, self._timeout)
        if n:
            self._forget(n)
        return n

    def _forget(self, n: int) -> None:
        slots = self._slots
        for rid in self.removed[:n].tolist():
            del slots[rid]

    # -- accessors -------------------------------------------------------------------
    @property
    def pending_count(self) -> int:
        return int(self.meta[M_COUNT])

    def __len__(self) -> int:
        return int(self.meta[M_COUNT])

    def __contains__(self, req_id: object) -> bool:
        return req_id in self._slots

    def pending_ids(self) -> KeysView[int]:
        """A live view of the pending request ids (set operations at C speed)."""
        return self._slots.keys()

    def pending_offsets(self, k: int) -> np.ndarray:
        """Byte offsets of the k most recently issued pending requests, most recent first."""
        out = np.zeros(max(int(k), 0), np.int64)
        n = pending_offsets_into(out, self.pend, self.meta)
        return out[:n]

    def recent_completions(self, n: int, reads_only: bool = False) -> np.ndarray:
        """The last n completed IOs (or reads), most recent first.

        float64 array (m, 3), m <= min(n, history): columns latency_us, queue
        length at issue, size in bytes.
        """
        h = H_READS if reads_only else H_ALL
        m = min(int(n), int(self.meta[M_LEN + h]))
        if m <= 0:
            return np.zeros((0, 3), np.float64)
        pos = int(self.meta[M_POS + h])
        idx = (pos - 1 - np.arange(m)) % self._hdepth
        return self.hist[h, idx].copy()

    def stats(self) -> TrackerStats:
        """Counters since creation: pending, completed, expired, dropped."""
        m = self.meta
        return TrackerStats(int(m[M_COUNT]), int(m[M_COMPLETED]), int(m[M_EXPIRED]),
                            int(m[M_DROPPED]))

    def __repr__(self) -> str:
        return (
            f"PendingTracker(timeout_us={self._timeout}, capacity={self._cap}, "
            f"history={self._hdepth}, pending={self.pending_count})"
        )


def check_tracker_params(timeout_us: object, capacity: object) -> None:
    """Validate tracker parameters, naming the bad field and the allowed range."""
    if not isinstance(timeout_us, int) or isinstance(timeout_us, bool) or timeout_us < 1:
        raise ValueError(f"timeout_us must be an int >= 1 (µs), got {timeout_us!r}")
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
