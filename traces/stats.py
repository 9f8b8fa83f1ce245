"""``mittd trace info``: the summary a storage engineer reads first.

Computed in one streaming pass with bounded memory: latency percentiles come
from a log-bucketed histogram whose buckets are 0.1 % wide (so a percentile is
within 0.1 % of the exact value, whatever the trace's length); IO sizes are
counted exactly (traces hold few distinct sizes). For the daemon's IO records, a
second pass over the decision columns adds what the daemon decided (``RecordSummary``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mittd.traces.records import D_REJECT, DECISIONS, iter_records
from mittd.traces.schema import OP_NAMES

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


class LogHistogram:
    """Counts of positive values in geometric buckets of relative width ``rel``.

    Values at or below ``floor`` share the first bucket; exact minimum, maximum,
    sum and count are kept beside the buckets.
    """

    def __init__(self, rel: float = 1e-3, floor: float = 1e-3, ceiling: float = 1e12) -> None:
        self.floor = floor
        self._log_base = math.log1p(rel)
        self.n_buckets = math.ceil(math.log(ceiling / floor) / self._log_base) + 2
        self.counts = np.zeros(self.n_buckets, dtype=np.int64)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, values: np.ndarray) -> None:
        v = values[~np.isnan(values)]
        if not v.size:
            return
        with np.errstate(over="ignore"):  # beyond the ceiling: clipped to the last bucket
            idx = np.floor(np.log(np.maximum(v, self.floor) / self.floor) / self._log_base)
        idx = np.clip(idx, 0, self.n_buckets - 1).astype(np.int64)
        self.counts += np.bincount(idx, minlength=self.n_buckets)
        self.count += int(v.size)
        self.total += float(v.sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    def percentile(self, q: float) -> float:
        """Value at percentile ``q`` (0..100): the bucket's geometric midpoint."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * self.count))
        bucket = int(np.searchsorted(np.cumsum(self.counts), rank))
        value = self.floor * math.exp((bucket + 0.5) * self._log_base)
        return min(max(value, self.min), self.max)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def merge(self, other: LogHistogram) -> None:
        """Fold another histogram (same bucket layout) into this one."""
        self.counts += other.counts
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)


@dataclass
class OpStats:
    """Per-op tallies: IO count, bytes and the latency histogram."""

    ios: int = 0
    bytes: int = 0
    latency: LogHistogram = field(default_factory=LogHistogram)


@dataclass
class TraceSummary:
    """Streaming accumulator for ``mittd trace info``."""

    ops: dict[str, OpStats] = field(default_factory=lambda: {n: OpStats() for n in OP_NAMES})
    sizes: Counter[int] = field(default_factory=Counter)
    devices: Counter[str] = field(default_factory=Counter)
    first_us: int | None = None
    last_us: int | None = None
    last_end_us: float | None = None
    unknown_latency: int = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        ts = batch.column("ts_issue_us").to_numpy()
        lat = batch.column("latency_us").to_numpy(zero_copy_only=False)
        size = batch.column("size").to_numpy()
        codes = batch.column("op").indices.to_numpy(zero_copy_only=False)
        lo, hi = int(ts.min()), int(ts.max())
        self.first_us = lo if self.first_us is None else min(self.first_us, lo)
        self.last_us = hi if self.last_us is None else max(self.last_us, hi)
        end = ts + np.nan_to_num(lat, nan=0.0)
        self.last_end_us = float(end.max()) if self.last_end_us is None else max(
            self.last_end_us, float(end.max())
        )
        self.unknown_latency += int(np.isnan(lat).sum())
        for code, name in enumerate(OP_NAMES):
            m = codes == code
            if not m.any():
                continue
            s = self.ops[name]
            s.ios += int(m.sum())
            s.bytes += int(size[m].sum())
            s.latency.add(lat[m])
        values, counts = np.unique(size, return_counts=True)
        self.sizes.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
        dev_counts = pc.value_counts(batch.column("device"))
        for item in dev_counts.to_pylist():
            self.devices[item["values"]] += item["counts"]

    @property
    def ios(self) -> int:
        return sum(s.ios for s in self.ops.values())

    def size_percentile(self, q: float) -> int:
        total = sum(self.sizes.values())
        rank = max(1, math.ceil(q / 100.0 * total))
        seen = 0
        for value in sorted(self.sizes):
            seen += self.sizes[value]
            if seen >= rank:
                return value
        return 0

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable summary (``--json``)."""
        n = self.ios
        duration_s = (
            ((self.last_us or 0) - (self.first_us or 0)) / 1e6 if n > 1 else 0.0
        )
        lat: dict[str, Any] = {}
        hists = {name: s.latency for name, s in self.ops.items()}
        overall = LogHistogram()
        for h in hists.values():
            overall.merge(h)
        for name, h in (("all", overall), *hists.items()):
            if h.count:
                lat[name] = {
                    "count": h.count,
                    "mean": h.mean,
                    **{f"p{q:g}": h.percentile(q) for q in PERCENTILES},
                    "min": h.min,
                    "max": h.max,
                }
        return {
            "ios": n,
            "reads": self.ops["read"].ios,
            "writes": self.ops["write"].ios,
            "other": self.ops["other"].ios,
            "bytes_read": self.ops["read"].bytes,
            "bytes_written": self.ops["write"].bytes,
            "first_issue_us": self.first_us,
            "last_issue_us": self.last_us,
            "duration_s": duration_s,
            "iops": n / duration_s if duration_s > 0 else math.nan,
            "size_bytes": {
                **{f"p{q:g}": self.size_percentile(q) for q in PERCENTILES},
                "max": max(self.sizes) if self.sizes else 0,
                "distinct": len(self.sizes),
            },
            "latency_us": lat,
            "unknown_latency": self.unknown_latency,
            "devices": dict(self.devices.most_common(20)),
            "distinct_devices": len(self.devices),
        }


def summarise(
    batches: Iterable[pa.RecordBatch], on_batch: Callable[[], None] | None = None
) -> TraceSummary:
    summary = TraceSummary()
    for batch in batches:
        summary.add(batch)
        if on_batch:
            on_batch()
    return summary


# -- human rendering -----------------------------------------------------------

def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if not math.isfinite(x) or abs(x) >= 1e10:  # absurd but valid: keep the column width
        return f"{x:.3g}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}"


def render(info: dict[str, Any], title: str) -> str:
    """The table printed by ``mittd trace info``."""
    n = info["ios"]
    r, w = info["reads"], info["writes"]
    rw = f"{100 * r / (r + w):.0f}:{100 * w / (r + w):.0f}" if r + w else "-"
    devs = info["devices"]
    dev_text = ", ".join(f"{d} ({c:,})" for d, c in list(devs.items())[:5])
    if info["distinct_devices"] > 5:
        dev_text += f", … {info['distinct_devices']} devices in all"
    dur = info["duration_s"]
    iops = info["iops"]
    out = [
        title,
        f"  devices    {dev_text}",
        f"  IOs        {n:,}   reads {r:,} · writes {w:,} · other {info['other']:,}"
        f"   R:W {rw}",
        f"  duration   {dur:,.3f} s   IOPS {_num(iops)}",
        f"  bytes      read {human_bytes(info['bytes_read'])} · written "
        f"{human_bytes(info['bytes_written'])}"
        + (
            f"   ({human_bytes((info['bytes_read'] + info['bytes_written']) / dur)}/s)"
            if dur > 0 else ""
        ),
    ]
    sz = info["size_bytes"]
    out.append(
        "  size       "
        + "  ".join(f"p{q:g} {human_bytes(sz[f'p{q:g}'])}" for q in PERCENTILES)
        + f"  max {human_bytes(sz['max'])}"
    )
    lat = info["latency_us"]
    if not lat:
        out.append("  latency    not recorded in this trace (workload only: replay it "
                   "with 'mittd collect --replay' to measure)")
        return "\n".join(out)
    cols = ["count", "mean", *[f"p{q:g}" for q in PERCENTILES], "max"]
    out.append("")
    out.append("  latency µs " + "".join(f"{c:>11}" for c in cols))
    for name, row in lat.items():
        cells = [f"{row['count']:>11,}"] + [f"{_num(row[c]):>11}" for c in cols[1:]]
        out.append(f"  {name:<10} " + "".join(cells))
    if info["unknown_latency"]:
        out.append(f"  ({info['unknown_latency']:,} IOs without a latency)")
    return "\n".join(out)


# -- IO records: what the daemon decided -----------------------------------------------------

RECORD_SUMMARY_COLUMNS: tuple[str, ...] = ("ts_issue_us", "p_slow", "decision", "reason",
                                           "model_sha")
SHA_PREFIX = 12  # as Bundle.version_id shows a model


def _value_counts(column: pa.Array, into: Counter[str]) -> None:
    if pa.types.is_dictionary(column.type):
        column = column.cast(pa.string())
    for item in pc.value_counts(column).to_pylist():
        into[item["values"]] += item["counts"]


@dataclass
class RecordSummary:
    """Streaming accumulator of the records section of ``mittd trace info``: every IO
    the daemon decided (rejected ones too, which the trace view leaves out), how, why
    and with which model."""

    segments: int = 0
    rows: int = 0
    predicted: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    first_us: int | None = None
    last_us: int | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self.rows += batch.num_rows
        ts = batch.column("ts_issue_us").to_numpy()
        lo, hi = int(ts.min()), int(ts.max())
        self.first_us = lo if self.first_us is None else min(self.first_us, lo)
        self.last_us = hi if self.last_us is None else max(self.last_us, hi)
        p = batch.column("p_slow").to_numpy(zero_copy_only=False)
        self.predicted += int(np.isfinite(p).sum())
        _value_counts(batch.column("decision"), self.decisions)
        _value_counts(batch.column("reason"), self.reasons)
        models: Counter[str] = Counter()
        _value_counts(batch.column("model_sha"), models)
        for sha, n in models.items():
            self.models[sha[:SHA_PREFIX] if sha else "(none)"] += n

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable records section (``--json`` key ``records``)."""
        n = self.rows
        names = [*DECISIONS, *sorted(set(self.decisions) - set(DECISIONS))]
        span_s = ((self.last_us or 0) - (self.first_us or 0)) / 1e6 if n else 0.0
        return {
            "segments": self.segments,
            "rows": n,
            "reached_device": n - self.decisions[DECISIONS[D_REJECT]],
            "decisions": {d: {"count": self.decisions[d],
                              "share": self.decisions[d] / n if n else math.nan}
                          for d in names},
            "reasons": dict(self.reasons.most_common()),
            "models": dict(self.models.most_common()),
            "predicted": self.predicted,
            "predicted_share": self.predicted / n if n else math.nan,
            "first_issue_us": self.first_us,
            "last_issue_us": self.last_us,
            "span_s": span_s,
        }


def summarise_records(paths: Sequence[Path]) -> RecordSummary:
    """One pass over the decision columns of record segments (bounded memory)."""
    summary = RecordSummary(segments=len(paths))
    for batch in iter_records(paths, RECORD_SUMMARY_COLUMNS):
        summary.add(batch)
    return summary


def _utc(us: int) -> str:
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def render_records(rec: dict[str, Any]) -> str:
    """The records section printed by ``mittd trace info`` below the trace summary."""
    def share(d: dict[str, Any]) -> str:
        return f"{d['count']:,} ({d['share']:.1%})" if rec["rows"] else "0"

    out = [
        "",
        f"  records    {rec['segments']:,} segment(s) · {rec['rows']:,} IOs decided · "
        f"{rec['reached_device']:,} reached the device",
        "  decisions  " + " · ".join(f"{d} {share(v)}" for d, v in rec["decisions"].items()),
        "  reasons    " + (" · ".join(f"{r} {c:,}" for r, c in rec["reasons"].items()) or "-"),
        "  models     " + (" · ".join(f"{m} {c:,}" for m, c in rec["models"].items()) or "-"),
    ]
    if rec["rows"]:
        out.append(f"  predicted  {rec['predicted_share']:.1%} of the IOs decided "
                   f"({rec['predicted']:,} with a P(slow))")
        out.append(f"  span       {_utc(rec['first_issue_us'])} → {_utc(rec['last_issue_us'])}"
                   f" UTC ({rec['span_s']:,.3f} s)")
    return "\n".join(out)
