"""The admission rules and the fused decision kernel: one compiled call per IO, and
one per burst (:func:`admit_many`).

Why compiled: around a 1.5-7 µs model, the Python of a decision (expire,
featurise, run, compare, the rules, issue, count) cost ~19 µs; a storage server
that decides in its own process (DESIGN principle 6) pays that on every IO. Here
the whole decision is one numba call that runs the *same* kernels as every other
path — the tracker's (``mittd.predictor.tracker``), the featurisers' row kernels
(``mittd.predictor.features_kernels.encode_row``), the engine's compiled plan
(``mittd.predictor.kernels.run1``) — and the one home of the admission rules,
:func:`rule`, which :class:`~mittd.daemon.admission.AdmissionCore` also calls for
its Python path and its bursts. Nothing decides twice.

Layout of a device's arrays (built by ``DeviceState``; the kernels index them by
the constants below):

* ``dev`` (int64): the device's constants (featuriser kind and parameters,
  where the engine's input and output live in its arena, the head layout, the
  tracker timeout) and its clock floor (the time of its last decision);
* ``fdev`` (float64): the rule state (the reject share, the run of rejections
  in a row), the rule settings (reject cap, probe rule, overrun handling and the
  prediction budget, what a deadline below the model gets), the trained latency
  thresholds and decision cutoffs, the
  featuriser's min/max bounds, and scratch for the last decision's margin;
* ``cnt`` (int64): the device's counters, in :data:`COUNT_NAMES` order;
* ``pred``/``io`` (float64): histogram counts per bucket then the sum, over
  :data:`PREDICT_BUCKETS_NS` and :data:`IO_LATENCY_BUCKETS_US`.

The kernels hold the GIL. Releasing it for a ~2 µs call invites a GIL handoff to
another thread of the host, and taking it back then waits for that thread: in
the live check's disk + RAM run (2 client threads, 2 vCPUs) a decision cost
the client 62 µs per read with ``nogil=True`` and 25 µs without.

The clock is ``CLOCK_MONOTONIC`` read in the kernel (``time.perf_counter_ns`` on
Linux reads the same clock), so a decision needs no Python timestamp.

Numba caches each kernel keyed on its own source file only: after editing the
tracker, featuriser, plan or record-ring kernels (``mittd.daemon.ring``: its
layout constants are compiled in), delete ``daemon/__pycache__`` too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from mittd.daemon.histogram import IO_LATENCY_BUCKETS_US, PREDICT_BUCKETS_NS
from mittd.daemon.ring import rec_done, rec_put
from mittd.predictor.features_kernels import encode_row
from mittd.predictor.kernels import run1
from mittd.predictor.tracker import (
    NIL,
    buffer_views,
    t_complete,
    t_discard,
    t_expire,
    t_issue,
)

__all__ = ["COLD_GAP_US", "COUNT_NAMES", "NEVER_ISSUED_CODES", "OUTCOMES", "REASONS", "admit1",
           "admit_many", "complete1", "monotonic_ns", "rule", "rules"]

#: A device's monotonic decision counters, in ``cnt`` order (``admission.Counts``
#: documents each; it is checked against this list at import).
COUNT_NAMES = ("admitted", "rejected", "fail_open", "overruns", "probes", "capped",
               "beyond_model", "completions", "unknown_completions", "slo_violations",
               "tracker_errors", "shadow_rejects", "below_model", "cold_overruns",
               "warm_ticks")
(C_ADMITTED, C_REJECTED, C_FAIL_OPEN, C_OVERRUNS, C_PROBES, C_CAPPED, C_BEYOND,
 C_COMPLETIONS, C_UNKNOWN, C_SLO, C_TRACKER_ERRORS, C_SHADOW, C_BELOW, C_COLD,
 C_WARM) = range(len(COUNT_NAMES))

#: An overrun is "cold" (``cold_overruns``) when its IO came more than this long
#: after the device's previous decision: caches went cold while the device idled.
#: Such a decision first runs one untimed warm-up pass (``AdmissionCore``'s
#: ``warm_up_gap_us``, this by default).
COLD_GAP_US = 100_000

#: Why an IO was decided as it was; ``BurstDecisions.reason`` holds indices into it.
REASONS = ("predicted", "deadline-beyond-model", "overrun", "probe", "fail-open",
           "reject-cap", "shadow", "deadline-below-model")
(R_PREDICTED, R_BEYOND, R_OVERRUN, R_PROBE, R_FAIL_OPEN, R_CAP, R_SHADOW,
 R_BELOW) = range(len(REASONS))
# How an IO's prediction went, before the rules: made, not needed (deadline beyond
# the model), failed, or not asked (deadline below the model, ``below_model =
# "reject"``).
S_PREDICTED, S_BEYOND, S_FAILED, S_BELOW = 0, 1, 2, 3
#: What the rules can make of an IO: (admit, reason index, fail_open) per outcome code.
OUTCOMES: tuple[tuple[bool, int, bool], ...] = (
    (True, R_PREDICTED, False),  # predicted fast
    (False, R_PREDICTED, False),  # predicted slow: EBUSY
    (True, R_BEYOND, False),  # deadline beyond every trained threshold: not asked
    (True, R_FAIL_OPEN, True),  # the predictor failed
    (True, R_OVERRUN, False),  # late, but predicted fast anyway
    (True, R_OVERRUN, True),  # late and predicted slow: admitted unjudged
    (False, R_OVERRUN, False),  # late and predicted slow, fail_open_on_overrun off
    (True, R_PROBE, False),  # predicted slow after probe_after rejections: a probe
    (True, R_CAP, False),  # predicted slow, but the device rejects its share already
    (True, R_SHADOW, False),  # would be rejected, but the device is in shadow mode
    (False, R_BELOW, False),  # deadline below every trained threshold: EBUSY, not asked
)
(O_ADMIT, O_REJECT, O_BEYOND, O_FAILED, O_OVERRUN_ADMIT, O_OVERRUN_LATE, O_OVERRUN_REJECT,
 O_PROBE, O_CAPPED, O_SHADOW, O_BELOW) = range(len(OUTCOMES))
def below_bound_us(lowest_threshold_us: float, reject: bool) -> float:
    """The deadline (µs) under which the model is not asked and the IO is EBUSY:
    the lowest trained threshold in whole µs (deadlines are whole µs on the wire, so
    a deadline of 188 is judged by a 188.41 µs threshold, not refused), 0 (never)
    with ``below_model = "judge"``. The one home of the rule: the kernel, the Python
    and burst paths and the servability check all compare against it."""
    return float(math.floor(lowest_threshold_us)) if reject else 0.0


#: The outcomes that answer EBUSY: the IO is never issued, no latency will come.
NEVER_ISSUED_CODES = (O_REJECT, O_OVERRUN_REJECT, O_BELOW)

# fdev: rule state and settings, then the variable parts at the offsets in dev
(F_SHARE, F_RUN, F_MAX_SHARE, F_PROBE_AFTER, F_FAIL_OPEN_OVERRUN, F_BUDGET_NS, F_SHARE_WEIGHT,
 F_MARGIN, F_SHADOW, F_BELOW_US, F_WARM_GAP_US) = range(11)
F_FIXED = 11
# dev: constants, then the featuriser's int parameters at D_IPARAMS
(D_KIND, D_IN, D_DIM, D_OUT, D_HEAD, D_TIMEOUT, D_HEADS, D_THRESH, D_CUTOFF, D_LO, D_HI,
 D_NBOUNDS, D_NIPARAMS, D_LAST_NOW, D_LAST_K, D_CAP) = range(16)
D_IPARAMS = 16
HEAD_SIGMOID, HEAD_SOFTMAX, HEAD_MULTI = 0, 1, 2
BAD_RANGE = -2  # admit1's answer to a negative offset, a length <= 0, an unknown op

_PRED_BOUNDS = tuple(float(b) for b in PREDICT_BUCKETS_NS)
_IO_BOUNDS = tuple(float(b) for b in IO_LATENCY_BUCKETS_US)
_NAN = np.nan


@intrinsic
def _clock_monotonic_ns(typingctx):  # pragma: no cover - compiled
    """``clock_gettime(CLOCK_MONOTONIC)`` in ns, inlined (~30 ns; a ctypes call would
    stop numba from caching the kernels)."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        i64, i32 = ir.IntType(64), ir.IntType(32)
        ts_t = ir.ArrayType(i64, 2)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i32, [i32, ts_t.as_pointer()]), "clock_gettime")
        ts = cgutils.alloca_once(builder, ts_t)
        builder.call(fn, [ir.Constant(i32, 1), ts])  # CLOCK_MONOTONIC
        zero = ir.Constant(i32, 0)
        sec = builder.load(builder.gep(ts, [zero, zero]))
        nsec = builder.load(builder.gep(ts, [zero, ir.Constant(i32, 1)]))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)

    return sig, codegen


@numba.njit(cache=True)
def monotonic_ns() -> int:  # pragma: no cover - compiled
    """The kernels' clock, from Python (tests compare it with ``time.perf_counter_ns``)."""
    return _clock_monotonic_ns()


@numba.njit(cache=True, inline="always")
def _bucket(bounds, value):  # pragma: no cover - compiled
    """``bisect_left(bounds, value)``: the histogram bucket of ``value``."""
    i = 0
    while i < len(bounds) and bounds[i] < value:
        i += 1
    return i


@numba.njit(cache=True)
def rule(cnt, fdev, status, reject, overrun):  # pragma: no cover - compiled
    """The admission rules after the model, for one IO in arrival order: the ONE home
    of them (:meth:`AdmissionCore.admit`, its bursts and the fused kernel all call
    it). Returns an outcome code (an index into :data:`OUTCOMES`) and counts the
    decision; ``reject`` is the model's verdict (ignored unless predicted).

    - no prediction needed (deadline beyond the model): admit;
    - deadline below every trained threshold with ``below_model = "reject"``
      (:data:`S_BELOW`, the model not asked: nothing it says can promise a
      deadline it was never trained for): EBUSY, counted as ``below_model`` and
      ``rejected``, and it moves neither the probe run nor the reject share (no
      verdict of the model was overruled); in shadow mode a shadow-reject;
    - the predictor failed: admit (fail open; counted where it failed);
    - the prediction overran its budget: counted; a would-be rejection is
      admitted with ``fail_open_on_overrun`` (a late "busy" is worth nothing),
      and counted as a fail-open too (the reply says ``fail_open``);
    - a predicted rejection while the device already rejects its
      ``max_reject_share`` of predicted decisions is admitted (the cap: no model
      can lock itself into rejecting everything);
    - otherwise the verdict, but after ``probe_after`` predicted rejections in a
      row the next one is admitted as a probe;
    - in shadow mode (``fdev[F_SHADOW]``) a rejection is admitted after all
      (:data:`O_SHADOW`, counted as ``shadow_rejects``), with the rule state moved
      as enforcing would move it, so the would-be decisions are enforce's.
    """
    if status == S_BELOW:
        if fdev[F_SHADOW] == 0.0:
            cnt[C_BELOW] += 1
            cnt[C_REJECTED] += 1
            return O_BELOW
        cnt[C_SHADOW] += 1
        cnt[C_ADMITTED] += 1
        return O_SHADOW
    if status == S_BEYOND:
        cnt[C_BEYOND] += 1
        out = O_BEYOND
    elif status == S_FAILED:
        out = O_FAILED
    elif overrun:
        cnt[C_OVERRUNS] += 1
        if not reject:
            out = O_OVERRUN_ADMIT
        elif fdev[F_FAIL_OPEN_OVERRUN] != 0.0:
            cnt[C_FAIL_OPEN] += 1  # admitted unjudged, as a predictor fault: a fail-open
            out = O_OVERRUN_LATE
        else:
            out = O_OVERRUN_REJECT
    elif not reject:
        fdev[F_RUN] = 0.0
        out = O_ADMIT
    elif fdev[F_SHARE] >= fdev[F_MAX_SHARE]:
        cnt[C_CAPPED] += 1
        out = O_CAPPED
    elif fdev[F_PROBE_AFTER] == 0.0:
        out = O_REJECT
    elif fdev[F_RUN] >= fdev[F_PROBE_AFTER]:
        fdev[F_RUN] = 0.0
        cnt[C_PROBES] += 1
        out = O_PROBE
    else:
        fdev[F_RUN] += 1.0
        out = O_REJECT
    w = fdev[F_SHARE_WEIGHT]
    if out in (O_REJECT, O_OVERRUN_REJECT):
        fdev[F_SHARE] += (1.0 - fdev[F_SHARE]) * w
        if fdev[F_SHADOW] == 0.0:
            cnt[C_REJECTED] += 1
        else:
            cnt[C_SHADOW] += 1
            cnt[C_ADMITTED] += 1
            out = O_SHADOW
    else:
        cnt[C_ADMITTED] += 1
        if status == S_PREDICTED:
            fdev[F_SHARE] -= fdev[F_SHARE] * w
    return out


@numba.njit(cache=True)
def rules(cnt, fdev, status, reject, overrun, out):  # pragma: no cover - compiled
    """:func:`rule` for a burst, in arrival order (``out`` gets the outcome codes)."""
    for i in range(status.shape[0]):
        out[i] = rule(cnt, fdev, status[i], reject[i], overrun)


@numba.njit(cache=True, inline="always")
def _observe(data, bounds, value):  # pragma: no cover - compiled
    data[_bucket(bounds, value)] += 1.0
    data[len(bounds) + 1] += value


@numba.njit(cache=True)
def admit1(tbuf, hist, dev, fdev, cnt, pred, ints, arena, rec, recf,
           offset, size, op, deadline_us, rid, now_us):  # pragma: no cover - compiled
    """Decide one IO and issue it if admitted, in one call.

    The steps of ``AdmissionCore.admit``: the clock floor (``now_us < 0``: read the
    clock), the deadline's head (the caller resolves a deadline ``<= 0`` to the
    device default), expire, featurise, run the
    model, compare the margin with the head's cutoff, :func:`rule`, issue an
    admitted IO into the tracker, and append its row to the record ring
    (``mittd.daemon.ring``). Returns ``outcome | slot << 4 | removed << 24``
    (slot ``NIL & 0xFFFFF`` when not issued; ``removed`` ids expired or dropped,
    in ``removed[:n]``); the margin is left in ``fdev[F_MARGIN]`` and the head in
    ``dev[D_LAST_K]`` (-1: the model not asked, the deadline beyond or below it).
    :data:`BAD_RANGE` (nothing done)
    for a negative offset, a length <= 0 or an unknown op.
    """
    if offset < 0 or size <= 0 or op < 0 or op > 2:
        return BAD_RANGE
    pend, free, meta, removed = buffer_views(tbuf, dev[D_CAP])
    now = now_us if now_us >= 0 else _clock_monotonic_ns() // 1000
    prev = dev[D_LAST_NOW]
    if now < prev:
        now = prev
    dev[D_LAST_NOW] = now
    heads = dev[D_HEADS]
    t0 = dev[D_THRESH]
    k = 0
    while k < heads and fdev[t0 + k] < deadline_us:
        k += 1
    timeout = dev[D_TIMEOUT]
    nrem = 0
    margin = _NAN
    if k == heads:
        k = -1
        dev[D_LAST_K] = -1
        out = rule(cnt, fdev, S_BEYOND, False, False)
    elif deadline_us < fdev[F_BELOW_US]:  # below_bound_us: 0 with below_model = "judge"
        k = -1
        dev[D_LAST_K] = -1
        out = rule(cnt, fdev, S_BELOW, False, False)
    else:
        dev[D_LAST_K] = k
        start = _clock_monotonic_ns()
        nrem = t_expire(pend, free, meta, removed, now, timeout)
        i0 = dev[D_IN]
        n_ip = dev[D_NIPARAMS]
        nb = dev[D_NBOUNDS]
        if now - prev > fdev[F_WARM_GAP_US]:
            # after an idle spell: one untimed pass first (pure: it writes the input
            # row and activations the timed pass rewrites), so the timed one runs
            # on warm code and weights and the cold start is not charged to the IO
            encode_row(dev[D_KIND], arena[i0:i0 + dev[D_DIM]], pend, meta, hist, offset,
                       size, dev[D_IPARAMS:D_IPARAMS + n_ip], fdev[dev[D_LO]:dev[D_LO] + nb],
                       fdev[dev[D_HI]:dev[D_HI] + nb], True)
            run1(ints, arena)
            cnt[C_WARM] += 1
            start = _clock_monotonic_ns()
        encode_row(dev[D_KIND], arena[i0:i0 + dev[D_DIM]], pend, meta, hist, offset, size,
                   dev[D_IPARAMS:D_IPARAMS + n_ip], fdev[dev[D_LO]:dev[D_LO] + nb],
                   fdev[dev[D_HI]:dev[D_HI] + nb], True)
        run1(ints, arena)
        o = dev[D_OUT]
        head = dev[D_HEAD]
        if head == HEAD_MULTI:
            margin = float(arena[o + k])
        elif head == HEAD_SOFTMAX:
            margin = float(arena[o + 1]) - float(arena[o])
        else:
            margin = float(arena[o])
        elapsed = float(_clock_monotonic_ns() - start)
        _observe(pred, _PRED_BOUNDS, elapsed)
        overrun = elapsed > fdev[F_BUDGET_NS]
        if overrun and now - prev > COLD_GAP_US:
            cnt[C_COLD] += 1
        out = rule(cnt, fdev, S_PREDICTED, margin > fdev[dev[D_CUTOFF] + k], overrun)
    fdev[F_MARGIN] = margin
    slot = NIL
    if out not in (O_REJECT, O_OVERRUN_REJECT, O_BELOW):
        slot, m = t_issue(pend, free, meta, removed[nrem:], rid, now, offset, size, op, timeout)
        nrem += m
    rec_put(rec, recf, now, offset, size, op, out, k, margin, deadline_us, slot)
    return out | ((slot & 0xFFFFF) << 4) | (nrem << 24)


@numba.njit(cache=True)
def admit_many(tbuf, hist, dev, fdev, cnt, pred, ints, arena, rec, recf, offsets, sizes,
               ops, deadlines_us, rids, olds, now_us, codes, margins, heads, gone,
               ends):  # pragma: no cover - compiled
    """A burst of IOs arriving together at ``now_us``, in one call: :func:`admit1` for
    each in order, so each IO is decided exactly as it would be alone at that time
    (it sees the admitted IOs before it pending, not the rejected ones), with its
    own prediction budget, and the first IO after an idle spell runs the warm-up.
    ``olds[j]`` is the slot of ``rids[j]`` if it was pending before the burst (else
    NIL): that request is replaced at IO ``j``'s turn, as ``admit`` replaces it,
    unless the burst expired or dropped it first.

    Per IO: ``codes`` gets ``outcome | slot << 4`` (or :data:`BAD_RANGE`, that IO
    skipped), ``margins`` the margin (NaN: not asked), ``heads`` the head (-1: not
    asked). The ids expired or dropped over the burst, in order, go to ``gone``
    (room for the tracker's capacity plus the burst), ``gone[:ends[j]]`` by the end
    of IO ``j`` (they leave before its issue); returns how many in all.
    """
    pend, free, meta, removed = buffer_views(tbuf, dev[D_CAP])
    r = 0
    for j in range(rids.shape[0]):
        if olds[j] != NIL:
            live = True
            for q in range(r):
                if gone[q] == rids[j]:
                    live = False
                    break
            if live:
                t_discard(pend, free, meta, olds[j])
        code = admit1(tbuf, hist, dev, fdev, cnt, pred, ints, arena, rec, recf, offsets[j],
                      sizes[j], ops[j], deadlines_us[j], rids[j], now_us)
        if code < 0:
            codes[j] = code
            margins[j] = _NAN
            heads[j] = -1
        else:
            m = code >> 24
            gone[r:r + m] = removed[:m]
            r += m
            codes[j] = code & 0xFFFFFF
            margins[j] = fdev[F_MARGIN]
            heads[j] = dev[D_LAST_K]
        ends[j] = r
    return r


@numba.njit(cache=True)
def complete1(tbuf, hist, cnt, io, rec, recf, slot, latency_us, deadline_us, timeout, capacity,
              now_us):  # pragma: no cover - compiled
    """``AdmissionCore.complete`` in one call: judge the deadline (NaN: unknown),
    feed the tracker (``slot`` NIL: unknown id), count, observe the latency, and
    fill it into the IO's record row.
    ``now_us < 0`` reads the clock. Returns whether the tracker knew the IO."""
    now = now_us if now_us >= 0 else _clock_monotonic_ns() // 1000
    if latency_us > deadline_us:  # NaN deadline: False
        cnt[C_SLO] += 1
    ok = False
    if slot != NIL:
        pend, free, meta, _ = buffer_views(tbuf, capacity)
        has = np.isfinite(latency_us)
        ok = t_complete(pend, free, meta, hist, slot, now, latency_us if has else 0.0, has,
                        timeout)
        if ok and has:
            rec_done(rec, recf, slot, latency_us)
    if (ok or deadline_us == deadline_us) and latency_us >= 0.0:  # NaN latency: unmeasured
        _observe(io, _IO_BOUNDS, latency_us)
    if ok:
        cnt[C_COMPLETIONS] += 1
    else:
        cnt[C_UNKNOWN] += 1
    return ok


def entry(kernel: Any, *example: object) -> Callable[..., Any]:
    """``kernel`` compiled for ``example``'s types, as its direct entry point.

    A numba dispatcher works out the argument types on every call (~70 ns per
    argument: ~1 µs for :func:`admit1`'s 17); the compiled overload's entry point
    skips that (~40 ns per argument). The caller must then pass exactly those
    types (the admission core does: its arrays are its own, its scalars cast).
    Falls back to the dispatcher where numba does not expose the entry point.
    """
    ep = kernel.compile(tuple(numba.typeof(a) for a in example))  # cached: a load, not a build
    return ep if callable(ep) else kernel
