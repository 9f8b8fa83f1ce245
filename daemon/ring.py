"""The record ring: every decided IO of a device, in memory, written by the kernels.

Why a ring written in the compiled decision: recording must cost next to nothing
per IO (target ≤ 1 µs on the in-process path, whose whole decision is ~4 µs),
and must never block or fail an IO. So the fused kernel (``fastpath.admit1``)
appends the IO's row here with a few stores, a completion (``fastpath.complete1``)
fills in its latency through the tracker slot the IO was issued into, and all
Parquet work happens later, off the IO path, in ``mittd.daemon.recorder``.

The ring also is the live quality window (``mittd.daemon.quality``): its last
rows are the device's recent decisions with their measured latencies.

Layout: ``rec`` (int64) = a header (:data:`R_HEAD` …), then ``slot_row`` (the
record row of the IO pending in each tracker slot; -1 none), then the int
columns ts, offset, size, codes (``op | outcome << 2 | (head + 1) << 8``), each
:data:`RING_ROWS` long; ``recf`` (float64) = margin, deadline, latency columns.
Rows are numbered from 0 up (``R_HEAD`` is the next); row r lives at
``r & (rows - 1)``. With a writer attached (``R_KEEP``), rows not yet consumed
(below ``R_HEAD``, at or above ``R_DONE``) are never overwritten: a full ring
drops the new row (counted); without one, the ring overwrites its oldest rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from mittd.daemon.config import RING_ROWS  # 131,072 IOs: >10 s of QD1 reads, 7.3 MB a device
from mittd.predictor.tracker import NIL

(R_HEAD, R_DONE, R_ROWS, R_KEEP, R_DROPPED, R_LATE, R_SLOTS, R_WRITTEN, R_OFF) = range(9)
R_HDR = 10
INT_COLS = ("ts", "offset", "size", "codes")
FLOAT_COLS = ("margin", "deadline", "latency")


def ring_arrays(slots: int, rows: int = RING_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """A new, empty ring for a tracker of ``slots`` slots: ``(rec, recf)``."""
    if rows <= 0 or rows & (rows - 1):
        raise ValueError(f"ring rows must be a power of two > 0, got {rows}")
    rec = np.zeros(R_HDR + slots + len(INT_COLS) * rows, np.int64)
    rec[R_ROWS] = rows
    rec[R_SLOTS] = slots
    rec[R_HDR:R_HDR + slots] = -1
    recf = np.full(len(FLOAT_COLS) * rows, np.nan)
    return rec, recf


def columns(rec: np.ndarray, recf: np.ndarray) -> dict[str, np.ndarray]:
    """Numpy views of the ring's columns by name (Python side: flush, quality)."""
    rows, slots = int(rec[R_ROWS]), int(rec[R_SLOTS])
    base = R_HDR + slots
    out = {name: rec[base + j * rows: base + (j + 1) * rows] for j, name in enumerate(INT_COLS)}
    out.update({name: recf[j * rows:(j + 1) * rows] for j, name in enumerate(FLOAT_COLS)})
    out["slot_row"] = rec[R_HDR:base]
    return out


@numba.njit(cache=True, inline="always")
def rec_put(rec, recf, ts, offset, size, op, outcome, k, margin, deadline,
            slot):  # pragma: no cover - compiled
    """Append one decided IO; ``slot``: the tracker slot it was issued into (NIL:
    not issued), so that its completion can find the row."""
    if rec[R_OFF] != 0:
        return
    rows = rec[R_ROWS]
    base = R_HDR + rec[R_SLOTS]
    head = rec[R_HEAD]
    if rec[R_KEEP] != 0 and head - rec[R_DONE] >= rows:
        rec[R_DROPPED] += 1
        if slot != NIL:
            rec[R_HDR + slot] = -1
        return
    i = head & (rows - 1)
    rec[base + i] = ts
    rec[base + rows + i] = offset
    rec[base + 2 * rows + i] = size
    rec[base + 3 * rows + i] = op | (outcome << 2) | ((k + 1) << 8)
    recf[i] = margin
    recf[rows + i] = deadline
    recf[2 * rows + i] = np.nan
    if slot != NIL:
        rec[R_HDR + slot] = head
    rec[R_HEAD] = head + 1


@numba.njit(cache=True, inline="always")
def rec_done(rec, recf, slot, latency):  # pragma: no cover - compiled
    """Fill in the latency of the IO completed from tracker ``slot``."""
    if slot == NIL or slot >= rec[R_SLOTS]:
        return
    row = rec[R_HDR + slot]
    if row < 0:
        return
    rec[R_HDR + slot] = -1
    rows = rec[R_ROWS]
    if rec[R_HEAD] - row > rows or (rec[R_KEEP] != 0 and row < rec[R_DONE]):
        rec[R_LATE] += 1  # already written out (or overwritten): too late for its row
        return
    recf[2 * rows + (row & (rows - 1))] = latency


@numba.njit(cache=True)
def put(rec, recf, ts, offset, size, op, outcome, k, margin, deadline,
        slot):  # pragma: no cover - compiled
    """:func:`rec_put` for the Python decision path."""
    rec_put(rec, recf, ts, offset, size, op, outcome, k, margin, deadline, slot)


@numba.njit(cache=True)
def put_many(rec, recf, ts, offset, size, op, outcome, k, margin, deadline,
             slot):  # pragma: no cover - compiled
    """:func:`rec_put` for a burst (arrays, in arrival order; ``ts`` one time)."""
    for j in range(offset.shape[0]):
        rec_put(rec, recf, ts, offset[j], size[j], op[j], outcome[j], k[j], margin[j],
                deadline[j], slot[j])


@numba.njit(cache=True)
def done_many(rec, recf, slots, latency):  # pragma: no cover - compiled
    """:func:`rec_done` for many completions."""
    for j in range(slots.shape[0]):
        if np.isfinite(latency[j]):
            rec_done(rec, recf, slots[j], latency[j])


@dataclass(frozen=True)
class RingRows:
    """Copies of a run of ring rows ``[start, start + n)``: columns by name, and the
    sha256 of the model that decided each row."""

    start: int
    cols: dict[str, np.ndarray]
    model_sha: np.ndarray  # object (str) per row

    def __len__(self) -> int:
        return len(self.cols["ts"])


class Ring:
    """A device's record ring (see the module doc) and which model decided its rows.

    Not thread-safe: the admission core calls it under the device's lock. Carried
    over model swaps (the records are the device's, not the model's).
    """

    def __init__(self, slots: int, model_sha: str, rows: int = RING_ROWS) -> None:
        self.rec, self.recf = ring_arrays(slots, rows)
        self.cols = columns(self.rec, self.recf)
        self.rows = rows
        self._mask = rows - 1
        self.models: list[tuple[int, str]] = [(0, model_sha)]  # (first row, sha)

    @property
    def head(self) -> int:
        return int(self.rec[R_HEAD])

    @property
    def enabled(self) -> bool:
        """Whether decisions are recorded at all. Off only for ``mittd bench records``'
        baseline: live quality and the records then see nothing."""
        return not self.rec[R_OFF]

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self.rec[R_OFF] = 0 if on else 1

    @property
    def keep(self) -> bool:
        """Whether a writer consumes the rows (then a full ring drops, never overwrites)."""
        return bool(self.rec[R_KEEP])

    @keep.setter
    def keep(self, on: bool) -> None:
        if on and not self.rec[R_KEEP]:
            self.rec[R_DONE] = self.head  # what was decided before is not recorded
        self.rec[R_KEEP] = int(bool(on))

    def counts(self) -> dict[str, int]:
        r = self.rec
        return {"records_written": int(r[R_WRITTEN]), "records_dropped": int(r[R_DROPPED]),
                "records_late": int(r[R_LATE])}

    def count(self, written: int = 0, dropped: int = 0) -> None:
        """The writer's tallies: rows written to segments, rows lost (disk errors)."""
        self.rec[R_WRITTEN] += written
        self.rec[R_DROPPED] += dropped

    def model_changed(self, model_sha: str, tracker_kept: bool) -> None:
        """A new model decides from the next row on; a new tracker invalidates the
        slot -> row map (its slots are other IOs)."""
        if not tracker_kept:
            self.cols["slot_row"][:] = -1
        if model_sha != self.models[-1][1]:
            self.models.append((self.head, model_sha))
        oldest = self.head - self.rows
        while len(self.models) > 1 and self.models[1][0] <= oldest:
            del self.models[0]

    def model_start(self) -> int:
        """The first row decided by the current model."""
        return self.models[-1][0]

    def copy(self, start: int, stop: int, shas: bool = True) -> RingRows:
        """Copies of rows ``[start, stop)`` (the caller keeps them inside the ring);
        ``shas=False`` leaves out which model decided each row."""
        idx = np.arange(start, stop, dtype=np.int64) & self._mask
        cols = {name: self.cols[name][idx] for name in (*INT_COLS, *FLOAT_COLS)}
        if not shas:
            return RingRows(start, cols, np.empty(0, object))
        starts = np.array([m[0] for m in self.models], np.int64)
        which = np.searchsorted(starts, np.arange(start, stop), side="right") - 1
        shas = np.array([m[1] for m in self.models], object)[np.maximum(which, 0)]
        return RingRows(start, cols, shas)

    def take(self, now_us: int, settle_us: int, never_issued: np.ndarray,
             everything: bool = False) -> RingRows | None:
        """Consume the rows a writer may write now: from the oldest unwritten row up to
        the first one still pending and younger than ``settle_us`` (its latency may
        yet come); everything when ``everything`` or when the ring is half full (a
        full ring would drop new rows). ``never_issued``: the outcome codes of IOs
        that were not issued (rejected: no latency will come). None when there is
        nothing to write."""
        r = self.rec
        done, head = int(r[R_DONE]), int(r[R_HEAD])
        if head <= done:
            return None
        stop = head
        if not everything and head - done < self.rows // 2:
            idx = np.arange(done, head, dtype=np.int64) & self._mask
            lat = self.cols["latency"][idx]
            outcome = (self.cols["codes"][idx] >> 2) & 63
            settled = (np.isfinite(lat) | np.isin(outcome, never_issued)
                       | (self.cols["ts"][idx] < now_us - settle_us))
            open_ = np.flatnonzero(~settled)
            if len(open_):
                stop = done + int(open_[0])
        if stop <= done:
            return None
        rows = self.copy(done, stop)
        r[R_DONE] = stop
        return rows

    def last(self, n: int, shas: bool = True) -> RingRows:
        """Copies of the current model's last ``n`` rows (fewer when it decided fewer)."""
        head = self.head
        start = max(head - n, head - self.rows, self.model_start(), 0)
        return self.copy(start, head, shas)
