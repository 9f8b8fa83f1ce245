"""The admission core: admit or reject (EBUSY) one IO, on the caller's clock.

Shared by the live gRPC daemon and the offline replayer, so every call takes its
timestamp (``now_us``, integer µs) from the caller; the only clock read here is
the injectable ``clock`` that times the predictor against its budget.

Per request (:meth:`AdmissionCore.admit`):

1. deadline ``0`` (unset) → the device's default; the deadline picks a trained
   threshold with the ladder rule of ``mittd.predictor.thresholds``. A deadline
   longer than every trained threshold is beyond the model: admit, no prediction.
   One shorter than every trained threshold is below the model: with the
   device's ``below_model = "reject"`` (default) EBUSY at once, no prediction
   (reason ``deadline-below-model``); with ``"judge"`` the lowest threshold's
   head judges it.
2. expire stale pending requests, featurise the IO into the engine's input
   buffer (BEFORE issuing it, the tracker's rule), run the model and compare its
   score with ``logit(decision threshold)`` — P(slow) > t without an exponential.
3. Any exception while featurising or predicting ADMITS the IO (``fail_open``):
   mittd never turns its own fault into EBUSY for the application.
4. A prediction slower than ``predict_budget_us`` is counted as an overrun and,
   with ``fail_open_on_overrun`` (default), admitted: the client has already
   waited, a late "busy" is worth nothing.
5. Only ADMITTED requests are issued into the tracker: a rejected IO is never
   sent to the device, so it must not appear in the device's pending queue.
6. Probes (``probe_after = N > 0``): after N predicted rejections in a row on a
   device, the next IO the model would reject is admitted instead (reason
   ``"probe"``, counted). A model whose inputs include recent latencies (LinnOS,
   Heimdall, lba_hist) only learns the device has recovered from completions,
   and a rejected IO never completes: without probes such a model, once it
   says "slow", can reject everything forever (seen in replays of our LinnOS
   model). A probe costs at most one slow IO per N rejections.

Threading: one ``threading.Lock`` per device alias guards the tracker and the
engine (an engine has one input buffer) and the state swap; devices never wait
for each other's lock (they still share the GIL).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from mittd.daemon import fastpath as fp
from mittd.daemon import ring
from mittd.daemon.config import BELOW_MODEL, DeviceConfig, ServerConfig
from mittd.daemon.fastpath import (
    COLD_GAP_US,
    COUNT_NAMES,
    NEVER_ISSUED_CODES,
    OUTCOMES,
    REASONS,
    S_BELOW,
    S_BEYOND,
    S_FAILED,
    S_PREDICTED,
)
from mittd.daemon.histogram import (
    IO_LATENCY_BUCKETS_US,
    PREDICT_BUCKETS_NS,
    Histogram,
    HistogramSnapshot,
)
from mittd.daemon.quality import MODES, LiveQuality, below, live_quality
from mittd.predictor.bundle import Bundle
from mittd.predictor.burst import encode_burst
from mittd.predictor.engine import Engine
from mittd.predictor.features import Featuriser
from mittd.predictor.policy import REJECT_WINDOW, DecisionPolicy
from mittd.predictor.thresholds import index_in
from mittd.predictor.tracker import NIL, TrackerStats, t_discard

__all__ = [
    "OUTCOMES",
    "REASONS",
    "AdmissionCore",
    "BurstDecisions",
    "Counters",
    "Counts",
    "Decision",
    "DeviceState",
    "DeviceStats",
    "UnknownDevice",
]

log = logging.getLogger(__name__)

_ADMITS = tuple(o[0] for o in OUTCOMES)
_ADMIT_OF = np.array(_ADMITS, bool)
_REASON_OF = np.array([o[1] for o in OUTCOMES], np.int8)
_FAIL_OPEN_OF = np.array([o[2] for o in OUTCOMES], bool)
_PREDICTED, _BEYOND, _FAILED, _BELOW = S_PREDICTED, S_BEYOND, S_FAILED, S_BELOW
_SLOT_NIL = NIL & 0xFFFFF
# the kernels' entry points for the core's own argument types (fastpath.entry)
_I1 = np.zeros(1, np.int64)
_F1 = np.zeros(1, np.float64)
_RULE: Callable[..., int] = fp.rule
_COMPLETE1: Callable[..., bool] = fp.complete1
_PUT: Callable[..., None] = ring.put


# (field, what it must be, the check): written with & so that one check serves an IO's
# value and a burst's column (numpy arrays) alike
_IO_FIELDS = (("op", "an op code: 0 read, 1 write, 2 other", lambda x: (x >= 0) & (x <= 2)),
              ("offset", "an int >= 0", lambda x: (x >= 0) & (x < 1 << 63)),
              ("length", "an int > 0", lambda x: (x > 0) & (x < 1 << 63)))


def _bad_io(op: object, offset: object, length: object, deadline_us: object) -> str:
    """The one-line error for a bad IO of the in-process path, naming the field;
    "" when every field is good."""
    for (name, what, ok), v in zip(_IO_FIELDS, (op, offset, length), strict=True):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not ok(v):
            return f"{name} must be {what}, got {v!r}"
    if isinstance(deadline_us, bool) or not isinstance(deadline_us, int | float | np.number):
        return f"deadline_us must be a number of µs, got {deadline_us!r}"
    return ""


def _bad_burst(ops: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> str:
    """The one-line error for a burst's first bad IO, naming the column (``ops``,
    ``offsets``, ``lengths``: :data:`_IO_FIELDS`'s fields) and the IO; "" when every
    IO is good."""
    for (name, what, ok), col in zip(_IO_FIELDS, (ops, offsets, lengths), strict=True):
        bad = np.flatnonzero(~ok(col))
        if len(bad):
            return f"{name}s[{bad[0]}] must be {what}, got {int(col[bad[0]])}"
    return ""


def _load_kernels() -> None:
    """Load the rule and completion kernels (numba's cache, else compiled), once."""
    global _RULE, _COMPLETE1, _PUT
    if _RULE is fp.rule:
        _RULE = fp.entry(fp.rule, _I1, _F1, 0, False, False)
        hist = np.zeros((2, 1, 3), np.float64)
        _COMPLETE1 = fp.entry(fp.complete1, _I1, hist, _I1, _F1, _I1, _F1, 0, 0.0, 0.0, 0, 0,
                              0)
        _PUT = fp.entry(ring.put, _I1, _F1, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0)
NEVER_ISSUED = np.array(NEVER_ISSUED_CODES, np.int64)  # EBUSY: no latency will come
NAN = float("nan")
DEFAULT_DRIFT_MARGIN = DeviceConfig.drift_margin  # the config's defaults: one home
DEFAULT_QUALITY_WINDOW = ServerConfig.quality_window
DEFAULT_DRIFT_WINDOWS = ServerConfig.drift_windows


class UnknownDevice(KeyError):
    """No device with this alias is configured (the server answers NOT_FOUND)."""


class Decision(NamedTuple):
    """The answer to one admission request (a NamedTuple: 4x cheaper to build than a
    frozen dataclass, and this is built on every request; read it by field name).

    ``p_slow`` is NaN when no prediction was made; ``threshold_index`` is the
    head asked (None beyond the model); ``reason`` is one of :data:`REASONS`,
    a fail-open naming its exception (``"fail-open:<ExceptionType>"``).
    """

    admit: bool
    p_slow: float
    threshold_index: int | None
    fail_open: bool
    reason: str
    model_version: str


class BurstDecisions(NamedTuple):
    """The answers to one burst (:meth:`AdmissionCore.admit_burst`), one entry per IO.

    ``p_slow`` is NaN where no prediction was made; ``threshold_index`` is -1
    for a deadline beyond the model; ``reason`` indexes :data:`REASONS`.
    """

    admit: np.ndarray  # bool
    p_slow: np.ndarray  # float32
    threshold_index: np.ndarray  # int32
    fail_open: np.ndarray  # bool
    reason: np.ndarray  # int8
    model_version: str


def _burst_decisions(out: np.ndarray, margins: np.ndarray, heads: np.ndarray,
                     model_version: str) -> BurstDecisions:
    """A burst's answers from its outcome codes, margins (NaN: not asked) and heads:
    the one place both burst paths build them."""
    with np.errstate(over="ignore"):
        p = (1.0 / (1.0 + np.exp(-margins))).astype(np.float32)
    return BurstDecisions(_ADMIT_OF[out], p, heads.astype(np.int32), _FAIL_OPEN_OF[out],
                          _REASON_OF[out], model_version)


@dataclass(frozen=True, slots=True)
class Counts:
    """A device's monotonic decision counters: the one list of their names (the live
    :class:`Counters`, the stats snapshot and the Prometheus collector all use it).

    ``fail_open`` counts IOs admitted unjudged: predictor faults, and late
    predictions of "slow" admitted by ``fail_open_on_overrun`` (both reply
    ``fail_open``); ``overruns`` predictions slower than the budget; ``probes`` predicted
    rejections admitted by the probe rule; ``capped`` predicted rejections
    admitted because the device already rejects ``max_reject_share`` of its
    decisions; ``beyond_model`` IOs whose deadline no trained threshold covers
    (admitted without a prediction); ``shadow_rejects`` IOs the model would have
    rejected, admitted because the device is in shadow mode (also in ``admitted``);
    ``below_model`` IOs whose deadline is below every trained threshold, answered
    EBUSY without a prediction (``below_model = "reject"``; also in ``rejected``;
    in shadow mode they are shadow-rejects instead); ``cold_overruns`` the
    overruns whose IO came more than ``fastpath.COLD_GAP_US`` after the device's
    previous decision (also in ``overruns``) despite its warm-up; ``warm_ticks``
    the untimed dummy predictions: those :meth:`AdmissionCore.warm` ran to keep an
    idle device's caches warm, and the warm-up pass every decision (or burst) more
    than ``COLD_GAP_US`` after the device's previous one runs before its timed
    prediction, so the cold start is not charged to the IO's budget (no decision:
    nothing else counts them).
    """

    admitted: int = 0
    rejected: int = 0
    fail_open: int = 0
    overruns: int = 0
    probes: int = 0
    capped: int = 0
    beyond_model: int = 0
    completions: int = 0
    unknown_completions: int = 0
    slo_violations: int = 0
    tracker_errors: int = 0
    shadow_rejects: int = 0
    below_model: int = 0
    cold_overruns: int = 0
    warm_ticks: int = 0


if tuple(f.name for f in fields(Counts)) != COUNT_NAMES:  # the kernels index by that list
    raise ImportError("admission.Counts and fastpath.COUNT_NAMES disagree")


@dataclass(frozen=True, kw_only=True)
class DeviceStats(Counts):
    """A consistent, typed snapshot of one device (``AdmissionCore.stats()``)."""

    pending: int
    reject_share: float
    model_version: str
    model_sha256: str
    mode: str
    records_written: int
    records_dropped: int
    tracker: TrackerStats
    predict_ns: HistogramSnapshot
    io_latency_us: HistogramSnapshot

    def as_dict(self) -> dict[str, Any]:
        """Plain nested dicts, for JSON reports."""
        return asdict(self)


class Counters:
    """The live counters of :class:`Counts` and the histograms (Prometheus reads them
    at scrape time); carried over swaps.

    The counts live in one int64 array, ``cnt`` (:data:`COUNT_NAMES` order), which
    the compiled kernels update in place; each name is also an attribute.
    ``predict_ns``: featurise + model time per decision (a burst adds its mean
    per decision once per IO); ``io_latency_us``: latencies reported by
    completions of admitted IOs (proxy reads included).
    """

    __slots__ = ("cnt", "io_latency_us", "predict_ns")

    def __init__(self) -> None:
        self.cnt = np.zeros(len(COUNT_NAMES), np.int64)
        self.predict_ns = Histogram(PREDICT_BUCKETS_NS)
        self.io_latency_us = Histogram(IO_LATENCY_BUCKETS_US)

    def counts(self) -> dict[str, int]:
        return dict(zip(COUNT_NAMES, self.cnt.tolist(), strict=True))


def _count_property(i: int) -> property:
    def get(self: Counters) -> int:
        return int(self.cnt[i])

    def put(self: Counters, value: int) -> None:
        self.cnt[i] = value

    return property(get, put)


for _i, _name in enumerate(COUNT_NAMES):
    setattr(Counters, _name, _count_property(_i))


def logit(p: float) -> float:
    """The margin a model's score is compared with for P(slow) > p (p in [0, 1]:
    0 rejects every IO, 1 none)."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def _sigmoid(m: float) -> float:
    if m >= 0.0:
        return 1.0 / (1.0 + math.exp(-m))
    e = math.exp(m)
    return e / (1.0 + e)


class DeviceState:
    """Everything one device alias needs to decide: model, featuriser, live state.

    Built by ``mittd.daemon.devices`` (the one servability check: it validates the
    bundle, the overrides and the config's limits before anything is built);
    this class only holds the checked values.

    ``deadlines`` maps the request id of every admitted, still-tracked request to
    its deadline, so a completion can be judged against the SLO; it holds at most
    what the tracker holds (stale ids are dropped as the tracker expires or drops
    them) and is capped at twice the tracker's capacity whatever happens.
    """

    def __init__(
        self,
        bundle: Bundle,
        engine: Engine,
        featuriser: Featuriser,
        thresholds_us: tuple[float, ...],
        p_thresholds: tuple[float, ...],
        default_deadline_us: float,
        policy: DecisionPolicy | None = None,
        mode: str = "enforce",
        drift_margin: float = DEFAULT_DRIFT_MARGIN,
        quality_window: int = DEFAULT_QUALITY_WINDOW,
        drift_windows: int = DEFAULT_DRIFT_WINDOWS,
        below_model: str = DeviceConfig.below_model,
    ) -> None:
        self.bundle = bundle
        self.engine = engine
        self.featuriser = featuriser
        self.tracker = featuriser.make_tracker()
        self.model_version = bundle.version_id
        self.input = engine.input
        if hasattr(engine, "threads"):  # bursts run on the calling RPC thread: the daemon's
            engine.threads = 1  # parallelism is its worker pool, not a pool per engine call
        self.thresholds_us = thresholds_us
        self.p_thresholds = p_thresholds
        self.cutoffs = tuple(logit(p) for p in p_thresholds)
        self.multi_head = len(thresholds_us) > 1  # ask run1()[k], else margin1()
        self.default_deadline_us = default_deadline_us
        self.policy = policy or DecisionPolicy()
        self.counters = Counters()
        self.deadlines: dict[int, float] = {}  # insertion order = issue order
        self.timeout_us = featuriser.timeout_us
        self.capacity = featuriser.capacity
        self.next_id = 1  # request ids of the in-process path (AdmissionCore.admit_next)
        self.ring = ring.Ring(featuriser.capacity, bundle.sha256)  # carried over swaps
        self._burst_x = np.zeros((0, featuriser.dim), np.float32)
        self.plan = getattr(engine, "plan", None)  # a compiled plan: the fused path runs it
        self.dev, self.fdev = self._layout()
        self.mode = mode
        self.below_model = below_model
        self.last_warm_us = -(1 << 62)  # AdmissionCore.warm's last tick (monotonic µs)
        self.drift_margin = float(drift_margin)
        self.quality_window = int(quality_window)
        self.drift_windows = int(drift_windows)
        self.bind()

    def _layout(self) -> tuple[np.ndarray, np.ndarray]:
        """The ``dev``/``fdev`` arrays of :mod:`mittd.daemon.fastpath` for this device."""
        feat = self.featuriser
        iparams, lo, hi = feat._kernel_args()
        heads = len(self.thresholds_us)
        dev = np.zeros(fp.D_IPARAMS + len(iparams), np.int64)
        thresh = fp.F_FIXED
        cut = thresh + heads
        lo_at = cut + heads
        hi_at = lo_at + len(lo)
        fdev = np.zeros(hi_at + len(hi), np.float64)
        fdev[fp.F_MAX_SHARE] = self.policy.max_reject_share
        fdev[fp.F_SHARE_WEIGHT] = 1.0 / REJECT_WINDOW
        fdev[fp.F_BUDGET_NS] = math.inf
        fdev[fp.F_FAIL_OPEN_OVERRUN] = 1.0
        fdev[fp.F_WARM_GAP_US] = COLD_GAP_US
        fdev[thresh:cut] = self.thresholds_us
        fdev[cut:lo_at] = self.cutoffs
        fdev[lo_at:hi_at] = lo
        fdev[hi_at:] = hi
        plan = self.plan
        head = self.engine.graph.head
        dev[fp.D_KIND] = feat.kind
        if plan is not None:
            dev[fp.D_IN] = plan.act_base + plan.input_off
            dev[fp.D_OUT] = plan.act_base + plan.output_off
        dev[fp.D_DIM] = feat.dim
        dev[fp.D_HEAD] = (fp.HEAD_MULTI if self.multi_head else
                          fp.HEAD_SOFTMAX if head == "softmax" else fp.HEAD_SIGMOID)
        dev[fp.D_TIMEOUT] = feat.timeout_us
        dev[fp.D_CAP] = feat.capacity
        dev[fp.D_HEADS] = heads
        dev[fp.D_THRESH], dev[fp.D_CUTOFF], dev[fp.D_LO], dev[fp.D_HI] = thresh, cut, lo_at, hi_at
        dev[fp.D_NBOUNDS] = len(lo)
        dev[fp.D_NIPARAMS] = len(iparams)
        dev[fp.D_LAST_NOW] = -(1 << 62)
        dev[fp.D_IPARAMS:] = iparams
        return dev, fdev

    def configure(self, *, probe_after: int, fail_open_on_overrun: bool,
                  budget_ns: float, warm_up_gap_us: float = COLD_GAP_US) -> None:
        """The core's rule settings, copied where the kernels read them."""
        f = self.fdev
        f[fp.F_PROBE_AFTER] = probe_after
        f[fp.F_FAIL_OPEN_OVERRUN] = 1.0 if fail_open_on_overrun else 0.0
        f[fp.F_BUDGET_NS] = budget_ns
        f[fp.F_WARM_GAP_US] = warm_up_gap_us

    def bind(self) -> None:
        """(Re)bind the fused kernels' argument tuples to this state's tracker and
        counters (after a swap hands them over)."""
        t, c = self.tracker, self.counters
        r = self.ring
        self.complete_args = (t.buf, t.hist, c.cnt, c.io_latency_us.data, r.rec, r.recf)
        if self.plan is None:
            self.admit_args = None
            return
        self.admit_args = (t.buf, t.hist, self.dev, self.fdev, c.cnt, c.predict_ns.data,
                           self.plan.ints, self.plan.arena, r.rec, r.recf)
        self.admit1 = fp.entry(fp.admit1, *self.admit_args, 0, 0, 0, 0.0, 0, 0)
        self.admit_many = fp.entry(fp.admit_many, *self.admit_args, _I1, _I1, _I1, _F1, _I1,
                                   _I1, 0, _I1, _F1, _I1, _I1, _I1)

    # the rule state, where the kernels keep it
    @property
    def reject_share(self) -> float:
        """The share of predicted decisions rejected, averaged (mittd.predictor.policy)."""
        return float(self.fdev[fp.F_SHARE])

    @reject_share.setter
    def reject_share(self, value: float) -> None:
        self.fdev[fp.F_SHARE] = value

    @property
    def reject_run(self) -> int:
        """Predicted rejections in a row (the probe rule)."""
        return int(self.fdev[fp.F_RUN])

    @reject_run.setter
    def reject_run(self, value: int) -> None:
        self.fdev[fp.F_RUN] = value

    @property
    def mode(self) -> str:
        """``"enforce"`` (reject what the model calls slow) or ``"shadow"`` (predict and
        record, never reject)."""
        return MODES[1] if self.fdev[fp.F_SHADOW] else MODES[0]

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {value!r}")
        self.fdev[fp.F_SHADOW] = 1.0 if value == MODES[1] else 0.0

    @property
    def below_model(self) -> str:
        """What a deadline below every trained threshold gets: ``"reject"`` (EBUSY, the
        model not asked) or ``"judge"`` (the lowest threshold's head judges it)."""
        return BELOW_MODEL[0] if self.fdev[fp.F_BELOW_US] else BELOW_MODEL[1]

    @below_model.setter
    def below_model(self, value: str) -> None:
        if value not in BELOW_MODEL:
            raise ValueError(f"below_model must be one of {', '.join(BELOW_MODEL)}, "
                             f"got {value!r}")
        self.fdev[fp.F_BELOW_US] = fp.below_bound_us(self.thresholds_us[0],
                                                     value == BELOW_MODEL[0])

    def head_for(self, deadline_us: float) -> tuple[int, int | None]:
        """How a (resolved, > 0) deadline is decided: (status, head) — the head asked
        (``mittd.predictor.thresholds``), or :data:`S_BEYOND` / :data:`S_BELOW` with
        None when the model is not asked (the Python path; the kernel does the same)."""
        th = self.thresholds_us
        k = index_in(deadline_us, th)
        if k is None:
            return _BEYOND, None
        if deadline_us < self.fdev[fp.F_BELOW_US]:
            return _BELOW, None
        return _PREDICTED, k

    @property
    def validation_roc_auc(self) -> float:
        """The bundle's held-out ROC-AUC (provenance ``test_metrics``; NaN if absent)."""
        v = (self.bundle.provenance.get("test_metrics") or {}).get("roc_auc")
        return float(v) if isinstance(v, int | float) else NAN

    def quality_rows(self) -> ring.RingRows:
        """The ring rows :meth:`quality` judges (copied: call under the device's lock)."""
        return self.ring.last(self.quality_window * self.drift_windows, shas=False)

    def quality(self, rows: ring.RingRows | None = None) -> LiveQuality:
        """Live quality over the current model's last ``quality_window`` decisions,
        drift over its last ``drift_windows`` windows (``mittd.daemon.quality``), from
        ``rows`` (:meth:`quality_rows`; default: copied now, the caller holding the
        device's lock)."""
        n = self.quality_window
        if rows is None:
            rows = self.quality_rows()
        codes = rows.cols["codes"]
        k = (codes >> 8) - 1
        margin = rows.cols["margin"]
        lat = rows.cols["latency"]
        asked = (k >= 0) & np.isfinite(margin)
        cut = np.asarray(self.cutoffs)[np.maximum(k, 0)]
        th = np.asarray(self.thresholds_us)[np.maximum(k, 0)]
        val, dm = self.validation_roc_auc, self.drift_margin
        windows = [slice(max(len(k) - (j + 1) * n, 0), len(k) - j * n)
                   for j in range(self.drift_windows) if len(k) - j * n > 0]
        older = tuple(w.stop - w.start == n
                      and below(margin[w][asked[w]], lat[w][asked[w]], th[w][asked[w]], val, dm)
                      for w in windows[1:])
        w = windows[0] if windows else slice(0, 0)
        a = asked[w]
        return live_quality(self.mode, n, margin[w][a], cut[w][a], lat[w][a], th[w][a], val,
                            dm, older, self.drift_windows)

    @property
    def max_reject_share(self) -> float:
        return float(self.fdev[fp.F_MAX_SHARE])

    @property
    def last_now(self) -> int:
        return int(self.dev[fp.D_LAST_NOW])

    @last_now.setter
    def last_now(self, value: int) -> None:
        self.dev[fp.D_LAST_NOW] = value

    def clock_floor(self, now_us: int) -> int:
        """``now_us``, never before the last admission's time on this device.

        Concurrent RPCs read the clock before taking the device lock, so a later
        lock holder can carry an earlier time by a few µs. Issued out of order,
        the tracker would fall back to scanning its whole pending set on every
        expiry (correct, but O(capacity) per IO: measured 5x fewer stream
        decisions/s with 4 clients); stamping it with the later time keeps the
        issue order, which is what the device saw anyway.
        """
        now = int(now_us)
        dev = self.dev
        last = int(dev[fp.D_LAST_NOW])
        if now < last:
            return last
        dev[fp.D_LAST_NOW] = now
        return now

    def warm_once(self) -> None:
        """One untimed dummy prediction on the device's current input (restored after:
        the input buffer is the engine's, a decision always refills it first), so
        the model's code and weights are back in cache. Touches no tracker, counter
        or record; the caller holds the device's lock."""
        x = self.input
        saved = x.copy()
        try:
            if self.multi_head:
                self.engine.run1()
            else:
                self.engine.margin1()
        finally:
            x[:] = saved

    def burst_rows(self, n: int) -> np.ndarray:
        """A reusable float32 (n, dim) feature matrix for a burst of n IOs."""
        if len(self._burst_x) < n:
            self._burst_x = np.zeros((max(n, 2 * len(self._burst_x)), self.featuriser.dim),
                                     np.float32)
        return self._burst_x[:n]

    def stats(self) -> DeviceStats:
        c = self.counters
        rec = self.ring.counts()
        return DeviceStats(**c.counts(), pending=len(self.tracker),
                           reject_share=self.reject_share,
                           model_version=self.model_version,
                           model_sha256=self.bundle.sha256,
                           mode=self.mode,
                           records_written=rec["records_written"],
                           records_dropped=rec["records_dropped"],
                           tracker=self.tracker.stats(),
                           predict_ns=c.predict_ns.snapshot(),
                           io_latency_us=c.io_latency_us.snapshot())


class AdmissionCore:
    """Admission decisions for a set of devices (see the module docstring)."""

    def __init__(
        self,
        devices: Mapping[str, DeviceState],
        predict_budget_us: float = 50.0,
        clock: Callable[[], int] = time.perf_counter_ns,
        fail_open_on_overrun: bool = True,
        probe_after: int = 0,
        fuse: bool = True,
        warm_up_gap_us: float = COLD_GAP_US,
    ) -> None:
        """``fuse``: decide in the fused kernel where a device's engine has a compiled
        plan (it times itself on the kernel's clock, so an injected ``clock`` turns
        it off); False keeps the Python path (the reference the tests hold the
        kernel to, and the bench's "before"). ``warm_up_gap_us``: a decision whose IO
        comes more than this after the device's previous decision first runs one
        untimed warm-up pass, so the cold start after idle is not charged to its
        budget (``math.inf``: never; the offline replayer's clock is the trace's,
        whose gaps leave no cache cold)."""
        if not isinstance(probe_after, int) or probe_after < 0:
            raise ValueError(f"probe_after must be an int >= 0, got {probe_after!r}")
        self.probe_after = probe_after
        self._devices: dict[str, DeviceState] = dict(devices)
        self._locks = {alias: threading.Lock() for alias in self._devices}
        self._budget_ns = float(predict_budget_us) * 1000.0
        self._clock = clock
        self.fail_open_on_overrun = fail_open_on_overrun
        # the fused kernel times itself on CLOCK_MONOTONIC: only with the default clock
        self._fuse = bool(fuse) and clock is time.perf_counter_ns
        if not (isinstance(warm_up_gap_us, int | float) and warm_up_gap_us >= 0):
            raise ValueError(f"warm_up_gap_us must be a number >= 0, got {warm_up_gap_us!r}")
        self.warm_up_gap_us = float(warm_up_gap_us)
        _load_kernels()
        for st in self._devices.values():
            self._configure(st)

    def _configure(self, st: DeviceState) -> None:
        st.configure(probe_after=self.probe_after,
                     fail_open_on_overrun=self.fail_open_on_overrun, budget_ns=self._budget_ns,
                     warm_up_gap_us=self.warm_up_gap_us)

    @property
    def devices(self) -> list[str]:
        return list(self._devices)

    def state(self, device: str) -> DeviceState:
        try:
            return self._devices[device]
        except KeyError:
            raise UnknownDevice(device) from None

    def _lock(self, device: str) -> threading.Lock:
        try:
            return self._locks[device]
        except KeyError:
            raise UnknownDevice(device) from None

    # -- the rules ---------------------------------------------------------------------
    @staticmethod
    def _rule(st: DeviceState, status: int, reject: bool, overrun: bool) -> int:
        """The admission rules after the model (``mittd.daemon.fastpath.rule``, their one
        home) for one IO; returns its outcome code (an index into :data:`OUTCOMES`)."""
        return _RULE(st.counters.cnt, st.fdev, status, bool(reject), bool(overrun))

    # -- hot path ----------------------------------------------------------------------
    def admit(self, device: str, op: int, offset: int, length: int, deadline_us: float,
              request_id: int, now_us: int) -> Decision:
        """Decide one IO arriving at ``now_us``; admitted ones become pending.

        ``op`` is a trace op code (``mittd.traces.schema.OP_READ``/``OP_WRITE``/
        ``OP_OTHER``); ``request_id`` an int64 unique among the device's pending
        requests. Raises ``UnknownDevice``, or ``ValueError`` for a NaN deadline.
        """
        if deadline_us != deadline_us:
            raise ValueError("deadline_us must be a number, got NaN")
        with self._lock(device):
            return self._decide(device, self._devices[device], op, offset, length,
                                deadline_us, request_id, int(now_us))

    def admit_next(self, device: str, op: int, offset: int, length: int,
                   deadline_us: float = 0) -> int:
        """The in-process fast path (``mittd.daemon.embedded``): decide one IO arriving
        now, with a request id of the core's own; returns that id (> 0) when admitted,
        0 for EBUSY. The same decision as :meth:`admit`, in one compiled call where
        the device's engine has a compiled plan; the clock is read in the kernel."""
        try:
            lock = self._locks[device]
        except KeyError:
            raise UnknownDevice(device) from None
        with lock:
            st = self._devices[device]
            rid = st.next_id
            st.next_id = rid + 1
            try:
                positive = deadline_us > 0
            except TypeError:
                raise ValueError(_bad_io(0, 0, 1, deadline_us)) from None
            if not positive:
                if deadline_us != deadline_us:
                    raise ValueError("deadline_us must be a number, got NaN")
                deadline_us = st.default_deadline_us
            if st.admit_args is not None and self._fuse:
                out = self._fused(st, op, offset, length, deadline_us, rid, -1)
                if out < 0:  # refused or out of range: nothing was changed
                    raise ValueError(_bad_io(op, offset, length, deadline_us))
                return 0 if out in NEVER_ISSUED_CODES else rid
            bad = _bad_io(op, offset, length, deadline_us)
            if bad:
                raise ValueError(bad)
            d = self._decide(device, st, op, offset, length, deadline_us, rid, -1)
            return rid if d.admit else 0

    def decide_next(self, device: str, op: int, offset: int, length: int,
                    deadline_us: float = 0) -> tuple[int, Decision]:
        """:meth:`admit_next` with the :class:`Decision` that explains it (slower: the
        answer is built as a NamedTuple)."""
        if deadline_us != deadline_us:
            raise ValueError("deadline_us must be a number, got NaN")
        with self._lock(device):
            st = self._devices[device]
            rid = st.next_id
            st.next_id = rid + 1
            d = self._decide(device, st, op, offset, length, deadline_us, rid, -1)
            return (rid if d.admit else 0), d

    def _fused(self, st: DeviceState, op: int, offset: int, length: int,
               deadline_us: float, rid: int, now: int) -> int:
        """One IO through :func:`mittd.daemon.fastpath.admit1` (the caller holds the
        lock): the one place that keeps the id -> slot and deadline maps in step
        with the kernel. Returns the outcome code; -1 when the kernel refused its
        arguments (a value beyond int64, a non-number) and ``fastpath.BAD_RANGE``
        for a negative offset, a length <= 0 or an unknown op: then nothing was
        decided or issued."""
        tracker = st.tracker
        slots = tracker._slots
        old = slots.pop(rid, None)
        if old is not None:  # an id issued again replaces the old request
            t_discard(tracker.pend, tracker.free, tracker.meta, old)
        try:
            code = st.admit1(*st.admit_args, offset, length, op, deadline_us, rid, now)
        except (TypeError, ValueError, OverflowError):
            return -1
        if code < 0:
            return code
        n = code >> 24
        if n:
            tracker._forget(n)
        slot = (code >> 4) & 0xFFFFF
        if slot != _SLOT_NIL:
            slots[rid] = slot
            dl = st.deadlines
            dl[rid] = deadline_us
            if len(dl) > len(tracker):
                self._trim_deadlines(st)
        return code & 15

    def _decide(self, device: str, st: DeviceState, op: int, offset: int, length: int,
                deadline_us: float, request_id: int, now_us: int) -> Decision:
        """:meth:`admit` under the device's lock (``now_us < 0``: now)."""
        if deadline_us <= 0:
            deadline_us = st.default_deadline_us
        if st.admit_args is not None and self._fuse:
            out = self._fused(st, op, offset, length, deadline_us, request_id, now_us)
            if out >= 0:
                k = int(st.dev[fp.D_LAST_K])
                m = float(st.fdev[fp.F_MARGIN])
                admit, why, fail_open = OUTCOMES[out]
                return Decision(admit, NAN if k < 0 else _sigmoid(m), None if k < 0 else k,
                                fail_open, REASONS[why], st.model_version)
        prev = st.last_now
        now = st.clock_floor(fp.monotonic_ns() // 1000 if now_us < 0 else now_us)
        status, k = st.head_for(deadline_us)
        m = NAN
        overrun = False
        failed = ""
        if k is not None:
            clock = self._clock
            try:
                if now - prev > st.fdev[fp.F_WARM_GAP_US]:  # admit1's untimed pass after idle
                    st.counters.warm_ticks += 1
                    st.featuriser.encode_live(st.tracker, offset, length, op, st.input,
                                              now_us=now)
                    st.engine.run1()
                t0 = clock()
                st.featuriser.encode_live(st.tracker, offset, length, op, st.input,
                                          now_us=now)
                m = float(st.engine.run1()[k]) if st.multi_head else st.engine.margin1()
            except Exception as e:  # any fault of ours admits
                status = _FAILED
                failed = type(e).__name__
                self._count_fail_open(device, st, e, 1)
            else:
                elapsed = clock() - t0
                st.counters.predict_ns.observe(elapsed)
                overrun = elapsed > self._budget_ns
                if overrun and now - prev > COLD_GAP_US:
                    st.counters.cold_overruns += 1
        out = self._rule(st, status, m > st.cutoffs[k or 0], overrun)
        admit, why, fail_open = OUTCOMES[out]
        d = Decision(admit, _sigmoid(m) if status == _PREDICTED else NAN, k, fail_open,
                     f"fail-open:{failed}" if failed else REASONS[why], st.model_version)
        if admit:
            try:
                self._issue(st, request_id, now, offset, length, op, deadline_us)
            except Exception as e:  # e.g. an id beyond int64: untracked, still admitted
                st.counters.tracker_errors += 1
                log.warning("%s: request %r not tracked (%s: %s)", device, request_id,
                            type(e).__name__, e)
        slot = st.tracker._slots.get(request_id, NIL) if admit else NIL
        r = st.ring
        try:
            _PUT(r.rec, r.recf, now, int(offset), int(length), int(op), out,
                 -1 if k is None else k, m, float(deadline_us), slot)
        except (TypeError, ValueError, OverflowError):  # a value no record column holds
            r.count(dropped=1)
        return d

    @staticmethod
    def _count_fail_open(device: str, st: DeviceState, e: Exception, n: int) -> None:
        """Count ``n`` fail-opens; log when the total passes 1, 2, 4, 8, ...: visible,
        never a log flood."""
        before = st.counters.fail_open
        after = st.counters.fail_open = before + n
        if after.bit_length() > before.bit_length():
            log.warning("%s: predictor failed (%s: %s); admitting (fail-open #%d)",
                        device, type(e).__name__, e, after)

    @staticmethod
    def _issue(st: DeviceState, request_id: int, now: int, offset: int, length: int,
               op: int, deadline_us: float) -> None:
        tracker = st.tracker
        tracker.issue(request_id, now, offset, length, op)
        dl = st.deadlines
        if request_id in dl:
            del dl[request_id]
        dl[request_id] = deadline_us
        AdmissionCore._trim_deadlines(st)

    @staticmethod
    def _trim_deadlines(st: DeviceState) -> None:
        tracker, dl = st.tracker, st.deadlines
        # ids the tracker expired or dropped: oldest first, as the tracker drops them
        pending = len(tracker)
        while len(dl) > pending:
            rid = next(iter(dl))
            if rid in tracker:
                break
            del dl[rid]
        if len(dl) > 2 * tracker.capacity:  # out-of-order expiries left holes
            del dl[next(iter(dl))]

    def warm(self, device: str, idle_us: int = 0) -> bool:
        """Keep an idle device warm: when it has decided nothing (and was not warmed)
        for ``idle_us`` µs of the monotonic clock, run one untimed dummy prediction
        (:meth:`DeviceState.warm_once`) under its lock and count it in
        ``warm_ticks``; returns whether it ran. Why: at one IO a second the first
        prediction after a quiet spell runs on cold caches and overruns the budget
        (``cold_overruns``), and with ``fail_open_on_overrun`` a would-be EBUSY is
        then admitted unjudged. A busy device never needs a tick. The daemon calls
        this every ``server.keep_warm_ms / 2`` per device; an embedder may call it
        from its own timer (``Embedded.warm``)."""
        with self._lock(device):
            st = self._devices[device]
            now = int(fp.monotonic_ns() // 1000)
            if now - max(st.last_now, st.last_warm_us) < idle_us:
                return False
            st.warm_once()
            st.last_warm_us = now
            st.counters.warm_ticks += 1
            return True

    # -- bursts ----------------------------------------------------------------------------
    def admit_burst(self, device: str, ops: np.ndarray, offsets: np.ndarray,
                    lengths: np.ndarray, deadlines_us: np.ndarray, request_ids: np.ndarray,
                    now_us: int) -> BurstDecisions:
        """Decide a burst of IOs arriving together at ``now_us`` (the AdmitStream path).

        Where the device's engine has a compiled plan (and ``fuse``), the whole
        burst is one compiled call (:func:`mittd.daemon.fastpath.admit_many`):
        each IO is decided in order exactly as :meth:`admit` would decide it alone
        at ``now_us`` (it sees the admitted IOs before it pending), with its own
        prediction budget. Otherwise (the Python path): the burst is featurised in
        order, each IO seeing the earlier IOs of the burst as pending, all rows go
        through the engine in one batched call, the rules of :meth:`_rule` are
        applied in order, and the rejected IOs are then withdrawn, so only
        admitted ones stay pending — the same end state as :meth:`admit` one by
        one, while a rejected IO's presence may have nudged the features of the
        IOs after it; any predictor fault admits the whole burst (fail open), and
        an overrun is a burst slower than ``n × predict_budget_us`` (each of its
        predicted IOs counts). Deadlines ``<= 0`` take the device default; beyond
        the model → admitted.

        ``request_ids`` must be unique in the burst and fit in int64; an id that
        is already pending is replaced, as in :meth:`admit`. A bad column value is
        a ``ValueError`` naming the column and the IO, before anything is decided.
        """
        ids = np.ascontiguousarray(request_ids, np.int64)
        n = len(ids)
        dl = np.array(deadlines_us, np.float64)
        idset = set(ids.tolist())
        if len(idset) != n:
            raise ValueError("request ids must be unique within a burst")
        if np.isnan(dl).any():
            raise ValueError("deadline_us must be a number, got NaN")
        ops = np.ascontiguousarray(ops, np.int64)
        offsets = np.ascontiguousarray(offsets, np.int64)
        lengths = np.ascontiguousarray(lengths, np.int64)
        if not len(ops) == len(offsets) == len(lengths) == len(dl) == n:
            raise ValueError("burst columns must have the same length")
        bad = _bad_burst(ops, offsets, lengths)
        if bad:
            raise ValueError(bad)
        with self._lock(device):
            st = self._devices[device]
            dl[dl <= 0] = st.default_deadline_us
            if st.admit_args is not None and self._fuse:
                d = self._fused_burst(st, ops, offsets, lengths, dl, ids, idset, now_us)
                if d is not None:
                    return d
            prev = st.last_now
            now = st.clock_floor(now_us)
            th = st.thresholds_us
            k = np.searchsorted(np.asarray(th), dl, side="left")  # head_for, vectorised
            beyond = k >= len(th)
            below = dl < st.fdev[fp.F_BELOW_US]
            asked = ~(beyond | below)
            k[~asked] = -1
            status = np.where(beyond, _BEYOND, np.where(below, _BELOW, _PREDICTED))
            margins = np.full(n, NAN)
            tracker = st.tracker
            if not idset.isdisjoint(tracker.pending_ids()):
                for rid in idset & tracker.pending_ids():
                    tracker.withdraw(rid)
            if asked.any() and now - prev > st.fdev[fp.F_WARM_GAP_US]:  # the engine once, on
                st.counters.warm_ticks += 1  # the last burst's rows, untimed (as admit1)
                with contextlib.suppress(Exception):  # a fault is the timed pass's to count
                    st.engine.logits(st.burst_rows(n))
            t0 = self._clock()
            issued = False
            try:
                x = st.burst_rows(n)
                encode_burst(st.featuriser, tracker, now, ids, offsets, lengths, ops, x)
                issued = True
                out = st.engine.logits(x)
                if st.multi_head:
                    m = out[np.arange(n), np.maximum(k, 0)]
                elif st.engine.graph.head == "softmax":
                    m = out[:, 1] - out[:, 0]
                else:
                    m = out[:, 0]
                margins = np.where(asked, m.astype(np.float64), NAN)
            except Exception as e:  # any fault of ours admits (the whole burst)
                status[asked] = _FAILED
                self._count_fail_open(device, st, e, int(np.count_nonzero(asked)))
                if not issued:  # the fallback may have stopped half way: issue the rest
                    for j, rid in enumerate(ids.tolist()):
                        if rid not in tracker:
                            tracker.issue(rid, now, int(offsets[j]), int(lengths[j]),
                                          int(ops[j]))
            elapsed = self._clock() - t0
            if n:
                st.counters.predict_ns.observe(elapsed / n, n)
            overrun = bool(n) and elapsed > self._budget_ns * n
            if overrun and now - prev > COLD_GAP_US:  # counted per IO, as the overruns
                st.counters.cold_overruns += int(np.count_nonzero(status == _PREDICTED))
            reject = margins > np.asarray(st.cutoffs)[np.maximum(k, 0)]  # NaN: False
            out = np.empty(n, np.intp)
            fp.rules(st.counters.cnt, st.fdev, status.astype(np.int64), reject, overrun, out)
            admit = _ADMIT_OF[out]
            for rid in ids[~admit].tolist():
                tracker.withdraw(rid)
            got = tracker._slots.get
            slots = np.fromiter((got(r, NIL) if a else NIL
                                 for r, a in zip(ids.tolist(), admit.tolist(), strict=True)),
                                np.int64, n)
            rg = st.ring
            ring.put_many(rg.rec, rg.recf, now, offsets, lengths, ops, out.astype(np.int64),
                          k, margins, dl, slots)
            dls = st.deadlines
            for rid, d in zip(ids[admit].tolist(), dl[admit].tolist(), strict=True):
                dls[rid] = d
            self._trim_deadlines(st)
            return _burst_decisions(out, margins, k, st.model_version)

    def _fused_burst(self, st: DeviceState, ops: np.ndarray, offsets: np.ndarray,
                     lengths: np.ndarray, dl: np.ndarray, ids: np.ndarray, idset: set[int],
                     now_us: int) -> BurstDecisions | None:
        """A burst through :func:`mittd.daemon.fastpath.admit_many` (the caller holds
        the lock, the columns are checked): the burst's counterpart of :meth:`_fused`,
        keeping the id -> slot and deadline maps in step with the kernel. None when
        the kernel refused its arguments (then nothing was decided)."""
        tracker = st.tracker
        slots = tracker._slots
        n = len(ids)
        codes = np.empty(n, np.int64)
        margins = np.empty(n, np.float64)
        heads = np.empty(n, np.int64)
        gone = np.empty(tracker.capacity + n, np.int64)
        ends = np.empty(n, np.int64)
        now = int(now_us) if now_us >= 0 else int(fp.monotonic_ns() // 1000)
        olds = np.full(n, NIL, np.int64)
        if not idset.isdisjoint(slots.keys()):  # ids issued again: replaced at their turn
            olds[:] = [slots.get(rid, NIL) for rid in ids.tolist()]
        try:
            r = st.admit_many(*st.admit_args, offsets, lengths, ops, dl, ids, olds, now, codes,
                              margins, heads, gone, ends)
        except (TypeError, ValueError, OverflowError):  # refused before it ran: nothing decided
            return None
        slot = (codes >> 4) & 0xFFFFF
        issued = slot != _SLOT_NIL
        if not (olds != NIL).any():  # no burst id was pending: none leaves before its issue
            slots.update(zip(ids[issued].tolist(), slot[issued].tolist(), strict=True))
            for rid in gone[:r].tolist():
                del slots[rid]
        else:  # the kernel's order: IO j's leavers, its old request, then its issue
            lo = 0
            for j, rid in enumerate(ids.tolist()):
                for g in gone[lo:ends[j]].tolist():
                    del slots[g]
                lo = int(ends[j])
                slots.pop(rid, None)
                if issued[j]:
                    slots[rid] = int(slot[j])
            for g in gone[lo:r].tolist():
                del slots[g]
        dls = st.deadlines
        for rid, d in zip(ids[issued].tolist(), dl[issued].tolist(), strict=True):
            dls.pop(rid, None)
            dls[rid] = d
        self._trim_deadlines(st)
        return _burst_decisions(codes & 15, margins, heads, st.model_version)

    def complete_burst(self, device: str, request_ids: np.ndarray, latencies_us: np.ndarray,
                       now_us: int) -> int:
        """:meth:`complete` for many ids at ``now_us``, in order, under one lock and
        one tracker kernel call; returns how many ids were known."""
        ids = np.asarray(request_ids).tolist()
        lat = np.asarray(latencies_us, np.float64)
        if len(ids) != len(lat):
            raise ValueError("request_ids and latencies_us must have the same length")
        with self._lock(device):
            st = self._devices[device]
            c = st.counters
            pop = st.deadlines.pop
            dl = np.fromiter((pop(r, NAN) for r in ids), np.float64, len(ids))
            c.slo_violations += int(np.count_nonzero(lat > dl))
            slots = st.tracker.take_slots(ids)
            known = st.tracker.complete_slots(slots, int(now_us), lat)
            rg = st.ring
            ring.done_many(rg.rec, rg.recf, slots[known], lat[known])
            k = int(np.count_nonzero(known))
            c.completions += k
            c.unknown_completions += len(ids) - k
            ours = (known | ~np.isnan(dl)) & (lat >= 0.0)
            c.io_latency_us.observe_many(lat[ours])
            return k

    def complete(self, device: str, request_id: int, latency_us: float, now_us: int) -> bool:
        """Feed a completion to the tracker and judge it against its deadline.

        False when the tracker does not know the id (never admitted, already
        completed, expired or dropped). An admitted request whose deadline is
        still remembered counts as an SLO violation when ``latency_us`` exceeds it,
        even if it arrives too late for the tracker.
        """
        with self._lock(device):
            return self._complete(self._devices[device], request_id, latency_us, int(now_us))

    def complete_next(self, device: str, request_id: int, latency_us: float) -> bool:
        """:meth:`complete` now (the clock read in the kernel): the in-process path."""
        try:
            lock = self._locks[device]
        except KeyError:
            raise UnknownDevice(device) from None
        with lock:
            return self._complete(self._devices[device], request_id, latency_us, -1)

    @staticmethod
    def _complete(st: DeviceState, request_id: int, latency_us: float, now: int) -> bool:
        """:func:`mittd.daemon.fastpath.complete1` (the rules of a completion) for one
        id, under the device's lock (``now < 0``: the kernel reads the clock). A
        latency that is not a number leaves the IO pending, as it was."""
        slots = st.tracker._slots
        try:
            slot = slots.pop(request_id, NIL)
        except TypeError:  # an unhashable id: not ours
            slot = NIL
        deadline = st.deadlines.pop(request_id, NAN) if st.deadlines else NAN
        try:
            return _COMPLETE1(*st.complete_args, slot, latency_us, deadline, st.timeout_us,
                              st.capacity, now)
        except (TypeError, ValueError):
            if slot != NIL:
                slots[request_id] = slot
                st.deadlines[request_id] = deadline
            raise ValueError(f"latency_us must be a number of µs, got {latency_us!r}") from None

    # -- model reloads --------------------------------------------------------------------
    def swap(self, device: str, new_state: DeviceState) -> DeviceState:
        """Atomically replace a device's state (a model reload); returns the old one.

        The old state serves until the swap; requests after it see the new model.
        When the new featuriser's config equals the old one, the new state takes
        over the live tracker and the remembered deadlines (the pending queue is
        the device's, not the model's); otherwise it starts from an empty tracker
        — requests pending at the swap are then unknown to it and their
        completions are counted as unknown. Counters always carry over, so they
        stay monotonic.
        """
        with self._lock(device):
            old = self._devices[device]
            kept = new_state.featuriser.config() == old.featuriser.config()
            new_state.ring = old.ring
            new_state.ring.model_changed(new_state.bundle.sha256, kept)
            if kept:
                new_state.tracker = old.tracker
                new_state.deadlines = old.deadlines
                new_state.last_now = old.last_now
                new_state.next_id = old.next_id
            new_state.counters = old.counters
            self._configure(new_state)
            new_state.bind()
            self._devices[device] = new_state
            return old

    # -- modes, quality, records ------------------------------------------------------
    def mode(self, device: str) -> str:
        """The device's mode: ``"enforce"`` or ``"shadow"`` (predict, record, admit)."""
        return self.state(device).mode

    def set_mode(self, device: str, mode: str) -> None:
        """Switch a device between ``"enforce"`` and ``"shadow"`` (takes effect on the
        next decision; the rule state carries on)."""
        with self._lock(device):
            self._devices[device].mode = mode

    def quality(self, device: str) -> LiveQuality:
        """The device's live model quality (``mittd.daemon.quality``): a few ms of
        numpy over its last decisions, for scrapes and ``mittd status``."""
        with self._lock(device):  # only the copy holds up the device's decisions
            st = self._devices[device]
            rows = st.quality_rows()
        return st.quality(rows)

    def take_records(self, device: str, settle_us: int, everything: bool = False
                     ) -> ring.RingRows | None:
        """Hand the record writer the device's rows that are ready
        (:meth:`mittd.daemon.ring.Ring.take`), under the device's lock."""
        with self._lock(device):
            now = int(fp.monotonic_ns() // 1000)
            return self._devices[device].ring.take(now, settle_us, NEVER_ISSUED, everything)

    def records_counted(self, device: str, written: int = 0, dropped: int = 0) -> None:
        """The writer's tallies for the device (``records_written``/``_dropped``)."""
        with self._lock(device):
            self._devices[device].ring.count(written, dropped)

    def keep_records(self, device: str, on: bool) -> None:
        """A writer consumes the device's rows from now on (or no longer does)."""
        with self._lock(device):
            self._devices[device].ring.keep = on

    def stats(self) -> dict[str, DeviceStats]:
        """A typed snapshot per device: counters, pending count, model, histograms."""
        out = {}
        for alias, lock in self._locks.items():
            with lock:
                out[alias] = self._devices[alias].stats()
        return out
