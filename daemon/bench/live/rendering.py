"""The views of :func:`~mittd.daemon.bench.live.run_live`'s result: the text table
(terminal and docs) and the latency CDF plot (PNG, with matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mittd.daemon.bench.live.modes import MODES, MiB


def render(r: dict[str, Any]) -> str:
    """The terminal (and docs) view of :func:`~mittd.daemon.bench.live.run_live`'s result."""
    def us(v: float | None) -> str:
        return "–" if v is None or not math.isfinite(v) else f"{v:,.0f}"

    lines = [
        f"model {r['model']}; deadline {r['deadline_us']} µs (trained thresholds "
        f"{r['model_thresholds_us']} µs), reject when P(slow) > {r['decision_threshold']:g}",
        f"{r['replicas']} replicas × {r['size_bytes'] / MiB:,.0f} MiB in {r['directory']} "
        f"(O_DIRECT, one daemon each); {r['clients']} closed-loop client thread(s), "
        f"{r['read_bytes'] // 1024} KiB random reads; {r['cpus']} CPUs shared by all",
        f"contention: {r['contention']}; modes interleaved in {r['period_s']:g} s slices, "
        f"{r['duration_s']:g} s in all; hedge after {r['hedge_after_us']:,.0f} µs "
        f"({r['hedge_after_source']})",
        "",
        "| mode | reads | reads/s | mean µs | p50 | p90 | p95 | p99 | p99.9 | max | failover % "
        "| hedges % | extra IOs % | off primary % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in MODES:
        m = r["modes"][name]
        reads = m["reads"] or 1
        lines.append(
            f"| {name} | {m['reads']:,} | {m['reads_per_s']:,.0f} | {us(m['mean_us'])} "
            f"| {us(m['p50_us'])} | {us(m['p90_us'])} | {us(m['p95_us'])} | {us(m['p99_us'])} "
            f"| {us(m['p99_9_us'])} | {us(m['max_us'])} | {100 * m['failover_rate']:.1f} "
            f"| {100 * m['hedges'] / reads:.1f} | {100 * m['extra_io_fraction']:.1f} "
            f"| {100 * m['off_primary_fraction']:.1f} |")
    if r["busy"] > 0:
        lines += ["", "By contention phase at issue (p50 / p99 µs, reads): the read's primary "
                  "under writes | another replica under writes | none under writes", "",
                  "| mode | primary busy | other busy | all quiet |", "|---|---|---|---|"]
        for name in MODES:
            ph = r["modes"][name]["phases"]
            lines.append(f"| {name} | " + " | ".join(
                f"{us(ph[k]['p50_us'])} / {us(ph[k]['p99_us'])} ({ph[k]['reads']:,})"
                for k in ("primary_busy", "other_busy", "all_quiet")) + " |")
    c = r["comparison"]

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:+.0f} %"

    lines += [
        "",
        f"mittd vs none:  p99 {pct(c['p99_vs_none'])}, p99.9 {pct(c['p99_9_vs_none'])}, "
        f"mean {pct(c['mean_vs_none'])}",
        f"mittd vs hedge: p99 {pct(c['p99_vs_hedge'])}, p99.9 {pct(c['p99_9_vs_hedge'])}, "
        f"mean {pct(c['mean_vs_hedge'])}",
        "extra IOs: device reads beyond one per read (hedges, fallbacks); a failover is an "
        "EBUSY answered before any IO, so it costs an RPC, not a device IO.",
    ]
    def pct1(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f} %"

    if r.get("daemons"):
        lines += ["", "daemons (whole run, warm-up included): "
                  + "; ".join(
                      f"replica {i}: {d.get('admit', 0):,.0f} admitted, "
                      f"{d.get('ebusy', 0):,.0f} EBUSY, {d.get('overruns', 0):,.0f} prediction "
                      f"overruns, {d.get('fail_open', 0):,.0f} fail-open, prediction "
                      f"{us(d.get('predict_mean_us'))} µs mean, device read "
                      f"{us(d.get('device_mean_us'))} µs mean, "
                      f"{pct1(d.get('device_over_200us_fraction'))} > 200 µs"
                      for i, d in enumerate(r["daemons"]))]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: str | Path) -> str | None:
    """CDF and tail (1 − CDF) of each mode's client latency; returns a note if skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no PNG written (pip install matplotlib)"
    q = np.asarray(r["cdf_quantiles"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in MODES:
        x = np.asarray(r["modes"][name]["cdf_us"])
        if len(x) == 0:
            continue
        label = f"{name} (p99 {r['modes'][name]['p99_us']:,.0f} µs)"
        ax1.plot(x, q, label=label)
        tail = (1.0 - q) >= 1.0 / max(r["modes"][name]["reads"], 1)  # no extrapolation
        ax2.plot(x[tail], 1.0 - q[tail], label=label)
    ax1.axvline(r["deadline_us"], color="grey", ls=":", lw=1, label="deadline (at the device)")
    ax2.axvline(r["deadline_us"], color="grey", ls=":", lw=1)
    ax1.set(xscale="log", xlabel="client-observed read latency (µs)", ylabel="CDF",
            title="mittd bench live: CDF")
    ax2.set(xscale="log", yscale="log", xlabel="client-observed read latency (µs)",
            ylabel="1 − CDF", title="tail")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(f"{r['replicas']} replicas, {r['clients']} clients, {r['contention']}",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
