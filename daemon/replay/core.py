"""The model policy: the daemon's own admission core driven over a trace on a
virtual clock, with failover into deciding replicas (see ``mittd.daemon.replay``)."""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mittd.daemon.admission import AdmissionCore, DeviceState, DeviceStats
from mittd.daemon.devices import DeviceError, build_state, read_bundle, servable
from mittd.daemon.replay.traces import ReplayError, ReplayTrace, Replica
from mittd.predictor.bundle import Bundle
from mittd.predictor.engine import Engine
from mittd.predictor.features import TraceColumns
from mittd.predictor.slo import parse_slo
from mittd.predictor.thresholds import index_in
from mittd.predictor.tracker import NEVER, completion_times_us
from mittd.traces.schema import OP_READ

__all__ = ["DEFAULT_FAILOVER_COST_US", "DEFAULT_PROBE_AFTER", "Model", "PolicyResult",
           "load_model", "replay_model", "replica_latencies", "resolve_slo",
           "split_operating_point"]

DEFAULT_FAILOVER_COST_US = 10
DEFAULT_PROBE_AFTER = 32  # the daemon's default (server.probe_after)
#: The lock-in signature: a model that calls at least this share of the reads slow
#: is out of its training support (rejections drained the queue into states it never
#: saw); the reject cap keeps the harm bounded, the report flags the model.
LOCK_IN_SHARE = 0.5
PRIMARY = "primary"
CHUNK = 1 << 15  # IOs between progress-bar updates


# -- models, SLO, policies ----------------------------------------------------------------------


@dataclass
class Model:
    """A bundle to replay, named by its file stem."""

    name: str
    path: str
    bundle: Bundle
    decision_threshold: float | None = None  # this row's P(slow) cutoff (None: default)

    @property
    def thresholds_us(self) -> list[float]:
        return self.bundle.latency_thresholds_us()


def split_operating_point(spec: str | Path) -> tuple[str, float | None]:
    """``B.mittd@0.97`` -> (``B.mittd``, 0.97): a model row at its own P(slow) cutoff."""
    text = str(spec)
    path, sep, p = text.rpartition("@")
    if not sep or not path.endswith(".mittd"):
        return text, None
    try:
        v = float(p)
    except ValueError:
        raise ReplayError(f"{text}: the part after '@' must be a P(slow) cutoff in [0, 1]"
                          ) from None
    if not 0.0 <= v <= 1.0:
        raise ReplayError(f"{text}: the P(slow) cutoff must be in [0, 1], got {v}")
    return path, v


def load_model(path: str | Path, name: str | None = None) -> Model:
    """Load a bundle and check it by the daemon's rules (``mittd.daemon.devices``)
    before any replay starts; ``path@P`` replays it rejecting when P(slow) > P (its
    own operating point)."""
    file, cut = split_operating_point(path)
    default = Path(file).stem + (f"@{cut:g}" if cut is not None else "")
    try:
        bundle = read_bundle(file)
    except DeviceError as e:
        raise ReplayError(e.problem) from None
    m = Model(name or default, file, bundle, cut)
    try:
        servable(bundle, decision_threshold=cut)
    except DeviceError as e:
        raise ReplayError(f"{file}: cannot serve this model: {e.problem}") from None
    return m


def resolve_slo(text: str, primary: ReplayTrace, models: Sequence[Model] = ()) -> float:
    """The SLO in µs: a duration, a percentile or ``auto`` (the knee of the CDF) of the
    primary's read latencies, or ``model`` (the first model's smallest trained threshold)."""
    if isinstance(text, str) and text.strip().lower() == "model":
        if not models or not models[0].thresholds_us:
            raise ReplayError("--slo model needs a --model with a trained latency threshold")
        return float(models[0].thresholds_us[0])
    lat = primary.cols.lat[primary.known_reads]
    try:
        return parse_slo(text, lat)
    except ValueError as e:
        raise ReplayError(f"--slo: {e}") from None


# -- results ------------------------------------------------------------------------------------


@dataclass
class PolicyResult:
    """What one policy did, per primary IO (only reads are meaningful)."""

    name: str
    kind: str  # baseline | model | hedge | random | oracle
    latency_us: np.ndarray  # float64 per IO: what the application saw
    rejected: np.ndarray  # bool per IO: EBUSY from the primary
    served_by: np.ndarray  # int8 per IO: 0 primary, j replica j
    failovers: int  # re-sent reads (one per replica hop)
    hedges: int  # duplicate reads sent by hedging
    decisions: int  # admission decisions made (0: the policy does not decide)
    wall_s: float
    model: Model | None = None
    counters: dict[str, DeviceStats] | None = None
    p_slow: np.ndarray | None = None  # per IO (NaN: no prediction), when recorded
    notes: list[str] = field(default_factory=list)
    mode: str | None = None  # a model row's decision policy: reject | hedge | both
    hedge_after_us: float | None = None  # the hedging delay, when the policy hedges
    predicted_slow_share: float | None = None  # primary reads the model called slow
    lock_in: bool = False  # the model called most reads slow (see LOCK_IN_SHARE)

    @property
    def extra_ios(self) -> int:
        return self.failovers + self.hedges


def _served_latency(primary: ReplayTrace, served: np.ndarray, rep_lat: Sequence[np.ndarray],
                    cost: int) -> np.ndarray:
    lat = primary.cols.lat.copy()
    for j, rl in enumerate(rep_lat, start=1):
        m = served == j
        lat[m] = j * cost + rl[m]
    return lat


def _result(name: str, kind: str, primary: ReplayTrace, served: np.ndarray,
            rep_lat: Sequence[np.ndarray], cost: int, decisions: int, wall_s: float,
            **kw: Any) -> PolicyResult:
    reads = primary.reads
    served = np.where(reads, served, 0).astype(np.int8)
    return PolicyResult(
        name, kind, _served_latency(primary, served, rep_lat, cost), served > 0, served,
        int(served[primary.known_reads].sum()), 0, decisions, wall_s, **kw)


# -- the model policy: the admission core on a virtual clock -------------------------------------


class _ReplicaFeed:
    """An intermediate replica's device in the core, fed lazily with its own IOs."""

    def __init__(self, core: AdmissionCore, alias: str, stream: TraceColumns,
                 timeout_us: int) -> None:
        self.core = core
        self.alias = alias
        self.timeout = timeout_us
        self.ts = stream.ts.tolist()
        self.op = stream.op.tolist()
        self.off = stream.off.tolist()
        self.size = stream.size.tolist()
        self.lat = stream.lat.tolist()
        self.comp = completion_times_us(stream.ts, stream.lat, timeout_us).tolist()
        self.p = 0
        self.seq = 0
        self.heap: list[tuple[int, int, int, float]] = []
        self.decisions = 0

    def _drain(self, t: int) -> None:
        heap, complete, alias = self.heap, self.core.complete, self.alias
        while heap and heap[0][0] <= t:
            c, _, rid, lat = heapq.heappop(heap)
            complete(alias, rid, lat, c)

    def catch_up(self, t: int) -> None:
        """Apply own issues at times <= t (completions before each), then completions <= t."""
        ts, p, m = self.ts, self.p, len(self.ts)
        admit, alias, heap = self.core.admit, self.alias, self.heap
        while p < m and ts[p] <= t:
            tt = ts[p]
            self._drain(tt)
            admit(alias, self.op[p], self.off[p], self.size[p], math.inf, p, tt)
            c = self.comp[p]
            if c != NEVER:
                heapq.heappush(heap, (c, self.seq, p, self.lat[p]))
                self.seq += 1
            p += 1
        self.p = p
        self._drain(t)

    def offer(self, rid: int, t: int, off: int, size: int, slo: float, lat: float) -> bool:
        """A failed-over read arrives at ``t``; True when this replica admits it."""
        self.catch_up(t)
        self.decisions += 1
        d = self.core.admit(self.alias, OP_READ, off, size, slo, rid, t)
        if d.admit and math.isfinite(lat) and lat < self.timeout:
            c = t + (math.ceil(lat) if lat > 0.0 else 0)
            heapq.heappush(self.heap, (c, self.seq, rid, lat))
            self.seq += 1
        return d.admit


def make_states(model: Model, n_devices: int, engine: str | Engine, slo_us: float,
                decision_threshold: float | None, max_reject_share: float | None = None
                ) -> list[DeviceState]:
    """One DeviceState per deciding device, sharing one engine (one thread replays)."""
    b = model.bundle
    # Every replayed IO carries the SLO as its deadline, so the daemon's default
    # below_model = "reject" would answer EBUSY to all of them when the SLO is below
    # the model's lowest threshold (serve refuses that config): a replay asks how the
    # model judges at this SLO, the daemon's below_model = "judge".
    kw = {"slo_us": slo_us, "decision_threshold": decision_threshold,
          "max_reject_share": max_reject_share, "below_model": "judge"}
    try:
        first = build_state(b, engine, **kw)
        return [first] + [build_state(b, first.engine, **kw) for _ in range(n_devices - 1)]
    except DeviceError as e:
        raise ReplayError(f"{model.path}: cannot serve this model: {e.problem}") from None


def hedged(primary: ReplayTrace, replica: Replica, latency_us: np.ndarray, which: np.ndarray,
           after_us: float) -> tuple[np.ndarray, int]:
    """Dean & Barroso's hedge on the reads ``which``: a duplicate goes to ``replica``
    when no answer came after ``after_us``; the first answer wins. Returns the new
    latencies and the number of duplicates sent (one per read still waiting)."""
    rel = primary.cols.ts - primary.t0
    late = which & (latency_us > after_us)
    out = latency_us.copy()
    out[late] = np.minimum(latency_us[late],
                           after_us + replica.latency_at(rel[late] + round(after_us)))
    return out, int((late & primary.known_reads).sum())


def replay_model(
    primary: ReplayTrace,
    replicas: Sequence[Replica],
    model: Model,
    slo_us: float,
    *,
    engine: str | Engine = "auto",
    failover_cost_us: int = DEFAULT_FAILOVER_COST_US,
    decision_threshold: float | None = None,
    rep_lat: Sequence[np.ndarray] | None = None,
    record_p_slow: bool = False,
    progress: bool = False,
    probe_after: int = DEFAULT_PROBE_AFTER,
    max_reject_share: float | None = None,
    mode: str | None = None,
    hedge_after_us: float | None = None,
) -> PolicyResult:
    """Drive a fresh AdmissionCore over ``primary`` (see the module docstring).

    The decision policy is the bundle's (``mittd.predictor.policy``) unless
    ``mode`` / ``hedge_after_us`` / ``max_reject_share`` say otherwise; an explicit
    ``decision_threshold`` rejects even where the bundle's policy only hedges, as
    in the daemon. A policy that hedges duplicates the admitted reads still
    waiting after the delay to the first replica (one extra IO each).
    """
    if not replicas:
        raise ValueError("at least one replica is needed")
    cost = int(failover_cost_us)
    if rep_lat is None:
        rep_lat = replica_latencies(primary, replicas, cost)
    k = len(replicas)
    states = make_states(model, k, engine, slo_us, decision_threshold, max_reject_share)
    policy = states[0].policy
    if mode is None:
        mode = "reject" if decision_threshold is not None and policy.mode == "hedge" \
            else policy.mode
    if mode not in ("reject", "hedge", "both"):
        raise ReplayError(f"decision policy mode must be reject, hedge or both, got {mode!r}")
    if mode == "hedge":  # never reject: every state admits
        for st in states:
            st.cutoffs = tuple(math.inf for _ in st.cutoffs)
    delay = hedge_after_us if hedge_after_us is not None else policy.hedge_after_us
    if mode != "reject" and not (delay is not None and delay > 0):
        raise ReplayError(f"{model.name}: policy {mode!r} needs a hedging delay > 0 µs")
    aliases = [PRIMARY] + [f"replica{j}" for j in range(1, k)]
    # the trace's clock: its idle gaps cool no cache here, so no warm-up passes
    core = AdmissionCore(dict(zip(aliases, states, strict=True)), predict_budget_us=math.inf,
                         probe_after=probe_after, warm_up_gap_us=math.inf)
    timeout = states[0].featuriser.timeout_us
    horizon = int(primary.cols.ts[-1]) - primary.t0
    feeds = [_ReplicaFeed(core, aliases[j], replicas[j - 1].stream(primary.t0, horizon), timeout)
             for j in range(1, k)]

    cols = primary.cols
    n = primary.n
    ts = cols.ts.tolist()
    lat = cols.lat.tolist()
    op = cols.op.tolist()
    off = cols.off.tolist()
    size = cols.size.tolist()
    comp_np = completion_times_us(cols.ts, cols.lat, timeout)
    corder = np.argsort(comp_np, kind="stable").tolist()
    comp = comp_np.tolist()
    issued = bytearray(n)
    served = bytearray(n)
    p_slow = [math.nan] * n if record_p_slow else None
    rep_lists = [r.tolist() for r in rep_lat[:-1]] if feeds else []
    admit, complete = core.admit, core.complete
    slo = float(slo_us)
    inf = math.inf
    last = k
    decisions = 0
    bar = tqdm(total=n, desc=model.name, unit="IO", unit_scale=True, leave=False,
               disable=not progress, mininterval=0.5)
    cp = 0
    t_start = time.perf_counter()
    try:
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            for i in range(lo, hi):
                t = ts[i]
                while cp < n:  # completions at or before t of IOs issued before i
                    j = corder[cp]
                    if comp[j] > t or j >= i:
                        break
                    cp += 1
                    if issued[j]:
                        complete(PRIMARY, j, lat[j], comp[j])
                o = op[i]
                if o == OP_READ:
                    d = admit(PRIMARY, OP_READ, off[i], size[i], slo, i, t)
                    decisions += 1
                    if d.admit:
                        issued[i] = 1
                    elif feeds:
                        served[i] = last
                        for r, feed in enumerate(feeds, start=1):
                            if feed.offer(-1 - i, t + r * cost, off[i], size[i], slo,
                                          rep_lists[r - 1][i]):
                                served[i] = r
                                break
                    else:
                        served[i] = last
                    if p_slow is not None:
                        p_slow[i] = d.p_slow
                else:
                    admit(PRIMARY, o, off[i], size[i], inf, i, t)
                    issued[i] = 1
            bar.update(hi - lo)
    finally:
        bar.close()
    wall = time.perf_counter() - t_start
    decisions += sum(f.decisions for f in feeds)
    res = _result(model.name, "model", primary, np.frombuffer(served, np.int8), rep_lat, cost,
                  decisions, wall, model=model, counters=core.stats(), mode=mode)
    if mode != "reject":
        assert delay is not None
        res.latency_us, res.hedges = hedged(primary, replicas[0], res.latency_us,
                                            primary.reads & (res.served_by == 0), delay)
        res.hedge_after_us = float(delay)
    if p_slow is not None:
        res.p_slow = np.asarray(p_slow, np.float64)
    c = res.counters[PRIMARY]
    reads_decided = int(primary.reads.sum())
    slow = c.rejected + c.probes + c.capped + c.overruns
    res.predicted_slow_share = slow / reads_decided if reads_decided else 0.0
    res.lock_in = mode != "hedge" and res.predicted_slow_share >= LOCK_IN_SHARE
    if res.lock_in:
        res.notes.append(
            f"{model.name}: lock-in signature: it called {res.predicted_slow_share:.1%} of the "
            f"reads slow (rejected {float(res.rejected[primary.known_reads].mean()):.1%}, the "
            "rest held back by the reject cap and probes). A rejected read never reaches the "
            "device, so its queue drains into states training never saw and history features "
            "stop moving; offline evaluation admits every IO and never sees this feedback")
    if c.capped:
        res.notes.append(f"{model.name}: the reject cap ({states[0].max_reject_share:.1%} of "
                         f"predicted decisions) admitted {c.capped:,} predicted rejections")
    fails = c.fail_open
    if fails:
        res.notes.append(f"{model.name}: the predictor failed on {fails:,} reads, which were "
                         "admitted (fail-open)")
    if index_in(slo, states[0].thresholds_us) is None:
        res.notes.append(
            f"{model.name}: SLO {slo:g} µs is above every threshold the model was trained for "
            f"({', '.join(f'{t:g}' for t in states[0].thresholds_us)} µs), so the daemon admits "
            "every read without a prediction (deadline beyond the model); try --slo model")
    return res


def replica_latencies(primary: ReplayTrace, replicas: Sequence[Replica],
                      cost: int) -> list[np.ndarray]:
    """Per primary IO, replica j's latency for a read arriving at ``u + j·cost``."""
    rel = primary.cols.ts - primary.t0
    return [r.latency_at(rel + j * cost) for j, r in enumerate(replicas, start=1)]

