"""The views of :func:`~mittd.daemon.bench.live.run_live`'s result: the text table
(terminal and docs) and the latency CDF plot (PNG, with matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mittd.daemon.bench.live.modes import MODES, MiB
from mittd.traces.atomic import save_figure

MIN_READS_P9999 = 10_000  # below this the p99.99 is the max of a handful: shown as "–"


def _us(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:,.0f}"


def _us1(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:,.1f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.0f} %"


def _pct1(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _header(r: dict[str, Any]) -> list[str]:
    path = ("in-process (the decision in the client process: LocalReplicaSet + Embedded)"
            if r["path"] == "inproc" else "gRPC (one mittd serve daemon per replica, proxy "
            "reads through ReplicaSet)")
    media = "; ".join(f"replica {i}: {m}" for i, m in enumerate(r["replica_media"]))
    load = (f"{r['clients']} closed-loop client thread(s), {r['read_bytes'] // 1024} KiB "
            f"random reads" if r["load"] == "closed-loop" else
            f"{r['clients']} thread(s) issuing the reads of {r['trace']['source']} at its "
            f"arrival times (×{r['trace']['speed']:g}, {r['trace']['reads_per_s']:,.0f} "
            f"reads/s, open loop)")
    pol = r.get("policy") or {}
    cap = r.get("max_reject_share")
    cut = r.get("decision_threshold")
    src = f" ({r['decision_threshold_source']})" if r.get("decision_threshold_source") else ""
    decide = ("mittd off (chosen on the validation window: no cutoff beat reading without "
              "it), so the mittd mode reads like none and both like hedge"
              if r.get("mittd_off") or cut is None else
              f"reject when P(slow) > {cut:g}{src}"
              + (f", rejections capped at {cap:.0%} of decisions" if cap else "")
              + f", a probe after {r['probe_after']} rejections in a row"
              + (f"; bundle policy: {pol['mode']}" if pol.get("mode") else ""))
    lines = [
        f"path: {path}",
        f"model {r['model']}; deadline {r['deadline_us']} µs (trained thresholds "
        f"{r['model_thresholds_us']} µs), {decide}",
        f"{r['replicas']} replicas × {r['size_bytes'] / MiB:,.0f} MiB in {r['directory']} "
        f"({media}); {load}; {r['cpus']} CPUs shared by all",
        f"contention: {r['contention']}; modes interleaved in {r['period_s']:g} s slices, "
        f"{r['duration_s']:g} s in all; hedge after {r['hedge_after_us']:,.0f} µs "
        f"({r['hedge_after_source']})",
    ]
    if r.get("ram_replicas"):
        rams = ", ".join(str(i) for i in r["ram_replicas"])
        lines.append(f"replica {rams} is on tmpfs: its reads are RAM copies (microseconds; "
                     "buffered, or O_DIRECT as tmpfs accepts since Linux 6.6), never slowed "
                     "by the disk's writes — a truly independent replica, which shows the "
                     "mechanism and its overhead, not a second disk")
    return lines


def _validation(r: dict[str, Any]) -> list[str]:
    """The validation window's table and the choice made on it (empty without one)."""
    v = r.get("validation")
    if not v:
        return []
    lines = ["", f"Validation window: mittd's operating point chosen here, before the test "
             f"slices, then used unchanged: {v['rounds']} round(s) of {v['slices_per_round']} "
             f"slices of {r['period_s']:g} s (one contention period each, rotated), "
             f"{v['reads']:,} reads, none of them in the test tables below", "",
             "| candidate | cap | reads | p50 | p99 | p99.9 | p99 vs off | failover % "
             "| rejected % of decisions |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in v["candidates"]:
        mark = " ← chosen" if c["name"] == v["choice"] else ""
        cap = "–" if c["max_reject_share"] is None else f"{c['max_reject_share']:.0%}"
        lines.append(
            f"| {c['name']}{mark} | {cap} | {c['reads']:,} | {_us(c['p50_us'])} "
            f"| {_us(c['p99_us'])} | {_us(c['p99_9_us'])} "
            f"| {'–' if c['name'] == 'off' else _pct1s(c.get('p99_vs_off'))} "
            f"| {100 * c['failover_rate']:.1f} | {_pct1(c.get('reject_rate'))} |")
    lines += ["", f"choice rule: {v['rule']}.", f"choice: {v['verdict']}."]
    return lines


def _pct1s(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f} %"


def _label(r: dict[str, Any], name: str) -> str:
    """A test mode's row label: says so when the validation chose mittd off."""
    if r.get("mittd_off") and name == "mittd":
        return "mittd (chose off: reads like none)"
    if r.get("mittd_off") and name == "both":
        return "both (mittd off: hedging only)"
    return name


def render(r: dict[str, Any]) -> str:
    """The terminal (and docs) view of :func:`~mittd.daemon.bench.live.run_live`'s result."""
    lines = [*_header(r), *_validation(r), "",
             *(["Test slices (after the validation window):", ""] if r.get("validation")
               else []),
             "| mode | reads | reads/s | mean µs | p50 | p90 | p95 | p99 | p99.9 | p99.99 "
             "| max | failover % | hedges % | extra IOs % | off primary % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in MODES:
        m = r["modes"][name]
        p9999 = m["p99_99_us"] if m["reads"] >= MIN_READS_P9999 else None
        lines.append(
            f"| {_label(r, name)} | {m['reads']:,} | {m['reads_per_s']:,.0f} "
            f"| {_us(m['mean_us'])} "
            f"| {_us(m['p50_us'])} | {_us(m['p90_us'])} | {_us(m['p95_us'])} "
            f"| {_us(m['p99_us'])} | {_us(m['p99_9_us'])} | {_us(p9999)} | {_us(m['max_us'])} "
            f"| {100 * m['failover_rate']:.1f} | {100 * m['hedge_rate']:.1f} "
            f"| {100 * m['extra_io_fraction']:.1f} | {100 * m['off_primary_fraction']:.1f} |")
    grpc = r["path"] == "grpc"
    lines += ["", "Costs per mode: CPU seconds of " + ("this process + the daemons" if grpc
              else "this process (clients, admission, reads)") + " while the mode ran, per "
              "read; the model's featurise + predict time per decision (the admission's own "
              "timer); the admit + complete calls as the client timed them, per read",
              "", "| mode | CPU s | CPU µs/read | decisions | rejected | capped | probes "
              "| predict µs/decision | admit µs/call | complete µs/call | decision µs/read |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in MODES:
        m = r["modes"][name]
        cpu = m["cpu_s"] + m["daemon_cpu_s"]
        lines.append(
            f"| {name} | {cpu:,.1f} | {_us(m['cpu_us_per_read'])} | {m['decisions']:,} "
            f"| {m['rejected']:,} | {m['capped']:,} | {m['probes']:,} "
            f"| {_us1(m['predict_mean_us'])} | {_us1(m['admit_call_us'])} "
            f"| {_us1(m['complete_call_us'])} | {_us1(m['decision_us_per_read'])} |")
    if grpc:
        lines.append("(gRPC path: the decisions happen in the daemons; see their counters "
                     "below)")
    if r["load"] == "trace":
        lines += ["", "trace-driven lag (issue − arrival): " + "; ".join(
            f"{n} mean {_us(r['modes'][n]['lag_mean_us'])} µs, "
            f"{_pct1(r['modes'][n]['behind_fraction'])} > 1 ms late" for n in MODES)]
    if any(b > 0 for b in r["busy"]):
        lines += ["", "By contention phase at issue (p50 / p99 µs, reads, share served off the "
                  "primary): the read's primary under writes | another replica under writes "
                  "| none under writes", "",
                  "| mode | primary busy | other busy | all quiet |", "|---|---|---|---|"]
        for name in MODES:
            ph = r["modes"][name]["phases"]
            lines.append(f"| {name} | " + " | ".join(
                f"{_us(ph[k]['p50_us'])} / {_us(ph[k]['p99_us'])} ({ph[k]['reads']:,}, "
                f"{_pct1(ph[k].get('off_primary_fraction'))} off)"
                for k in ("primary_busy", "other_busy", "all_quiet")) + " |")
    c = r["comparison"]
    lines += [
        "",
        f"mittd vs none:  p99 {_pct(c['p99_vs_none'])}, p99.9 {_pct(c['p99_9_vs_none'])}, "
        f"mean {_pct(c['mean_vs_none'])}",
        f"mittd vs hedge: p99 {_pct(c['p99_vs_hedge'])}, p99.9 {_pct(c['p99_9_vs_hedge'])}, "
        f"mean {_pct(c['mean_vs_hedge'])}",
        f"mittd + hedge vs hedge: p99 {_pct(c['both_p99_vs_hedge'])}, p99.9 "
        f"{_pct(c['both_p99_9_vs_hedge'])}, mean {_pct(c['both_mean_vs_hedge'])}",
        "extra IOs: device reads beyond one per read (hedges" + (", fallbacks" if grpc else "")
        + "); a failover is an EBUSY answered before any IO, so it costs no device IO"
        + (" (but an RPC)." if grpc else " (in-process: one prediction, a few µs)."),
    ]
    if r.get("targets"):
        lines += ["", "targets (" + ("disk + RAM" if r.get("ram_replicas") else
                                     "replicas on one disk") + "): " + "; ".join(
            f"{t['target']}: {'met' if t['met'] else 'NOT met'} ({t['figures']})"
            for t in r["targets"])]
    if r.get("daemons"):
        lines += ["", "daemons (whole run, warm-up included): "
                  + "; ".join(
                      f"replica {i}: {d.get('admit', 0):,.0f} admitted, "
                      f"{d.get('ebusy', 0):,.0f} EBUSY, {d.get('overruns', 0):,.0f} prediction "
                      f"overruns, {d.get('fail_open', 0):,.0f} fail-open, prediction "
                      f"{_us(d.get('predict_mean_us'))} µs mean, device read "
                      f"{_us(d.get('device_mean_us'))} µs mean, "
                      f"{_pct1(d.get('device_over_200us_fraction'))} > 200 µs"
                      for i, d in enumerate(r["daemons"]))]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: str | Path) -> str | None:
    """CDF (log x) and tail (1 − CDF, log-log) of each mode's client latency; returns a
    note if skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no PNG written (pip install matplotlib)"
    q = np.asarray(r["cdf_quantiles"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name in MODES:
        m = r["modes"][name]
        x = np.asarray(m["cdf_us"])
        if len(x) == 0:
            continue
        label = (f"{_label(r, name)} (p99 {m['p99_us']:,.0f}, p99.9 {m['p99_9_us']:,.0f} µs, "
                 f"+{100 * m['extra_io_fraction']:.1f} % IOs)")
        ax1.plot(x, q, label=label)
        tail = (1.0 - q) >= 1.0 / max(m["reads"], 1)  # no extrapolation
        ax2.plot(x[tail], 1.0 - q[tail], label=label)
    for ax in (ax1, ax2):
        ax.axvline(r["deadline_us"], color="grey", ls=":", lw=1,
                   label="deadline (at the device)" if ax is ax1 else None)
        ax.axvline(r["hedge_after_us"], color="grey", ls="--", lw=0.8,
                   label="hedge delay" if ax is ax1 else None)
    ax1.set(xscale="log", xlabel="client-observed read latency (µs)", ylabel="CDF",
            title=f"mittd bench live ({r['path']}): CDF")
    ax2.set(xscale="log", yscale="log", xlabel="client-observed read latency (µs)",
            ylabel="1 − CDF", title="tail")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)
    media = ", ".join(r["replica_media"])
    fig.suptitle(f"{r['replicas']} replicas ({media}), {r['clients']} {r['load']} clients; "
                 f"{r['contention']}", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return None
