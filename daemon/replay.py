"""Offline replay: what the daemon would have done on a recorded trace (``mittd replay``).

The replayer drives **the daemon's own admission core** (``AdmissionCore`` and
``DeviceState`` from ``mittd.daemon.admission``) over a labelled block trace on a
virtual clock, and compares the read latencies the application would have seen
under several policies. Nothing here re-implements featurising or deciding.

Semantics
---------
*Virtual clock.* The primary trace is walked in issue order (stable sort on
``ts_issue_us``); ``now_us`` of every call is the IO's own ``ts_issue_us``. The
prediction takes no virtual time, and the core's prediction budget is unlimited
(``predict_budget_us=inf``): wall-clock overruns on the replaying machine must not
change the outcome.

*What is decided.* Reads only, as in MittOS: a rejected read can be served by
another replica, a write must reach every replica anyway. Every read is
``admit``-ed with ``deadline_us`` = the SLO. Writes (and ``other`` ops) are
issued into the tracker through the same ``admit`` with an infinite deadline
(beyond every trained threshold, so the core admits them without a prediction,
and counts them under ``beyond_model``): the pending state is what the live
daemon would see.

*Completions.* An admitted IO with latency ``L`` completes at ``ts + ceil(L)``
(``mittd.predictor.tracker.completion_times_us``: never, for an unknown latency
or one beyond the tracker timeout). Completions are fed to ``complete`` in order
of (completion time, issue order) before any later issue at a time ``>=`` theirs
— the tracker's offline rule. A rejected read is never issued, so it never
becomes pending. Consequence, checked by the tests: with a policy that admits
everything, the features the core computes equal ``featuriser.encode_trace`` of
the trace row for row.

*Replicas and failover.* A read rejected with EBUSY fails over to the next
replica; each failover adds ``failover_cost_us`` (default 10 µs: one fast reject
plus a re-send on a LAN). Replica ``j`` (1-based) therefore receives the read at
``t + j·cost``, and its latency there is the latency, in replica ``j``'s own
trace, of the read issued nearest at or after the same *relative* time (time
since each trace's first IO; LinnOS's method). A replica trace shorter than the
primary is used circularly. The replicas' latencies are what they recorded:
extra load from failed-over reads is not modelled.

- With no ``--replica``, the one replica is the primary trace itself shifted by
  half its duration, circularly: relative time ``u`` on the primary maps to
  ``(u + D/2) mod D`` on the replica (``D`` = last − first issue time + 1 µs), so
  a slow period of the primary meets an unrelated period of its "twin".
- With several replicas, every replica but the last also decides: it has its own
  ``DeviceState`` in the same core (same model, engine shared) whose tracker is
  fed, lazily up to each failover's arrival time, with that replica trace's own
  IOs (all admitted: they are the replica's background load, issued with an
  infinite deadline) and with the failed-over reads it admits (completing at
  arrival + ceil(latency)). Own IOs issued at the arrival time come first.
- The last replica never rejects (the client would otherwise have nowhere to go).

*Probes.* As in the daemon (``server.probe_after``, default 32): after that many
predicted rejections in a row on a replica, the next one is admitted as a probe,
so a model fed by latency history cannot lock itself into rejecting everything
(``--probe-after 0`` turns it off).

*Policies.*

- ``baseline``: no rejection; every read gets its recorded latency.
- one row per model (``--model``; named by the bundle's file stem): the core
  decides as above; latency = primary latency if admitted, else
  ``j·cost + latency of replica j`` where ``j`` is the replica that admitted it.
- ``hedge`` (Dean & Barroso): no rejection; a duplicate goes to the first replica
  when the primary has not answered after ``h`` = the p95 of the primary's read
  latencies; latency = ``min(L, h + replica latency at u + h)``; one extra IO per
  read with ``L > h``.
- ``random``: rejects each read at each non-last replica (the primary included)
  independently with probability ``r`` = the reject rate of the best model row
  (lowest p99; the oracle's reject rate when no model ran); seeded.
- ``oracle``: rejects exactly the reads whose primary latency exceeds the SLO
  (and, with several replicas, an intermediate replica rejects exactly when its
  own latency exceeds the SLO).

Metrics are over reads whose primary latency is known; see
``mittd.daemon.replay_report``.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from mittd.daemon.admission import OP_READ, AdmissionCore, DeviceState
from mittd.predictor.bundle import Bundle, load_bundle
from mittd.predictor.engines import Engine, make_engine
from mittd.predictor.features import TraceColumns, make_featuriser, trace_columns
from mittd.predictor.graph import GraphError
from mittd.predictor.thresholds import check_thresholds, index_in
from mittd.predictor.tracker import NEVER, completion_times_us
from mittd.traces.registry import open_trace
from mittd.training.labels import parse_slo

__all__ = [
    "DEFAULT_FAILOVER_COST_US",
    "POLICIES",
    "PolicyResult",
    "Replay",
    "ReplayError",
    "ReplayTrace",
    "Replica",
    "load_model",
    "load_trace",
    "parse_policies",
    "resolve_slo",
    "run_replay",
    "self_replica",
    "trace_from_table",
    "trace_replica",
]

DEFAULT_FAILOVER_COST_US = 10
DEFAULT_PROBE_AFTER = 32  # the daemon's default (server.probe_after)
POLICIES = ("baseline", "models", "hedge", "random", "oracle")
PRIMARY = "primary"
CHUNK = 1 << 15  # IOs between progress-bar updates
HEDGE_PERCENTILE = 95.0


class ReplayError(Exception):
    """A replay cannot run as asked; the message is one line for the user."""


# -- traces ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayTrace:
    """A single-device labelled trace as numpy columns in issue order."""

    path: str
    cols: TraceColumns

    @property
    def n(self) -> int:
        return len(self.cols.ts)

    @property
    def t0(self) -> int:
        return int(self.cols.ts[0])

    @property
    def period_us(self) -> int:
        """Duration used for circular time: last − first issue time + 1 µs."""
        return int(self.cols.ts[-1] - self.cols.ts[0]) + 1

    @property
    def reads(self) -> np.ndarray:
        return self.cols.op == OP_READ

    @property
    def known_reads(self) -> np.ndarray:
        """Reads whose latency is known: the ones the metrics are over."""
        return self.reads & np.isfinite(self.cols.lat)


def load_trace(path: str | Path, fmt: str = "auto", limit: int | None = None,
               what: str = "trace", start: float = 0.0) -> ReplayTrace:
    """Read a labelled single-device trace (any format ``open_trace`` reads)."""
    return trace_from_table(open_trace(path, fmt).table(), str(path), limit, what, start)


def trace_from_table(table: pa.Table | pa.RecordBatch, path: str = "<table>",
                     limit: int | None = None, what: str = "trace",
                     start: float = 0.0) -> ReplayTrace:
    """A canonical trace table as a :class:`ReplayTrace` (checked: one device, reads
    with known latencies). ``start`` (a fraction in [0, 1)) skips that share of the
    IOs in issue order first — e.g. 0.7 keeps the test split that ``mittd train``
    held out (it trains on the first 70 %)."""
    if not 0.0 <= start < 1.0:
        raise ReplayError(f"--from must be a fraction in [0, 1), got {start}")
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if table.num_rows == 0:
        raise ReplayError(f"{path}: the {what} holds no IOs")
    cols = trace_columns(table)
    if cols.device is not None:
        names = sorted(set(table.column("device").to_pylist()))
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise ReplayError(f"{path}: the {what} holds {len(names)} devices ({shown}); replay "
                          "takes one device's trace")
    if start > 0.0:
        n = len(cols.ts)
        cols = cols.take(np.arange(min(int(start * n), n - 1), n))
    if limit is not None:
        if limit < 1:
            raise ReplayError(f"--limit must be >= 1, got {limit}")
        cols = cols.take(np.arange(min(limit, len(cols.ts))))
    tr = ReplayTrace(str(path), cols)
    reads = tr.reads
    if not reads.any():
        raise ReplayError(f"{path}: the {what} holds no reads ({tr.n:,} IOs); replay decides "
                          "reads")
    if not tr.known_reads.any():
        raise ReplayError(f"{path}: no read in the {what} has a known latency; replay needs a "
                          "labelled trace (fio latency log, blkparse, MSR, canonical Parquet)")
    return tr


@dataclass
class Replica:
    """Where a failed-over read goes: a trace, looked up at a relative time.

    Relative time ``u`` on the primary (µs since its first IO) is ``(u + shift_us)
    mod period_us`` on this replica's trace.
    """

    name: str
    trace: ReplayTrace
    shift_us: int = 0
    _rel: np.ndarray = field(init=False, repr=False)
    _lat: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        known = self.trace.known_reads
        self._rel = (self.trace.cols.ts[known] - self.trace.t0).astype(np.int64)
        self._lat = self.trace.cols.lat[known].astype(np.float64)

    @property
    def period_us(self) -> int:
        return self.trace.period_us

    def latency_at(self, rel_us: np.ndarray) -> np.ndarray:
        """Latency of this replica's read issued nearest at/after each relative time
        (circular: past its last read, its first read)."""
        x = (np.asarray(rel_us, np.int64) + self.shift_us) % self.period_us
        idx = np.searchsorted(self._rel, x, side="left")
        idx[idx == self._rel.size] = 0
        return self._lat[idx]

    def stream(self, t0: int, horizon_us: int) -> TraceColumns:
        """This replica's own IOs on the primary's timeline ``[t0, t0 + horizon_us]``
        (repeated circularly), in issue order: its background load."""
        c = self.trace.cols
        rel = c.ts - self.trace.t0
        p = self.period_us
        parts = []
        for m in range((horizon_us + self.shift_us) // p + 2):
            u = rel - self.shift_us + m * p
            idx = np.flatnonzero((u >= 0) & (u <= horizon_us))
            if idx.size:
                parts.append((idx, u[idx]))
        if not parts:
            e = np.zeros(0, np.int64)
            return TraceColumns(e, e.astype(np.float64), e.astype(np.int8), e, e, None)
        idx = np.concatenate([a for a, _ in parts])
        ts = np.concatenate([b for _, b in parts]) + t0
        sub = c.take(idx)
        return sub._replace(ts=ts.astype(np.int64))

    def describe(self) -> dict[str, Any]:
        return {"trace": self.name, "shift_us": self.shift_us, "period_us": self.period_us,
                "ios": self.trace.n, "reads_with_latency": int(self._rel.size)}


def self_replica(primary: ReplayTrace) -> Replica:
    """The default replica: the primary shifted by half its duration, circularly."""
    shift = primary.period_us // 2
    return Replica(f"{primary.path} (itself, shifted {shift:,} µs)", primary, shift)


def trace_replica(path: str | Path, fmt: str = "auto") -> Replica:
    return Replica(str(path), load_trace(path, fmt, what="replica trace"), 0)


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
    """Load and check a bundle (featuriser, thresholds) before any replay starts;
    ``path@P`` replays it rejecting when P(slow) > P (its own operating point)."""
    file, cut = split_operating_point(path)
    default = Path(file).stem + (f"@{cut:g}" if cut is not None else "")
    m = Model(name or default, file, load_bundle(file), cut)
    check_model(m)
    return m


def check_model(m: Model) -> None:
    """Refuse, in one line, a bundle the daemon could not serve (it would fail open)."""
    b = m.bundle
    try:
        feat = make_featuriser(b.featuriser)
        check_thresholds(b.latency_thresholds_us())
    except (ValueError, KeyError, TypeError) as e:
        raise ReplayError(f"{m.path}: cannot serve this model: {e}") from None
    if feat.dim != b.graph.input_dim:
        raise ReplayError(f"{m.path}: model/featuriser mismatch: the {feat.name} featuriser "
                          f"gives {feat.dim} inputs, the model takes {b.graph.input_dim}")
    if not getattr(feat, "fitted", True):
        raise ReplayError(f"{m.path}: the {feat.name} featuriser has no fitted bounds")


def unique_names(paths: Sequence[str | Path]) -> list[str]:
    """File stems, made unique (``pl``, ``pl#2``) and distinct from the policy names."""
    out: list[str] = []
    for p in paths:
        file, cut = split_operating_point(p)
        base = (Path(file).stem or file) + (f"@{cut:g}" if cut is not None else "")
        name, k = base, 1
        while name in out or name in POLICIES:
            k += 1
            name = f"{base}#{k}"
        out.append(name)
    return out


def parse_policies(text: str) -> list[str]:
    items = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in POLICIES]
    if bad or not items:
        raise ReplayError(f"--policy: unknown policy {', '.join(map(repr, bad)) or repr(text)}; "
                          f"use a comma-separated list of: {', '.join(POLICIES)}")
    return list(dict.fromkeys(items))


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
    counters: dict[str, Any] | None = None
    p_slow: np.ndarray | None = None  # per IO (NaN: no prediction), when recorded
    notes: list[str] = field(default_factory=list)

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
        if d[0] and math.isfinite(lat) and lat < self.timeout:
            c = t + (math.ceil(lat) if lat > 0.0 else 0)
            heapq.heappush(self.heap, (c, self.seq, rid, lat))
            self.seq += 1
        return bool(d[0])


def make_states(model: Model, n_devices: int, engine: str | Engine, slo_us: float,
                decision_threshold: float | None) -> list[DeviceState]:
    """One DeviceState per deciding device, sharing one engine (one thread replays)."""
    b = model.bundle
    try:
        eng = engine if isinstance(engine, Engine) else make_engine(engine, b.graph, b.params)
        return [DeviceState(b, eng, slo_us, decision_threshold) for _ in range(n_devices)]
    except (ValueError, GraphError, KeyError, TypeError) as e:
        raise ReplayError(f"{model.path}: cannot serve this model: {e}") from None


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
) -> PolicyResult:
    """Drive a fresh AdmissionCore over ``primary`` (see the module docstring)."""
    if not replicas:
        raise ValueError("at least one replica is needed")
    cost = int(failover_cost_us)
    if rep_lat is None:
        rep_lat = replica_latencies(primary, replicas, cost)
    k = len(replicas)
    states = make_states(model, k, engine, slo_us, decision_threshold)
    aliases = [PRIMARY] + [f"replica{j}" for j in range(1, k)]
    core = AdmissionCore(dict(zip(aliases, states, strict=True)), predict_budget_us=math.inf,
                         probe_after=probe_after)
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
                    if d[0]:
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
                        p_slow[i] = d[1]
                else:
                    admit(PRIMARY, o, off[i], size[i], inf, i, t)
                    issued[i] = 1
            bar.update(hi - lo)
    finally:
        bar.close()
    wall = time.perf_counter() - t_start
    decisions += sum(f.decisions for f in feeds)
    res = _result(model.name, "model", primary, np.frombuffer(served, np.int8), rep_lat, cost,
                  decisions, wall, model=model, counters=core.stats())
    if p_slow is not None:
        res.p_slow = np.asarray(p_slow, np.float64)
    known = primary.known_reads
    share = float(res.rejected[known].mean())
    if share >= 0.9:
        res.notes.append(
            f"{model.name}: rejects {share:.1%} of reads. A rejected read never completes, so "
            "history features (e.g. LinnOS's last read latencies) stop moving and a model "
            "that once says 'slow' can keep saying it (offline evaluation admits every IO "
            "and never sees this feedback)")
    fails = res.counters[PRIMARY]["fail_open"]
    if fails:
        res.notes.append(f"{model.name}: the predictor failed on {fails:,} reads, which were "
                         "admitted (fail-open)")
    if index_in(slo, states[0].thresholds_us) is None:
        res.notes.append(
            f"{model.name}: SLO {slo:g} µs is above every threshold the model was trained for "
            f"({', '.join(f'{t:g}' for t in states[0].thresholds_us)} µs), so the daemon admits "
            "every read without a prediction (deadline beyond the model); try --slo model")
    return res


# -- the other policies (vectorised) -----------------------------------------------------------


def replica_latencies(primary: ReplayTrace, replicas: Sequence[Replica],
                      cost: int) -> list[np.ndarray]:
    """Per primary IO, replica j's latency for a read arriving at ``u + j·cost``."""
    rel = primary.cols.ts - primary.t0
    return [r.latency_at(rel + j * cost) for j, r in enumerate(replicas, start=1)]


def replay_baseline(primary: ReplayTrace, rep_lat: Sequence[np.ndarray], cost: int
                    ) -> PolicyResult:
    t0 = time.perf_counter()
    served = np.zeros(primary.n, np.int8)
    return _result("baseline", "baseline", primary, served, rep_lat, cost, 0,
                   time.perf_counter() - t0)


def replay_oracle(primary: ReplayTrace, rep_lat: Sequence[np.ndarray], cost: int,
                  slo_us: float) -> PolicyResult:
    t0 = time.perf_counter()
    k = len(rep_lat)
    served = np.zeros(primary.n, np.int8)
    waiting = primary.reads & (primary.cols.lat > slo_us)
    decisions = int(primary.reads.sum())
    for j in range(1, k):
        decisions += int(waiting.sum())
        ok = waiting & (rep_lat[j - 1] <= slo_us)
        served[ok] = j
        waiting &= ~ok
    served[waiting] = k
    return _result("oracle", "oracle", primary, served, rep_lat, cost, decisions,
                   time.perf_counter() - t0)


def replay_random(primary: ReplayTrace, rep_lat: Sequence[np.ndarray], cost: int,
                  rate: float, seed: int) -> PolicyResult:
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    k = len(rep_lat)
    served = np.zeros(primary.n, np.int8)
    reads = np.flatnonzero(primary.reads)
    decisions = int(reads.size)
    waiting = _pick(rng, reads, rate)  # exactly round(rate * arrivals) rejects per hop
    for j in range(1, k):
        decisions += int(waiting.size)
        rejected = _pick(rng, waiting, rate)
        served[np.setdiff1d(waiting, rejected, assume_unique=True)] = j
        waiting = rejected
    served[waiting] = k
    return _result("random", "random", primary, served, rep_lat, cost, decisions,
                   time.perf_counter() - t0)


def _pick(rng: np.random.Generator, idx: np.ndarray, rate: float) -> np.ndarray:
    n = round(rate * idx.size)
    return np.sort(rng.choice(idx, size=n, replace=False)) if n else idx[:0]


def replay_hedge(primary: ReplayTrace, replica: Replica) -> PolicyResult:
    t0 = time.perf_counter()
    lat = primary.cols.lat
    h = hedge_delay_us(primary)
    rel = primary.cols.ts - primary.t0
    hedged = primary.reads & (lat > h)
    out = lat.copy()
    out[hedged] = np.minimum(lat[hedged], h + replica.latency_at(rel[hedged] + round(h)))
    served = np.zeros(primary.n, np.int8)
    res = PolicyResult("hedge", "hedge", out, served > 0, served, 0,
                       int((hedged & primary.known_reads).sum()), 0, time.perf_counter() - t0)
    res.notes.append(f"hedge: duplicate to {replica.name} after {h:.1f} µs (p95 of the "
                     "primary's read latencies)")
    return res


def hedge_delay_us(primary: ReplayTrace) -> float:
    return float(np.percentile(primary.cols.lat[primary.known_reads], HEDGE_PERCENTILE))


# -- one run -------------------------------------------------------------------------------------


@dataclass
class Replay:
    """A finished replay: inputs, the SLO and one result per policy (report order)."""

    primary: ReplayTrace
    replicas: list[Replica]
    slo_text: str
    slo_us: float
    failover_cost_us: int
    engine: str
    seed: int
    decision_threshold: float | None
    results: list[PolicyResult]
    random_rate: float | None = None
    random_rate_from: str | None = None
    notes: list[str] = field(default_factory=list)

    def get(self, name: str) -> PolicyResult | None:
        return next((r for r in self.results if r.name == name), None)


def best_model(results: Sequence[PolicyResult], primary: ReplayTrace) -> PolicyResult | None:
    """The model row with the lowest read p99 (then the lowest mean)."""
    known = primary.known_reads
    rows = [r for r in results if r.kind == "model"]
    if not rows:
        return None
    return min(rows, key=lambda r: (float(np.percentile(r.latency_us[known], 99.0)),
                                    float(r.latency_us[known].mean())))


def run_replay(
    primary: ReplayTrace,
    replicas: Sequence[Replica],
    models: Sequence[Model],
    policies: Sequence[str],
    slo_text: str,
    *,
    failover_cost_us: int = DEFAULT_FAILOVER_COST_US,
    engine: str = "auto",
    decision_threshold: float | None = None,
    seed: int = 0,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
    probe_after: int = DEFAULT_PROBE_AFTER,
) -> Replay:
    """Replay every requested policy; results follow the order of ``policies``
    (``models`` expands to one row per model, in the order given)."""
    if failover_cost_us < 0:
        raise ReplayError(f"--failover-cost-us must be >= 0, got {failover_cost_us}")
    if probe_after < 0:
        raise ReplayError(f"--probe-after must be >= 0, got {probe_after}")
    if decision_threshold is not None and not 0.0 <= decision_threshold <= 1.0:
        raise ReplayError(f"--decision-threshold must be in [0, 1], got {decision_threshold}")
    if "models" in policies and not models:
        raise ReplayError("the 'models' policy needs at least one --model BUNDLE "
                          "(or leave 'models' out of --policy)")
    reps = list(replicas) or [self_replica(primary)]
    slo = resolve_slo(slo_text, primary, models)
    cost = int(failover_cost_us)
    rep_lat = replica_latencies(primary, reps, cost)
    done: dict[str, PolicyResult] = {}
    if "models" in policies:
        for m in models:
            if say:
                say(f"replaying {m.name} ({m.bundle.version_id}) over {primary.n:,} IOs")
            done[m.name] = replay_model(
                primary, reps, m, slo, engine=engine, failover_cost_us=cost,
                decision_threshold=(decision_threshold if m.decision_threshold is None
                                    else m.decision_threshold),
                rep_lat=rep_lat, progress=progress,
                probe_after=probe_after)
    if "baseline" in policies:
        done["baseline"] = replay_baseline(primary, rep_lat, cost)
    if "hedge" in policies:
        done["hedge"] = replay_hedge(primary, reps[0])
    oracle = replay_oracle(primary, rep_lat, cost, slo)
    if "oracle" in policies:
        done["oracle"] = oracle
    rate = rate_from = None
    if "random" in policies:
        best = best_model(list(done.values()), primary)
        src = best or oracle
        known = primary.known_reads
        rate = float(src.rejected[known].mean())
        rate_from = src.name
        done["random"] = replay_random(primary, rep_lat, cost, rate, seed)
        done["random"].notes.append(
            f"random: rejects with p = {rate:.4f}, the reject rate of {rate_from} "
            f"({'best model by p99' if best else 'no model ran: the oracle'}), seed {seed}")
    order: list[str] = []
    for p in policies:
        order += [m.name for m in models] if p == "models" else [p]
    results = [done[n] for n in order if n in done]
    notes = [n for r in results for n in r.notes]
    return Replay(primary, reps, slo_text, slo, cost, engine, seed, decision_threshold, results,
                  rate, rate_from, notes)
