"""From the client records of ``mittd bench live`` to its result rows: per-mode latency
summaries, costs (extra IOs, CPU, decision time), per-phase tails, the CDF points, and
mittd's standing against the others and the issue's targets."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mittd.daemon.bench.live.modes import LATE_NS, MODES, Schedule

# quantile points kept for the CDF (JSON and PNG): the body evenly, the tail in log steps
QS = np.unique(np.concatenate([np.linspace(0.0, 1.0, 401), 1.0 - np.logspace(-5, -2, 61)]))
PERCENTILES = (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p99_9", 99.9),
               ("p99_99", 99.99))


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


def _per(num: float, den: float, scale: float = 1.0) -> float | None:
    return num / den * scale if den else None


def _costs(reads: int, st: dict[str, int], use: dict[str, float]) -> dict[str, Any]:
    """CPU and decision time of one mode: process CPU (and the daemons'), per read; the
    admission's model time per decision and the admit+complete calls per read."""
    cpu = use.get("cpu_s", 0.0)
    dcpu = use.get("daemon_cpu_s", 0.0)
    calls = st.get("admit_calls", 0)
    return {
        "cpu_s": cpu,
        "daemon_cpu_s": dcpu,
        "cpu_us_per_read": _per(cpu + dcpu, reads, 1e6),
        "decisions": int(use.get("predict_count", 0)),
        "admitted": int(use.get("admitted", 0)),
        "rejected": int(use.get("rejected", 0)),
        "probes": int(use.get("probes", 0)),
        "capped": int(use.get("capped", 0)),
        "overruns": int(use.get("overruns", 0)),
        "fail_open": int(use.get("fail_open", 0)),
        "predict_mean_us": _per(use.get("predict_ns", 0.0), use.get("predict_count", 0), 1e-3),
        "admit_calls": calls,
        "admit_call_us": _per(st.get("admit_ns", 0), calls, 1e-3),
        "complete_call_us": _per(st.get("complete_ns", 0), st.get("complete_calls", 0), 1e-3),
        "decision_us_per_read": (_per(st.get("admit_ns", 0) + st.get("complete_ns", 0), reads,
                                      1e-3) if calls else None),
    }


def mode_rows(rec: np.ndarray, stats: dict[int, dict[str, int]], seconds: dict[int, float],
              schedule: Schedule, usage: dict[int, dict[str, float]] | None = None
              ) -> dict[str, dict[str, Any]]:
    """One row per mode from the records ``[reads, REC]`` (mode, issue ns, latency ns,
    primary, served, attempts, lag ns), the replica-set counters and the slices' usage."""
    usage = usage or {}
    rows: dict[str, dict[str, Any]] = {}
    for m, name in enumerate(MODES):
        r = rec[rec[:, 0] == m]
        lat = r[:, 2] / 1e3
        st = stats.get(m, {})
        reads = len(r)
        busy = (schedule.busy_matrix(r[:, 1] / 1e9) if schedule.any_busy and reads
                else np.zeros((reads, schedule.replicas), bool))
        prim_busy = busy[np.arange(reads), r[:, 3]] if reads else np.zeros(0, bool)
        any_busy = busy.any(axis=1)
        phases = {"primary_busy": prim_busy, "other_busy": any_busy & ~prim_busy,
                  "all_quiet": ~any_busy}
        fo, hedges = st.get("failovers", 0), st.get("hedges", 0)
        extra_ios, extra_rpcs = st.get("extra_ios", 0), st.get("extra_rpcs", 0)
        secs = seconds.get(m, 0.0)
        lag = r[:, 6] / 1e3
        rows[name] = {
            "reads": reads,
            "seconds": secs,
            "reads_per_s": reads / secs if secs else 0.0,
            **_summary(lat),
            "failovers": fo,
            "failover_rate": fo / reads if reads else 0.0,
            "hedges": hedges,
            "hedge_rate": hedges / reads if reads else 0.0,
            "extra_rpcs": extra_rpcs,
            "extra_rpc_fraction": extra_rpcs / reads if reads else 0.0,
            "extra_device_ios": extra_ios,
            "extra_io_fraction": extra_ios / reads if reads else 0.0,
            "off_primary_fraction": float((r[:, 4] != r[:, 3]).mean()) if reads else 0.0,
            "lag_mean_us": float(lag.mean()) if reads else 0.0,
            "behind_fraction": float((r[:, 6] > LATE_NS).mean()) if reads else 0.0,
            **_costs(reads, st, usage.get(m, {})),
            "phases": {k: {"reads": int(v.sum()),
                           "p50_us": float(np.median(lat[v])) if v.any() else None,
                           "p99_us": _p99(lat[v]),
                           # EBUSY at the primary (or a hedge): does the model see the phase?
                           "off_primary_fraction": (float((r[v, 4] != r[v, 3]).mean())
                                                    if v.any() else None)}
                       for k, v in phases.items()},
            "cdf_us": (np.quantile(lat, QS).round(2).tolist() if reads else []),
        }
    return rows


def reads_line(rows: np.ndarray) -> str:
    """A slice's progress line: reads, p50, p99, the share asked of more than one replica."""
    if len(rows) == 0:
        return "0 reads"
    lat = rows[:, 2] / 1e3
    fo = int((rows[:, 5] > 1).sum())
    return (f"{len(rows):,} reads, p50 {np.percentile(lat, 50):,.0f} µs, "
            f"p99 {np.percentile(lat, 99):,.0f} µs, >1 replica asked {fo / len(rows):.1%}")


def _rel(a: float, b: float) -> float | None:
    return (a - b) / b if b and math.isfinite(a) and math.isfinite(b) else None


def comparison(modes: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """p99, p99.9 and mean of mittd (and mittd + hedging) relative to none and hedge
    (negative = faster)."""
    out: dict[str, float | None] = {}
    for mine, prefix in (("mittd", ""), ("both", "both_")):
        m = modes[mine]
        for other in ("none", "hedge"):
            for key in ("p99_us", "p99_9_us", "mean_us"):
                out[f"{prefix}{key.removesuffix('_us')}_vs_{other}"] = _rel(
                    m[key], modes[other][key])
    return out


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for this kind of run, each met or not, with its figures.

    With a RAM replica (an independent one): mittd's p99 ≤ 0.6 × none's and ≤
    hedging's, with fewer extra device IOs than hedging; mittd + hedging's p99.9 ≤
    hedging's. Replicas sharing one disk: mittd never worse than none at p99. When the
    validation window chose mittd off, the figures say so (mittd then reads like none).
    """
    m = result["modes"]
    mt, no, he, bo = m["mittd"], m["none"], m["hedge"], m["both"]
    off = (" (mittd off, chosen on the validation window: no admission)"
           if result.get("mittd_off") else "")

    def row(name: str, lhs: float, rhs: float, text: str) -> dict[str, Any]:
        ok = math.isfinite(lhs) and math.isfinite(rhs) and lhs <= rhs
        return {"target": name, "met": bool(ok), "lhs": lhs, "rhs": rhs,
                "figures": text + off}

    if result.get("ram_replicas"):
        return [
            row("mittd p99 <= 0.6 x none p99", mt["p99_us"], 0.6 * no["p99_us"],
                f"{mt['p99_us']:,.0f} vs 0.6 x {no['p99_us']:,.0f} = "
                f"{0.6 * no['p99_us']:,.0f} µs"),
            row("mittd p99 <= hedge p99", mt["p99_us"], he["p99_us"],
                f"{mt['p99_us']:,.0f} vs {he['p99_us']:,.0f} µs"),
            row("mittd extra IOs < hedge extra IOs",
                mt["extra_io_fraction"], he["extra_io_fraction"] - 1e-12,
                f"{mt['extra_io_fraction']:.1%} vs {he['extra_io_fraction']:.1%} of reads"),
            row("mittd+hedge p99.9 <= hedge p99.9", bo["p99_9_us"], he["p99_9_us"],
                f"{bo['p99_9_us']:,.0f} vs {he['p99_9_us']:,.0f} µs"),
        ]
    return [row("mittd p99 <= none p99 (never worse)", mt["p99_us"], no["p99_us"],
                f"{mt['p99_us']:,.0f} vs {no['p99_us']:,.0f} µs")]
