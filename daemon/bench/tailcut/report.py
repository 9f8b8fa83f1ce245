"""The views of a ``mittd bench tailcut`` result: per-workload tables, the aggregate
with the targets, the LBA question, and a PNG of p99 against hedging's."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mittd.daemon.bench.tailcut.run import MITTD_MODELS, TARGETS
from mittd.traces.atomic import save_figure

__all__ = ["aggregate", "plot", "render"]

ORDER = ("baseline", "hedge", "precise_linear", "precise_linear_hist", "linnos", "heimdall",
         "mittd", "random", "random+hedge", "oracle", "oracle@budget")


def _us(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x / 1000:.1f}ms" if x >= 10_000 else f"{x:,.0f}"


def _auc(m: dict[str, Any] | None) -> str:
    v = (m or {}).get("roc_auc")
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _mark(v: Any) -> str:
    return "n/a" if v is None else ("yes" if v else "NO")


def _workload(run: dict[str, Any]) -> list[str]:
    out = [f"{run['name']}: {run['summary']}",
           f"  {run['ios']:,} IOs, {run['read_share']:.0%} reads; replica: "
           f"{run['replica_kind']}; mittd's pick on validation: "
           f"{run['pick'] or 'hedging (every model chose it)'}",
           "  ROC-AUC validation/test: " + ", ".join(
               f"{m['name']} {_auc(m['val_metrics'])}/{_auc(m['test_metrics'])}"
               for m in run["models"])]
    head = f"  {'policy':<20}{'p50':>8}{'p90':>8}{'p99':>9}{'p99.9':>9}{'extra':>8}" \
           f"{'dev.IO':>8}{'reject':>8}  how"
    out.append(head)
    rows = sorted(run["rows"], key=lambda r: ORDER.index(r["policy"])
                  if r["policy"] in ORDER else 99)
    for r in rows:
        how = ""
        if r["kind"] in ("model", "mittd"):
            how = r.get("mode") or ""
            if r.get("mode") in ("reject", "both"):
                how += f" P>{r.get('cutoff', 0):.4g}"
            if r.get("hedge_after_us") and r.get("mode") != "reject":
                how += f" hedge@{r['hedge_after_us']:,.0f}us"
            if r["kind"] == "mittd":
                how = (f"= {r['model']}: {how}" if r["model"] else
                       "= hedging (no model beat it on validation)")
            if r.get("lock_in"):
                how += " LOCK-IN"
        elif r["kind"] == "hedge":
            how = f"after {r['hedge_after_us']:,.0f} µs (validation p95)"
        elif r["kind"] == "random":
            how = f"at mittd's reject rate {r.get('rate', 0):.2%}"
        elif r["policy"] == "oracle@budget":
            how = f"rejects the slowest {r['rate']:.0%} (clairvoyant, same budget)"
        elif r["kind"] == "oracle":
            how = "rejects every read slower than the SLO (clairvoyant)"
        out.append(f"  {r['policy']:<20}{_us(r['p50_us']):>8}{_us(r['p90_us']):>8}"
                   f"{_us(r['p99_us']):>9}{_us(r['p99_9_us']):>9}{r['extra_fraction']:>8.1%}"
                   f"{r['extra_device_fraction']:>8.1%}{r['reject_share']:>8.1%}  {how}")
    t = run.get("targets") or {}
    if t:
        out.append("  targets: " + "; ".join(f"{TARGETS[k]}: {_mark(t.get(k))}"
                                              for k in TARGETS)
                   + f"  (p99 vs hedging {-t['p99_gain_vs_hedge']:+.1%}, validation ROC-AUC "
                     f"{t['validation_roc_auc']:.3f})")
    pol = [m for m in run["models"] if m["name"] == run["pick"] and m["selection"]]
    if pol:
        out.append(f"  why: {pol[0]['selection']['policy']['reason']}")
    else:
        out += [f"  why ({m['name']}): {m['selection']['policy']['reason']}"
                for m in run["models"] if m["name"] in MITTD_MODELS and m["selection"]]
    out += [f"  note: {n}" for n in run.get("notes", [])]
    return out


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Targets met per workload and overall; p99 against hedging; the LBA question."""
    met = {k: [] for k in TARGETS}
    gains = []
    lba = []
    for run in runs:
        t = run.get("targets") or {}
        for k in TARGETS:
            if t.get(k) is not None:
                met[k].append(bool(t[k]))
        if "p99_gain_vs_hedge" in t:
            gains.append(t["p99_gain_vs_hedge"])
        aucs = {m["name"]: (m["val_metrics"] or {}).get("roc_auc") for m in run["models"]}
        by = {r["policy"]: r for r in run["rows"]}
        lba.append({"workload": run["name"], "validation_roc_auc": aucs,
                    "test_roc_auc": {m["name"]: m["test_metrics"].get("roc_auc")
                                     for m in run["models"]},
                    "test_p99_us": {m["name"]: by[m["name"]]["p99_us"] for m in run["models"]
                                    if m["name"] in by}})
    return {
        "workloads": len(runs),
        "targets_met": {k: f"{sum(v)}/{len(v)}" for k, v in met.items()},
        "all_targets_met": [r["name"] for r in runs if r.get("targets") and all(
            v for k, v in r["targets"].items() if k in TARGETS and v is not None)],
        "median_p99_gain_vs_hedge": float(np.median(gains)) if gains else None,
        "p99_gain_vs_hedge": {r["name"]: (r.get("targets") or {}).get("p99_gain_vs_hedge")
                              for r in runs},
        "clairvoyant_gain_vs_hedge": {r["name"]: _gain(r, "oracle@budget") for r in runs},
        "picks": {r["name"]: r["pick"] for r in runs},
        "modes": {r["name"]: next((x["mode"] for x in r["rows"] if x["policy"] == "mittd"),
                                  None) for r in runs},
        "lba_question": lba,
    }


def _gain(run: dict[str, Any], policy: str) -> float | None:
    by = {r["policy"]: r for r in run["rows"]}
    if policy not in by:
        return None
    return 1.0 - by[policy]["p99_us"] / by["hedge"]["p99_us"]


def render(result: dict[str, Any], brief: bool = False) -> str:
    """The text report (``brief``: the workload tables only)."""
    out: list[str] = []
    for run in result["runs"]:
        out += [*_workload(run), ""]
    if brief:
        return "\n".join(out).rstrip()
    agg = result.get("aggregate") or {}
    if agg:
        out.append(f"aggregate over {agg['workloads']} workload(s):")
        for k, v in agg["targets_met"].items():
            out.append(f"  {TARGETS[k]:<64} {v}")
        g = agg["median_p99_gain_vs_hedge"]
        if g is not None:
            out.append(f"  median p99 against hedging: {-g:+.1%}")
        cg = [v for v in agg["clairvoyant_gain_vs_hedge"].values() if v is not None]
        if cg:
            out.append(f"  a clairvoyant rejecting the slowest reads with hedging's budget: "
                       f"median p99 {-float(np.median(cg)):+.1%} against hedging (the limit)")
        out.append("")
        names = [m for m in ("precise_linear", "precise_linear_hist", "linnos", "heimdall")
                 if any(m in row["validation_roc_auc"] for row in agg["lba_question"])]
        out.append("the LBA question (validation ROC-AUC; LBA bits only = precise_linear, "
                   "history only = linnos/heimdall, both = precise_linear_hist):")
        out.append("  " + f"{'workload':<26}" + "".join(f"{n:>21}" for n in names))
        for row in agg["lba_question"]:
            v = row["validation_roc_auc"]
            out.append("  " + f"{row['workload']:<26}" + "".join(
                f"{_auc({'roc_auc': v.get(n)}):>21}" for n in names))
    if "seconds" in result:
        out.append(f"\n{result['seconds'] / 60:.1f} min in all")
    return "\n".join(out)


def plot(result: dict[str, Any], path: str | Path) -> str | None:
    """p99 of each policy relative to hedging's, per workload (PNG); a note if not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed; tailcut.png skipped (pip install matplotlib)"
    runs = result["runs"]
    if not runs:
        return "no workload ran; tailcut.png skipped"
    pols = ["baseline", "mittd", "oracle@budget", *MITTD_MODELS, "linnos", "heimdall"]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(runs) + 2), 4.5))
    width = 0.8 / len(pols)
    for j, p in enumerate(pols):
        ys = []
        for run in runs:
            by = {r["policy"]: r for r in run["rows"]}
            h = by["hedge"]["p99_us"]
            ys.append(by[p]["p99_us"] / h if p in by else np.nan)
        ax.bar(np.arange(len(runs)) + (j - len(pols) / 2 + 0.5) * width, ys, width, label=p)
    ax.axhline(1.0, color="black", lw=1, ls="--", label="hedging")
    ax.set_xticks(np.arange(len(runs)))
    ax.set_xticklabels([r["name"].removeprefix("shipped:") for r in runs], rotation=30,
                       ha="right", fontsize=8)
    ax.set_ylabel("test p99 / hedging's p99")
    ax.set_yscale("log")
    ax.set_title("mittd bench tailcut: p99 on the test part (policies chosen on validation)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return None
