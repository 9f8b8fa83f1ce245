"""The admission core: admit or reject (EBUSY) one IO, on the caller's clock.

Shared by the live gRPC daemon and the offline replayer, so every call takes its
timestamp (``now_us``, integer µs) from the caller; the only clock read here is
the injectable ``clock`` that times the predictor against its budget.

Per request (:meth:`AdmissionCore.admit`):

1. deadline ``0`` (unset) → the device's default; the deadline picks a trained
   threshold with the ladder rule of ``mittd.predictor.thresholds``. A deadline
   longer than every trained threshold is beyond the model: admit, no prediction.
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

Threading: one ``threading.Lock`` per device alias guards the tracker and the
engine (an engine has one input buffer) and the state swap; devices never wait
for each other's lock (they still share the GIL).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from mittd.predictor.bundle import Bundle
from mittd.predictor.engines import Engine, make_engine
from mittd.predictor.features import Featuriser, make_featuriser
from mittd.predictor.thresholds import check_thresholds, index_in

__all__ = [
    "OP_OTHER",
    "OP_READ",
    "OP_WRITE",
    "AdmissionCore",
    "Counters",
    "Decision",
    "DeviceState",
    "UnknownDevice",
]

log = logging.getLogger(__name__)

OP_READ, OP_WRITE, OP_OTHER = 0, 1, 2  # the featurisers' op codes

REASON_PREDICTED = "predicted"
REASON_BEYOND = "deadline-beyond-model"
REASON_OVERRUN = "overrun"
NAN = float("nan")


class UnknownDevice(KeyError):
    """No device with this alias is configured (the server answers NOT_FOUND)."""


class Decision(NamedTuple):
    """The answer to one admission request (a NamedTuple: 4x cheaper to build than a
    frozen dataclass, and this is built on every request).

    ``p_slow`` is NaN when no prediction was made; ``threshold_index`` is the
    head asked (None beyond the model); ``reason`` is ``"predicted"``,
    ``"deadline-beyond-model"``, ``"fail-open:<ExceptionType>"`` or ``"overrun"``.
    """

    admit: bool
    p_slow: float
    threshold_index: int | None
    fail_open: bool
    reason: str
    model_version: str


class Counters:
    """Monotonic per-device counters (Prometheus counters later); carried over swaps."""

    __slots__ = ("admitted", "beyond_model", "completions", "fail_open", "overruns",
                 "rejected", "slo_violations", "tracker_errors", "unknown_completions")

    def __init__(self) -> None:
        self.admitted = self.rejected = self.fail_open = self.overruns = 0
        self.completions = self.unknown_completions = self.slo_violations = 0
        self.beyond_model = self.tracker_errors = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


def _logit(p: float) -> float:
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"decision threshold must be a probability in [0, 1], got {p!r}")
    if p == 0.0:
        return -math.inf  # every IO is "slow"
    if p == 1.0:
        return math.inf  # never reject
    return math.log(p / (1.0 - p))


def _sigmoid(m: float) -> float:
    if m >= 0.0:
        return 1.0 / (1.0 + math.exp(-m))
    e = math.exp(m)
    return e / (1.0 + e)


class DeviceState:
    """Everything one device alias needs to decide: model, featuriser, live state.

    ``deadlines`` maps the request id of every admitted, still-tracked request to
    its deadline, so a completion can be judged against the SLO; it holds at most
    what the tracker holds (stale ids are dropped as the tracker expires or drops
    them) and is capped at twice the tracker's capacity whatever happens.
    """

    def __init__(
        self,
        bundle: Bundle,
        engine: Engine,
        default_deadline_us: float | None = None,
        decision_thresholds: float | list[float] | None = None,
        featuriser: Featuriser | None = None,
    ) -> None:
        self.bundle = bundle
        self.engine = engine
        self.featuriser = featuriser or make_featuriser(bundle.featuriser)
        self.tracker = self.featuriser.make_tracker()
        self.model_version = bundle.version_id
        graph = engine.graph
        self.input = engine.input
        if self.input.shape != (self.featuriser.dim,):
            raise ValueError(f"{bundle.version_id}: the featuriser gives {self.featuriser.dim} "
                             f"inputs, the engine takes {self.input.shape}")
        n_heads = graph.output_dim if graph.head == "sigmoid" else 1
        try:
            self.thresholds_us = check_thresholds(bundle.latency_thresholds_us())
        except ValueError as e:
            raise ValueError(f"{bundle.version_id}: bad latency thresholds: {e}") from None
        if len(self.thresholds_us) != n_heads:
            raise ValueError(f"{bundle.version_id}: {len(self.thresholds_us)} latency "
                             f"thresholds for {n_heads} output head(s)")
        if decision_thresholds is None:
            probs = bundle.decision_thresholds()
        elif isinstance(decision_thresholds, (int, float)):
            probs = [float(decision_thresholds)] * n_heads
        else:
            probs = [float(p) for p in decision_thresholds]
        if len(probs) != n_heads:
            raise ValueError(f"{bundle.version_id}: {len(probs)} decision thresholds for "
                             f"{n_heads} output head(s)")
        self.p_thresholds = tuple(probs)
        self.cutoffs = tuple(_logit(p) for p in probs)
        self.multi_head = n_heads > 1  # ask run1()[k], else margin1()
        d = self.thresholds_us[0] if default_deadline_us is None else float(default_deadline_us)
        if not d > 0.0:
            raise ValueError(f"default deadline must be > 0 µs, got {default_deadline_us!r}")
        self.default_deadline_us = d
        self.counters = Counters()
        self.deadlines: OrderedDict[int, float] = OrderedDict()

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        engine_name: str = "auto",
        default_deadline_us: float | None = None,
        decision_threshold: float | list[float] | None = None,
        **engine_opts: Any,
    ) -> DeviceState:
        """Build the engine too (``auto`` times the formats on this machine: load time)."""
        engine = make_engine(engine_name, bundle.graph, bundle.params, **engine_opts)
        return cls(bundle, engine, default_deadline_us, decision_threshold)

    def stats(self) -> dict[str, Any]:
        return {**self.counters.as_dict(), "pending": len(self.tracker),
                "model_version": self.model_version,
                "tracker": self.tracker.stats()}


class AdmissionCore:
    """Admission decisions for a set of devices (see the module docstring)."""

    def __init__(
        self,
        devices: Mapping[str, DeviceState],
        predict_budget_us: float = 50.0,
        clock: Callable[[], int] = time.perf_counter_ns,
        fail_open_on_overrun: bool = True,
    ) -> None:
        self._devices: dict[str, DeviceState] = dict(devices)
        self._locks = {alias: threading.Lock() for alias in self._devices}
        self._budget_ns = float(predict_budget_us) * 1000.0
        self._clock = clock
        self.fail_open_on_overrun = fail_open_on_overrun

    @classmethod
    def from_bundles(
        cls,
        specs: Mapping[str, tuple[Bundle, str, float | None, float | None]],
        **kw: Any,
    ) -> AdmissionCore:
        """``{alias: (bundle, engine_name, default_deadline_us, decision_threshold)}``;
        None keeps the bundle's first threshold / its decision thresholds."""
        states = {alias: DeviceState.from_bundle(b, eng, dl, p)
                  for alias, (b, eng, dl, p) in specs.items()}
        return cls(states, **kw)

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

    # -- hot path ----------------------------------------------------------------------
    def admit(self, device: str, op: int, offset: int, length: int, deadline_us: float,
              request_id: int, now_us: int) -> Decision:
        """Decide one IO arriving at ``now_us``; admitted ones become pending.

        ``op`` is a featuriser op code (``OP_READ``/``OP_WRITE``/``OP_OTHER``);
        ``request_id`` an int64 unique among the device's pending requests.
        Raises ``UnknownDevice``, or ``ValueError`` for a NaN deadline.
        """
        if deadline_us != deadline_us:
            raise ValueError("deadline_us must be a number, got NaN")
        with self._lock(device):
            st = self._devices[device]
            c = st.counters
            now = int(now_us)
            if deadline_us <= 0:
                deadline_us = st.default_deadline_us
            k = index_in(deadline_us, st.thresholds_us)
            if k is None:
                c.beyond_model += 1
                d = Decision(True, NAN, None, False, REASON_BEYOND, st.model_version)
            else:
                clock = self._clock
                t0 = clock()
                try:
                    st.featuriser.encode_live(st.tracker, offset, length, op, st.input,
                                              now_us=now)
                    m = float(st.engine.run1()[k]) if st.multi_head else st.engine.margin1()
                except Exception as e:  # any fault of ours admits
                    d = self._fail_open(device, st, k, e)
                else:
                    elapsed = clock() - t0
                    admit = not m > st.cutoffs[k]
                    if elapsed > self._budget_ns:
                        c.overruns += 1
                        late = self.fail_open_on_overrun and not admit
                        d = Decision(admit or late, _sigmoid(m), k, late, REASON_OVERRUN,
                                     st.model_version)
                    else:
                        d = Decision(admit, _sigmoid(m), k, False, REASON_PREDICTED,
                                     st.model_version)
            if d.admit:
                c.admitted += 1
                try:
                    self._issue(st, request_id, now, offset, length, op, deadline_us)
                except Exception as e:  # e.g. an id beyond int64: untracked, still admitted
                    c.tracker_errors += 1
                    log.warning("%s: request %r not tracked (%s: %s)", device, request_id,
                                type(e).__name__, e)
            else:
                c.rejected += 1
            return d

    def _fail_open(self, device: str, st: DeviceState, k: int, e: Exception) -> Decision:
        st.counters.fail_open += 1
        n = st.counters.fail_open
        if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: visible, never a log flood
            log.warning("%s: predictor failed (%s: %s); admitting (fail-open #%d)",
                        device, type(e).__name__, e, n)
        return Decision(True, NAN, k, True, f"fail-open:{type(e).__name__}", st.model_version)

    @staticmethod
    def _issue(st: DeviceState, request_id: int, now: int, offset: int, length: int,
               op: int, deadline_us: float) -> None:
        tracker = st.tracker
        tracker.issue(request_id, now, offset, length, op)
        dl = st.deadlines
        if request_id in dl:
            del dl[request_id]
        dl[request_id] = deadline_us
        # ids the tracker expired or dropped: oldest first, as the tracker drops them
        pending = len(tracker)
        while len(dl) > pending:
            rid = next(iter(dl))
            if rid in tracker:
                break
            del dl[rid]
        if len(dl) > 2 * tracker.capacity:  # out-of-order expiries left holes
            dl.popitem(last=False)

    def complete(self, device: str, request_id: int, latency_us: float, now_us: int) -> bool:
        """Feed a completion to the tracker and judge it against its deadline.

        False when the tracker does not know the id (never admitted, already
        completed, expired or dropped). An admitted request whose deadline is
        still remembered counts as an SLO violation when ``latency_us`` exceeds it,
        even if it arrives too late for the tracker.
        """
        with self._lock(device):
            st = self._devices[device]
            c = st.counters
            deadline = st.deadlines.pop(request_id, None)
            if deadline is not None and latency_us > deadline:
                c.slo_violations += 1
            ok = st.tracker.complete(request_id, int(now_us), latency_us)
            if ok:
                c.completions += 1
            else:
                c.unknown_completions += 1
            return ok

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
            if new_state.featuriser.config() == old.featuriser.config():
                new_state.tracker = old.tracker
                new_state.deadlines = old.deadlines
            new_state.counters = old.counters
            self._devices[device] = new_state
            return old

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-device counters, pending count and model version."""
        out = {}
        for alias, lock in self._locks.items():
            with lock:
                out[alias] = self._devices[alias].stats()
        return out
