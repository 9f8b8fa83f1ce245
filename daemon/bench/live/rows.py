"""From the client records of ``mittd bench live`` to its result rows: per-mode latency
summaries, per-phase tails, the CDF points, and mittd's standing against the others."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mittd.daemon.bench.live.modes import MODES, Schedule

# quantile points kept for the CDF (JSON and PNG): the body evenly, the tail in log steps
QS = np.unique(np.concatenate([np.linspace(0.0, 1.0, 401), 1.0 - np.logspace(-5, -2, 61)]))
PERCENTILES = (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p99_9", 99.9))


def _summary(lat_us: np.ndarray) -> dict[str, float]:
    if len(lat_us) == 0:
        return {"mean_us": math.nan, **{f"{k}_us": math.nan for k, _ in PERCENTILES},
                "max_us": math.nan}
    out = {"mean_us": float(lat_us.mean())}
    for name, q in PERCENTILES:
        out[f"{name}_us"] = float(np.percentile(lat_us, q))
    out["max_us"] = float(lat_us.max())
    return out


def _p99(x: np.ndarray) -> float | None:
    return float(np.percentile(x, 99)) if len(x) >= 100 else None


def mode_rows(rec: np.ndarray, stats: dict[int, dict[str, int]], seconds: dict[int, float],
              schedule: Schedule) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for m, name in enumerate(MODES):
        r = rec[rec[:, 0] == m]
        lat = r[:, 2] / 1e3
        st = stats.get(m, {})
        reads = len(r)
        busy = (schedule.busy_matrix(r[:, 1] / 1e9) if schedule.busy > 0 and reads
                else np.zeros((reads, schedule.replicas), bool))
        prim_busy = busy[np.arange(reads), r[:, 3]] if reads else np.zeros(0, bool)
        any_busy = busy.any(axis=1)
        phases = {"primary_busy": prim_busy, "other_busy": any_busy & ~prim_busy,
                  "all_quiet": ~any_busy}
        fo = st.get("ebusy_failovers", 0) + st.get("unavailable_failovers", 0)
        hedges, fallbacks = st.get("hedges", 0), st.get("fallbacks", 0)
        extra_rpcs = fo + hedges + fallbacks
        extra_ios = hedges + fallbacks  # a rejected read does no device IO
        secs = seconds.get(m, 0.0)
        rows[name] = {
            "reads": reads,
            "seconds": secs,
            "reads_per_s": reads / secs if secs else 0.0,
            **_summary(lat),
            "failovers": fo,
            "failover_rate": fo / reads if reads else 0.0,
            "hedges": hedges,
            "fallbacks": fallbacks,
            "extra_rpcs": extra_rpcs,
            "extra_rpc_fraction": extra_rpcs / reads if reads else 0.0,
            "extra_device_ios": extra_ios,
            "extra_io_fraction": extra_ios / reads if reads else 0.0,
            "off_primary_fraction": float((r[:, 4] != r[:, 3]).mean()) if reads else 0.0,
            "phases": {k: {"reads": int(v.sum()),
                           "p50_us": float(np.median(lat[v])) if v.any() else None,
                           "p99_us": _p99(lat[v])} for k, v in phases.items()},
            "cdf_us": (np.quantile(lat, QS).round(2).tolist() if reads else []),
        }
    return rows


def reads_line(rows: list[tuple[int, int, int, int, int, int]]) -> str:
    if not rows:
        return "0 reads"
    a = np.asarray(rows, np.int64)
    lat = a[:, 2] / 1e3
    fo = int((a[:, 5] > 1).sum())
    return (f"{len(a):,} reads, p50 {np.percentile(lat, 50):,.0f} µs, "
            f"p99 {np.percentile(lat, 99):,.0f} µs, >1 RPC {fo / len(a):.1%}")


def comparison(modes: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """p99 and mean of mittd relative to none and hedge (negative = mittd is faster)."""
    out: dict[str, float | None] = {}
    m = modes["mittd"]
    for other in ("none", "hedge"):
        for key in ("p99_us", "p99_9_us", "mean_us"):
            o = modes[other][key]
            out[f"{key.removesuffix('_us')}_vs_{other}"] = (
                (m[key] - o) / o if o and math.isfinite(o) and math.isfinite(m[key]) else None)
    return out
