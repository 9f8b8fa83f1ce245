"""The report of ``mittd replay``: a terminal table, ``report.json`` and ``latency_cdf.png``.

Metrics of a policy are over the primary trace's reads whose latency is known
(``n`` of them), with ``L`` the read's recorded primary latency, ``S`` the SLO:

- ``mean_us``, ``p50_us``, ``p90_us``, ``p95_us``, ``p99_us``, ``p99_9_us``: of
  the latency the application saw under the policy (µs);
- ``reject_rate``: reads answered EBUSY by the primary / n;
- ``false_reject_rate``: rejected although ``L <= S`` / n;
- ``false_admit_rate``: admitted by the primary although ``L > S`` / n (for the
  baseline: the share of slow reads);
- ``slo_miss_rate``: reads whose final latency exceeds ``S`` / n;
- ``failovers`` (re-sent reads, one per replica hop), ``hedges`` (duplicates),
  ``extra_ios`` = their sum, ``extra_io_fraction`` = extra_ios / n;
- ``decisions``, ``wall_s``, ``decisions_per_s``: admission decisions made and
  the wall time of the policy's loop (None for policies that decide nothing);
- ``oracle_p99_gain``: ``(p99_base − p99) / (p99_base − p99_oracle)``, the share
  of the oracle's p99 improvement the policy achieves (None when the oracle
  gains nothing or a row is missing).

matplotlib is imported only to draw the PNG; without it the PNG is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mittd.daemon.replay.core import PolicyResult
from mittd.daemon.replay.policies import Replay
from mittd.traces.atomic import save_figure, write_text

__all__ = ["build_report", "format_table", "jsonable", "policy_metrics", "write_cdf_png",
           "write_report"]

PERCENTILES = (("p50_us", 50.0), ("p90_us", 90.0), ("p95_us", 95.0), ("p99_us", 99.0),
               ("p99_9_us", 99.9))


def policy_metrics(r: PolicyResult, replay: Replay) -> dict[str, Any]:
    """The metrics of one policy (see the module docstring)."""
    known = replay.primary.known_reads
    n = int(known.sum())
    lat = r.latency_us[known]
    base = replay.primary.cols.lat[known]
    slo = replay.slo_us
    rejected = r.rejected[known]
    pct = np.percentile(lat, [q for _, q in PERCENTILES])
    out: dict[str, Any] = {"policy": r.name, "kind": r.kind, "reads": n,
                           "mean_us": float(lat.mean())}
    out.update({k: float(v) for (k, _), v in zip(PERCENTILES, pct, strict=True)})
    out.update({
        "reject_rate": float(rejected.mean()),
        "false_reject_rate": float((rejected & (base <= slo)).mean()),
        "false_admit_rate": float((~rejected & (base > slo)).mean()),
        "slo_miss_rate": float((lat > slo).mean()),
        "failovers": r.failovers,
        "hedges": r.hedges,
        "extra_ios": r.extra_ios,
        "extra_io_fraction": r.extra_ios / n,
        "decisions": r.decisions,
        "wall_s": r.wall_s,
        "decisions_per_s": (r.decisions / r.wall_s) if r.decisions and r.wall_s > 0 else None,
        "oracle_p99_gain": None,
        "mode": r.mode,
        "hedge_after_us": r.hedge_after_us,
        "predicted_slow_share": r.predicted_slow_share,
        "lock_in": r.lock_in,
    })
    if r.model is not None:
        out["model"] = {"path": r.model.path, "version": r.model.bundle.version_id,
                        "featuriser": r.model.bundle.featuriser.get("name"),
                        "thresholds_us": r.model.thresholds_us,
                        "decision_thresholds": (
                            [replay.decision_threshold] if replay.decision_threshold is not None
                            else r.model.bundle.decision_thresholds())}
    if r.counters is not None:
        out["counters"] = {dev: st.as_dict() for dev, st in r.counters.items()}
    if r.notes:
        out["notes"] = list(r.notes)
    return out


def build_report(replay: Replay) -> dict[str, Any]:
    """The whole report as a JSON-serialisable dict."""
    rows = [policy_metrics(r, replay) for r in replay.results]
    by = {row["policy"]: row for row in rows}
    if "baseline" in by and "oracle" in by:
        b, o = by["baseline"]["p99_us"], by["oracle"]["p99_us"]
        if b - o > 0:
            for row in rows:
                row["oracle_p99_gain"] = (b - row["p99_us"]) / (b - o)
    p = replay.primary
    return {
        "report": "mittd-replay",
        "version": 1,
        "trace": p.path,
        "ios": p.n,
        "reads": int(p.reads.sum()),
        "reads_with_latency": int(p.known_reads.sum()),
        "duration_us": p.period_us - 1,
        "slo": {"text": replay.slo_text, "us": replay.slo_us,
                "basis": "the primary trace's read latencies"},
        "replicas": [r.describe() for r in replay.replicas],
        "failover_cost_us": replay.failover_cost_us,
        "engine": replay.engine,
        "decision_threshold": replay.decision_threshold,
        "seed": replay.seed,
        "random_rate": replay.random_rate,
        "random_rate_from": replay.random_rate_from,
        "policies": rows,
        "notes": list(replay.notes),
    }


def _us(x: float) -> str:
    if x >= 100_000:
        return f"{x / 1000:.0f}ms"
    if x >= 10_000:
        return f"{x / 1000:.1f}ms"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x + 0.0:.1f}%".replace("-0.0%", "0.0%")


def _rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def format_table(report: dict[str, Any]) -> str:
    """The terminal table: one row per policy (latencies in µs)."""
    head = ("policy", "mean", "p50", "p90", "p95", "p99", "p99.9", "reject", "false-rej",
            "false-adm", "SLO miss", "extra IOs", "oracle gain", "dec/s")
    lines = []
    for r in report["policies"]:
        lines.append((
            r["policy"], _us(r["mean_us"]), _us(r["p50_us"]), _us(r["p90_us"]),
            _us(r["p95_us"]), _us(r["p99_us"]), _us(r["p99_9_us"]), _pct(r["reject_rate"]),
            _pct(r["false_reject_rate"]), _pct(r["false_admit_rate"]), _pct(r["slo_miss_rate"]),
            f"{r['extra_ios']:,} ({_pct(r['extra_io_fraction'])})",
            _pct(r["oracle_p99_gain"]), _rate(r["decisions_per_s"]),
        ))
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(head)]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    slo = report["slo"]
    reps = "; ".join(r["trace"] for r in report["replicas"])
    out = [
        f"replay of {report['trace']}: {report['reads_with_latency']:,} reads "
        f"({report['ios']:,} IOs), SLO {slo['us']:.1f} µs ({slo['text']}), failover cost "
        f"{report['failover_cost_us']} µs",
        f"replica(s): {reps}",
        "",
        fmt(head),
        fmt(tuple("-" * w for w in widths)),
        *(fmt(row) for row in lines),
        "",
        "latencies in µs over reads; reject / false-rej / false-adm / SLO miss as a share of "
        "reads; oracle gain = share of the oracle's p99 improvement",
    ]
    for r in report["policies"]:
        if "model" in r:
            how = r["mode"] or "reject"
            if r.get("hedge_after_us") and how != "reject":
                how += f", hedging after {r['hedge_after_us']:,.0f} µs"
            out.append(f"{r['policy']}: {r['model']['version']} ({r['model']['featuriser']} "
                       f"featuriser, trained for {r['model']['thresholds_us']} µs; policy "
                       f"{how}; called {_pct(r['predicted_slow_share'])} of the reads slow"
                       f"{'; LOCK-IN' if r['lock_in'] else ''})")
    out += [f"note: {n}" for n in report["notes"]]
    return "\n".join(out)


def _quantile_grid() -> np.ndarray:
    body = np.linspace(0.0, 0.9, 451)
    tail = 1.0 - np.logspace(-1, -5, 801)[1:]
    return np.concatenate([body, tail, [1.0]])


def write_cdf_png(path: str | Path, replay: Replay, title: str | None = None) -> bool:
    """Latency CDFs of all policies (log x) and a tail panel (log survival);
    False, and nothing written, when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    known = replay.primary.known_reads
    q = _quantile_grid()
    fig = Figure(figsize=(12, 5), layout="constrained")
    ax_cdf, ax_tail = fig.subplots(1, 2)
    styles = {"baseline": ("black", "-"), "oracle": ("tab:green", "--"),
              "hedge": ("tab:orange", "-."), "random": ("tab:gray", ":")}
    palette = iter(["tab:blue", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                    "tab:cyan"])
    n = int(known.sum())
    for r in replay.results:
        lat = np.maximum(np.quantile(r.latency_us[known], q), 1e-3)
        color, ls = styles.get(r.kind, (None, "-"))
        if color is None:
            color = next(palette, None)
        ax_cdf.plot(lat, q, label=r.name, color=color, linestyle=ls, linewidth=1.3)
        surv = np.maximum(1.0 - q, 0.5 / n)
        ax_tail.plot(lat, surv, label=r.name, color=color, linestyle=ls, linewidth=1.3)
    for ax in (ax_cdf, ax_tail):
        ax.set_xscale("log")
        ax.axvline(replay.slo_us, color="0.6", linewidth=0.8)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("read latency (µs)")
    ax_cdf.set_ylabel("CDF")
    ax_cdf.set_ylim(0.0, 1.0)
    ax_cdf.set_title(title or f"{Path(replay.primary.path).name}: SLO {replay.slo_us:.0f} µs")
    ax_cdf.legend(loc="lower right", fontsize=8)
    ax_tail.set_yscale("log")
    ax_tail.set_ylim(max(0.5 / n, 1e-5), 0.2)
    ax_tail.set_ylabel("P(latency > x)  (tail, log scale)")
    ax_tail.set_title("tail: p80 … p99.999")
    save_figure(fig, path, dpi=110)
    return True


def write_report(replay: Replay, out_dir: str | Path) -> tuple[dict[str, Any], list[Path], bool]:
    """Write ``report.json`` and ``latency_cdf.png`` into ``out_dir`` (created);
    returns (report, files written, whether the PNG was drawn)."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    report = build_report(replay)
    js = d / "report.json"
    write_text(js, json.dumps(report, indent=2, default=jsonable) + "\n")
    png = d / "latency_cdf.png"
    drawn = write_cdf_png(png, replay)
    return report, [js, png] if drawn else [js], drawn


def jsonable(x: object) -> object:
    """``json.dumps(default=...)`` for the tools' reports: numpy scalars and arrays,
    paths."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
