"""The replayer's inputs: a single-device labelled trace in issue order, and the
replicas a rejected read fails over to (see ``mittd.daemon.replay`` for the semantics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mittd.predictor.features import TraceColumns, trace_columns
from mittd.traces.registry import open_trace
from mittd.traces.schema import OP_READ

__all__ = ["CORRELATED", "ReplayError", "ReplayTrace", "Replica", "load_trace", "replica_notes",
           "self_replica", "slow_correlation", "time_window", "trace_from_table",
           "trace_replica"]


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


def time_window(trace: ReplayTrace, lo_us: int | None, hi_us: int | None,
                what: str = "window") -> ReplayTrace:
    """The IOs of ``trace`` issued in ``[lo_us, hi_us)`` (absolute µs; None: open),
    e.g. the validation window ``mittd train`` held out; checked as a trace is."""
    ts = trace.cols.ts
    keep = np.ones(len(ts), bool)
    if lo_us is not None:
        keep &= ts >= lo_us
    if hi_us is not None:
        keep &= ts < hi_us
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        raise ReplayError(f"{trace.path}: the {what} holds no IOs")
    tr = ReplayTrace(trace.path, trace.cols.take(idx))
    if not tr.known_reads.any():
        raise ReplayError(f"{trace.path}: the {what} holds no read with a known latency")
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


#: Replicas whose slow periods coincide with the primary's this much (Pearson r of
#: the share of slow reads per 10 ms) get a warning: failover there helps little.
CORRELATED = 0.3


def slow_correlation(primary: ReplayTrace, replica: Replica, bin_us: int = 10_000) -> float:
    """How much the replica is slow when the primary is: the correlation, over time
    bins, of the share of each one's reads slower than the primary's p95 (the
    replica looked up at the primary's relative times, as failovers are).
    NaN when either side is constant."""
    known = primary.known_reads
    rel = (primary.cols.ts - primary.t0)[known]
    lat = primary.cols.lat[known]
    cut = float(np.percentile(lat, 95.0))
    slow_p = (lat > cut).astype(np.float64)
    slow_r = (replica.latency_at(rel) > cut).astype(np.float64)
    b = (rel // bin_us).astype(np.int64)
    n = np.bincount(b)
    keep = n > 0
    sp = np.bincount(b, slow_p)[keep] / n[keep]
    sr = np.bincount(b, slow_r)[keep] / n[keep]
    if sp.std() == 0.0 or sr.std() == 0.0:
        return float("nan")
    return float(np.corrcoef(sp, sr)[0, 1])


def replica_notes(primary: ReplayTrace, replicas: list[Replica], given: bool) -> list[str]:
    """Warnings on what the replicas can tell: a time-shifted self, correlated slowness."""
    notes = []
    if not given:
        notes.append(
            f"replica: the only replica is the primary trace itself, shifted by "
            f"{replicas[0].shift_us / 1e6:,.3f} s; an independent recording of the same "
            "workload (--replica) is the honest replica")
    for r in replicas:
        rho = slow_correlation(primary, r)
        if rho >= CORRELATED:
            notes.append(
                f"replica {r.name}: slow when the primary is (correlation {rho:.2f} of their "
                "slow-read shares per 10 ms"
                + (": the shift lines up periodic bursts" if not given else "")
                + "); failover and hedging can gain little there")
    return notes

