"""Numba kernels of the featurisers: one row encoder per featuriser, shared by both paths.

``encode_live`` calls a row kernel on a live :class:`~mittd.predictor.tracker.PendingTracker`'s
arrays; :func:`simulate` replays a whole trace through the tracker's own kernels on a
virtual clock and calls the *same* row kernel for every IO. There is one
implementation of each encoding, so training and serving vectors are bit-identical.

All kernels are ``cache=True``. Numba keys each cache entry on its own source file
only: after editing the tracker kernels, delete ``predictor/__pycache__`` so that
:func:`simulate` (which compiles them in) is rebuilt too.
"""

from __future__ import annotations

import numba
import numpy as np

from mittd.predictor.tracker import (
    H_ALL,
    H_LAT,
    H_QLEN,
    H_READS,
    H_SIZE,
    M_COUNT,
    M_LEN,
    M_POS,
    M_SIZE,
    M_TAIL,
    NIL,
    P_COLS,
    P_OFF,
    P_PREV,
    init_state,
    t_complete,
    t_expire,
    t_issue,
)

KIND_LBA, KIND_LINNOS, KIND_HEIMDALL, KIND_LBA_HIST = 0, 1, 2, 3


#: The 8 bits of every byte as float32, most significant first: a byte's bits are
#: one 32-byte copy (the shift-and-convert per bit cost 300 ns per 11 LBAs, this 22).
_BYTE_BITS = np.array([[(v >> (7 - b)) & 1 for b in range(8)] for v in range(256)],
                      np.float32)


@numba.njit(cache=True, inline="always")
def put_lba(out, base, lba, nbytes):  # pragma: no cover - numba
    """Bits of the low `nbytes` bytes of `lba`: byte 0 and bit 0 most significant.

    Two's-complement bits of the int64, so the value is taken modulo 2^(8*nbytes).
    Inlined into its callers: as a call, an LBA row of 11 cost 221 ns, inlined
    (with the zero padding as one slice) 70 ns.
    """
    for b in range(nbytes):
        bits = _BYTE_BITS[(lba >> (8 * (nbytes - 1 - b))) & 0xFF]
        o = base + b * 8
        for bit in range(8):
            out[o + bit] = bits[bit]


@numba.njit(cache=True)
def lba_row(out, pend, meta, offset, k, nbytes, unit):  # pragma: no cover - numba
    """Current LBA in slot 0, then the k most recent pending LBAs, zero-padded."""
    width = nbytes * 8
    put_lba(out, 0, offset // unit, nbytes)
    slot = meta[M_TAIL]
    for i in range(1, k + 1):
        if slot == NIL:  # fewer pending than k: the rest is padding, one slice
            out[i * width:(k + 1) * width] = 0.0
            break
        put_lba(out, i * width, pend[slot, P_OFF] // unit, nbytes)
        slot = pend[slot, P_PREV]


@numba.njit(cache=True)
def put_digits(out, base, value, ndigits):  # pragma: no cover - numba
    """Decimal digits of an int clamped to [0, 10^ndigits - 1], most significant first."""
    cap = 1
    for _ in range(ndigits):
        cap *= 10
    v = min(max(value, 0), cap - 1)
    for d in range(ndigits - 1, -1, -1):
        out[base + d] = v % 10
        v //= 10


@numba.njit(cache=True)
def _floor_capped(x, ndigits):  # pragma: no cover - numba
    cap = 1
    for _ in range(ndigits):
        cap *= 10
    if not x > 0.0:  # also NaN
        return 0
    if x >= cap:
        return cap - 1
    return int(x)


@numba.njit(cache=True)
def _ring_index(meta, h, i, depth):  # pragma: no cover - numba
    r = meta[M_POS + h] - 1 - i
    return r + depth if r < 0 else r


@numba.njit(cache=True)
def linnos_row(out, meta, hist, nreads, qd, ld):  # pragma: no cover - numba
    """Digits of: queue length; queue length at issue and latency of the last nreads reads."""
    put_digits(out, 0, meta[M_COUNT], qd)
    have = meta[M_LEN + H_READS]
    depth = hist.shape[1]
    lat_base = qd + nreads * qd
    for i in range(nreads):
        if i < have:
            r = _ring_index(meta, H_READS, i, depth)
            put_digits(out, qd + i * qd, _floor_capped(hist[H_READS, r, H_QLEN], qd), qd)
            put_digits(out, lat_base + i * ld, _floor_capped(hist[H_READS, r, H_LAT], ld), ld)
        else:
            for j in range(qd):
                out[qd + i * qd + j] = 0
            for j in range(ld):
                out[lat_base + i * ld + j] = 0


@numba.njit(cache=True)
def _minmax(x, lo, hi):  # pragma: no cover - numba
    rng = hi - lo
    if not rng > 0.0:
        return 0.0 if x <= lo else 1.0
    v = (x - lo) / rng
    if v < 0.0:
        return 0.0
    if v > 1.0:
        return 1.0
    return v


@numba.njit(cache=True)
def _put_scaled(out, j, x, lo, hi, scale):  # pragma: no cover - numba
    out[j] = _minmax(x, lo[j], hi[j]) if scale else x


@numba.njit(cache=True)
def heimdall_row(out, meta, hist, size, nhist, lo, hi, scale):  # pragma: no cover - numba
    """[size, queue length, (qlen at issue, latency, throughput) x nhist], min-max scaled."""
    _put_scaled(out, 0, float(size), lo, hi, scale)
    _put_scaled(out, 1, float(meta[M_COUNT]), lo, hi, scale)
    have = meta[M_LEN + H_ALL]
    depth = hist.shape[1]
    for i in range(nhist):
        q = 0.0
        lat = 0.0
        tput = 0.0
        if i < have:
            r = _ring_index(meta, H_ALL, i, depth)
            q = hist[H_ALL, r, H_QLEN]
            lat = hist[H_ALL, r, H_LAT]
            tput = hist[H_ALL, r, H_SIZE] / max(lat, 1.0)
        _put_scaled(out, 2 + 3 * i, q, lo, hi, scale)
        _put_scaled(out, 3 + 3 * i, lat, lo, hi, scale)
        _put_scaled(out, 4 + 3 * i, tput, lo, hi, scale)


@numba.njit(cache=True)
def lba_hist_row(out, pend, meta, hist, offset, size, iparams, lo, hi):  # pragma: no cover
    """[lba_row | linnos_row | heimdall_row (scaled)], each kernel on its own slice.

    iparams = (pending, lba_bytes, lba_unit, n_reads, queue_digits, latency_digits,
    history); lo/hi bound the heimdall part only.
    """
    k, nbytes, unit = iparams[0], iparams[1], iparams[2]
    nreads, qd, ld, nhist = iparams[3], iparams[4], iparams[5], iparams[6]
    a = (1 + k) * nbytes * 8
    b = a + qd + nreads * (qd + ld)
    lba_row(out[:a], pend, meta, offset, k, nbytes, unit)
    linnos_row(out[a:b], meta, hist, nreads, qd, ld)
    heimdall_row(out[b:], meta, hist, size, nhist, lo, hi, True)


@numba.njit(cache=True)
def encode_row(kind, row, pend, meta, hist, offset, size, iparams, lo, hi,
               scale):  # pragma: no cover - numba
    """The featuriser ``kind``'s row for an IO, from the tracker's arrays: the one
    dispatch of :func:`simulate` and of the daemon's bursts (``encode_live`` calls
    its own row kernel directly)."""
    if kind == KIND_LBA:
        lba_row(row, pend, meta, offset, iparams[0], iparams[1], iparams[2])
    elif kind == KIND_LINNOS:
        linnos_row(row, meta, hist, iparams[0], iparams[1], iparams[2])
    elif kind == KIND_LBA_HIST:
        lba_hist_row(row, pend, meta, hist, offset, size, iparams, lo, hi)
    else:
        heimdall_row(row, meta, hist, size, iparams[0], lo, hi, scale)


@numba.njit(cache=True)
def simulate(
    kind, ts, comp, corder, lat, off, size, op, iparams, lo, hi, scale,
    capacity, timeout, history, out,
):  # pragma: no cover - numba
    """Replay one device's IOs (issue order) through the tracker kernels; fill `out` rows.

    `comp` holds completion times (tracker.completion_times_us) and `corder` the
    IO indices sorted by (completion time, issue order).
    """
    n = ts.shape[0]
    pend = np.zeros((capacity, P_COLS), np.int64)
    free = np.zeros(capacity, np.int64)
    meta = np.zeros(M_SIZE, np.int64)
    hist = np.zeros((2, history, 3), np.float64)
    removed = np.zeros(capacity, np.int64)
    init_state(pend, free, meta, hist)
    slot_of = np.full(n, NIL, np.int64)
    cp = 0
    for j in range(n):
        t = ts[j]
        while cp < n:
            k = corder[cp]
            if comp[k] > t or k >= j:
                break
            cp += 1
            s = slot_of[k]
            if s != NIL:
                slot_of[k] = NIL
                t_complete(pend, free, meta, hist, s, comp[k], lat[k], True, timeout)
        nrem = t_expire(pend, free, meta, removed, t, timeout)
        for i in range(nrem):
            slot_of[removed[i]] = NIL
        encode_row(kind, out[j], pend, meta, hist, off[j], size[j], iparams, lo, hi, scale)
        s, nrem = t_issue(pend, free, meta, removed, j, t, off[j], size[j], op[j], timeout)
        for i in range(nrem):
            slot_of[removed[i]] = NIL
        slot_of[j] = s
