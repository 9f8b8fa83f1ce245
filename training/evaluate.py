"""How good is a latency predictor: metrics, a text table, report files and plots.

Accuracy alone hides useless models: seed 000's pruned good_custom scored
92.18 % while predicting NON-EBUSY for every request (7.82 % of them were
EBUSY). So every report carries precision, recall, ROC-AUC, PR-AUC, FPR and
FNR, and a ``degenerate`` flag with a warning when a model answers one class
for (almost) everything. Positive = slow = EBUSY. Pure numpy (no sklearn);
matplotlib is imported only to draw, with the Agg canvas (no display, no
global backend switch).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mittd.predictor.ranking import roc_auc  # the daemon's live quality uses it too
from mittd.traces.atomic import atomic_path, write_text

__all__ = [
    "DEGENERATE_SHARE",
    "average_precision",
    "metrics",
    "render",
    "roc_auc",
    "sparsity_table",
    "write_report",
]

DEGENERATE_SHARE = 0.99  # a model answering one class this often is flagged
CLASS_NAMES = ("NON-EBUSY", "EBUSY")


# -- ranking metrics --------------------------------------------------------------------------


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """PR-AUC as scikit-learn's average precision: sum over distinct score
    thresholds (descending) of (R_i - R_{i-1}) · P_i, tied scores forming one
    step. NaN when there is no slow IO."""
    y = np.asarray(y_true).astype(bool)
    n1 = int(y.sum())
    if n1 == 0:
        return math.nan
    s = np.asarray(score, np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]  # last row of each run of equal scores
    tp = np.cumsum(y)[last]
    k = np.flatnonzero(last) + 1  # rows predicted slow at each threshold
    precision = tp / k
    recall = tp / n1
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# -- metrics ----------------------------------------------------------------------------------


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def _degenerate(
    n: int, n1: int, tn: int, tp: int, rejected: float
) -> tuple[bool, str | None]:
    if n1 == 0 or n1 == n:  # whatever the model answers, it cannot be judged here
        only, absent = CLASS_NAMES[int(n1 == n)], CLASS_NAMES[int(n1 != n)]
        return True, (
            f"degenerate: the labels hold one class only ({only}: no {absent} IO), so "
            f"recall, precision and ROC-AUC cannot be judged; the model predicts EBUSY "
            f"for {rejected:.2%} of IOs"
        )
    pred_major = 1 if rejected >= 0.5 else 0
    share = rejected if pred_major else 1.0 - rejected
    if share < DEGENERATE_SHARE:
        return False, None
    true_share = (n1 if pred_major else n - n1) / n
    minority_found = tn if pred_major else tp
    if true_share >= DEGENERATE_SHARE and minority_found > 0:
        return False, None  # the data is that lopsided and the rare class is still found
    name, other = CLASS_NAMES[pred_major], CLASS_NAMES[1 - pred_major]
    acc = (tn + tp) / n
    found = "recall" if pred_major == 0 else "specificity"
    n_other = n1 if pred_major == 0 else n - n1
    return True, (
        f"degenerate: predicts {name} for {share:.2%} of IOs ({other} {found} "
        f"{_ratio(minority_found, n_other):.2%}); its {acc:.2%} accuracy mostly mirrors "
        f"the {true_share:.2%} share of {name} IOs"
    )


def metrics(
    y_true: np.ndarray | Sequence[int],
    p_slow: np.ndarray | Sequence[float],
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Classification metrics of P(slow) scores against 0/1 labels (1 = slow).

    A row is predicted slow (EBUSY) when ``p_slow > threshold``, the rule the
    engines apply. Rates with an empty denominator are 0.0 (scikit-learn's
    ``zero_division=0``); ROC-AUC and PR-AUC are NaN when a class is missing.
    ``degenerate`` is set, with a ``warning``, when the model predicts one class
    for >= 99 % of inputs — unless the labels are themselves >= 99 % that class
    and the model still gets some of the rare class right (a good p99.9 head) —
    and whenever the labels hold one class only (a test split without a slow, or
    without a fast, IO judges nothing).
    """
    y = np.asarray(y_true)
    p = np.asarray(p_slow, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(
            f"metrics needs 1-D labels and scores (one threshold; pass y[:, j], p[:, j] for "
            f"a ladder head), got shapes {y.shape} and {p.shape}"
        )
    if y.size != p.size:
        raise ValueError(f"{y.size} labels but {p.size} scores")
    if y.size == 0:
        raise ValueError("metrics needs at least one example")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (fast) or 1 (slow)")
    if not np.isfinite(p).all():
        raise ValueError("scores must be finite")
    t = float(threshold)
    yb = y.astype(bool)
    pred = p > t
    n = int(y.size)
    tp = int(np.sum(pred & yb))
    fp = int(np.sum(pred & ~yb))
    fn = int(np.sum(~pred & yb))
    tn = n - tp - fp - fn
    n1 = tp + fn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, n1)
    specificity = _ratio(tn, tn + fp)
    rejected = (tp + fp) / n
    degenerate, warning = _degenerate(n, n1, tn, tp, rejected)
    return {
        "n": n,
        "n_slow": n1,
        "base_rate": n1 / n,
        "threshold": t,
        "accuracy": (tp + tn) / n,
        "balanced_accuracy": (recall + specificity) / 2.0,
        "majority_accuracy": max(n1, n - n1) / n,
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "fpr": _ratio(fp, tn + fp),
        "fnr": _ratio(fn, n1),
        "roc_auc": roc_auc(yb, p),
        "pr_auc": average_precision(yb, p),
        "rejected": rejected,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
        "confusion": [[tn, fp], [fn, tp]],
        "degenerate": degenerate,
        "warning": warning,
    }


# -- text -------------------------------------------------------------------------------------


def _pct(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2%}"


def _num(v: float, fmt: str = ".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def render(m: Mapping[str, Any]) -> str:
    """A compact human-readable table of :func:`metrics`' output."""
    w = max(len(f"{m['n']:,}"), 9)
    lines = [
        f"n {m['n']:,} IOs, {_pct(m['base_rate'])} EBUSY (slow); decision P(slow) > "
        f"{m['threshold']:g}",
        f"  accuracy  {_pct(m['accuracy']):>8}   precision {_pct(m['precision']):>8}   "
        f"recall {_pct(m['recall']):>8}   F1  {_num(m['f1'])}",
        f"  ROC-AUC   {_num(m['roc_auc']):>8}   PR-AUC    {_num(m['pr_auc']):>8}   "
        f"FPR    {_pct(m['fpr']):>8}   FNR {_pct(m['fnr'])}",
        f"  rejected  {_pct(m['rejected']):>8}   balanced accuracy {_pct(m['balanced_accuracy'])}"
        f"   (always-majority would score {_pct(m['majority_accuracy'])})",
        f"  {'':16}{'pred NON-EBUSY':>{w + 6}}{'pred EBUSY':>{w + 6}}",
        f"  {'true NON-EBUSY':16}{m['tn']:>{w + 6},}{m['fp']:>{w + 6},}",
        f"  {'true EBUSY':16}{m['fn']:>{w + 6},}{m['tp']:>{w + 6},}",
    ]
    if m.get("warning"):
        lines.append(f"  WARNING {m['warning']}")
    return "\n".join(lines)


def _sparsity_pct(v: float) -> float:
    return v * 100.0 if v <= 1.0 else v


def sparsity_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table in the shape of seed 000's Table 2, plus the columns that
    expose a useless model: ROC-AUC, recall and the degenerate marker.

    Each row holds ``sparsity`` (a fraction such as 0.9, or a percentage) and
    :func:`metrics`' keys; "loss" is in accuracy points against the dense row
    (sparsity 0, else the first row).
    """
    if not rows:
        raise ValueError("sparsity_table needs at least one row")
    dense = next((r for r in rows if float(r.get("sparsity", 0.0)) == 0.0), rows[0])
    out = [
        "| Sparsity (%) | Accuracy (%) | Loss vs dense (pts) | ROC-AUC | Recall (%) | Degenerate |",
        "|---:|---:|---:|---:|---:|:---:|",
    ]
    flagged = False
    for r in rows:
        acc = float(r["accuracy"]) * 100.0
        loss = float(dense["accuracy"]) * 100.0 - acc
        is_dense = r is dense
        flagged |= bool(r.get("degenerate"))
        out.append(
            f"| {_sparsity_pct(float(r.get('sparsity', 0.0))):g} | {acc:.2f} | "
            f"{'—' if is_dense else f'{loss:.2f}'} | {_num(r.get('roc_auc', math.nan))} | "
            f"{float(r.get('recall', math.nan)) * 100.0:.2f} | "
            f"{'**yes**' if r.get('degenerate') else ''} |"
        )
    if flagged:
        out.append("")
        out.append(
            "Degenerate: predicts one class for >= 99 % of IOs — its accuracy only "
            "mirrors the class balance (seed 000's pruned good_custom, 92.18 %)."
        )
    return "\n".join(out)


# -- report files -----------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    return v


def _plot_confusion(path: Path, name: str, m: Mapping[str, Any], cm: np.ndarray) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 4.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rows = cm.sum(axis=1, keepdims=True)
    rates = np.divide(cm, rows, out=np.zeros_like(cm, dtype=np.float64), where=rows > 0)
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    what = (("true negative", "false positive"), ("false negative", "true positive"))
    for i in range(2):
        for j in range(2):
            dark = rates[i, j] > 0.55
            ax.text(j, i, f"{cm[i, j]:,}\n{rates[i, j]:.1%} of row\n{what[i][j]}",
                    ha="center", va="center", fontsize=10,
                    color="white" if dark else "black")
    ax.set_xticks([0, 1], [f"pred {c}" for c in CLASS_NAMES])
    ax.set_yticks([0, 1], [f"true {c}" for c in CLASS_NAMES], rotation=90, va="center")
    ax.tick_params(length=0)
    title = (f"{name}\naccuracy {_pct(m.get('accuracy', math.nan))}, recall "
             f"{_pct(m.get('recall', math.nan))}, ROC-AUC {_num(m.get('roc_auc', math.nan))}")
    ax.set_title(title, fontsize=10)
    if m.get("degenerate"):
        fig.suptitle("DEGENERATE: predicts one class", color="crimson", fontsize=11,
                     fontweight="bold")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _ecdf(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.sort(v)
    return x, np.arange(1, x.size + 1) / x.size


def _plot_cdf(path: Path, name: str, lat: np.ndarray, y_pred: np.ndarray,
              threshold_us: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.4), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_cdf, ax_tail = fig.subplots(1, 2)
    ok = np.isfinite(lat)
    floor = max(float(np.min(lat[ok & (lat > 0)])) if np.any(ok & (lat > 0)) else 1.0, 1e-3)
    groups = (
        ("all IOs", lat[ok], "black", "-"),
        ("admitted (pred. NON-EBUSY)", lat[ok & (y_pred == 0)], "tab:green", "-"),
        ("rejected (pred. EBUSY)", lat[ok & (y_pred == 1)], "tab:red", "--"),
    )
    for label, v, color, style in groups:
        if v.size == 0:
            ax_cdf.plot([], [], color=color, ls=style, label=f"{label}: none")
            continue
        x, f = _ecdf(np.maximum(v, floor))
        p99 = float(np.percentile(v, 99))
        text = f"{label}: {v.size:,}, p99 {p99:,.0f} µs"
        lw = 3.0 if label == "all IOs" else 1.6  # wider, so it shows under an equal line
        ax_cdf.step(x, f, where="post", color=color, ls=style, lw=lw, label=text)
        tail = 1.0 - f + 1.0 / x.size  # P(latency >= x), never 0 on a log axis
        ax_tail.step(x, tail, where="post", color=color, ls=style, lw=lw)
    for ax in (ax_cdf, ax_tail):
        ax.set_xscale("log")
        ax.axvline(threshold_us, color="tab:blue", ls=":", lw=1.8)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("latency (µs, log scale)")
    ax_cdf.plot([], [], color="tab:blue", ls=":", lw=1.8,
                label=f"SLO threshold {threshold_us:,.0f} µs")
    ax_cdf.set_ylim(0.0, 1.0)
    ax_cdf.set_ylabel("fraction of IOs ≤ latency (CDF)")
    ax_cdf.set_title("latency CDF")
    ax_cdf.legend(loc="lower right", fontsize=8.5, framealpha=0.9)
    ax_tail.set_yscale("log")
    ax_tail.set_ylabel("fraction of IOs ≥ latency (tail)")
    ax_tail.set_title("tail (1 − CDF)")
    fig.suptitle(f"{name}: latency of the evaluated IOs", fontsize=11)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_report(
    out_dir: str | Path,
    name: str,
    metrics: Mapping[str, Any],
    latencies_us: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    threshold_us: float,
) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.txt``, ``<name>_confusion.png`` and
    ``<name>_latency_cdf.png`` into ``out_dir``; returns them by kind.

    ``y_pred`` are 0/1 decisions (1 = EBUSY) for the IOs whose latencies are
    given; the CDF shows what admitting only the predicted-fast IOs would do to
    the latency distribution, with the SLO threshold drawn.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lat = np.asarray(latencies_us, np.float64).reshape(-1)
    yt = np.asarray(y_true).reshape(-1).astype(np.int64)
    yp = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if not lat.size == yt.size == yp.size:
        raise ValueError(
            f"latencies ({lat.size}), y_true ({yt.size}) and y_pred ({yp.size}) differ in length"
        )
    cm = np.array([[np.sum((yt == i) & (yp == j)) for j in (0, 1)] for i in (0, 1)])
    paths = {
        "json": out / f"{name}.json",
        "txt": out / f"{name}.txt",
        "confusion": out / f"{name}_confusion.png",
        "latency_cdf": out / f"{name}_latency_cdf.png",
    }
    doc = {"name": name, "threshold_us": float(threshold_us), "metrics": _jsonable(metrics)}
    write_text(paths["json"], json.dumps(doc, indent=1, allow_nan=False) + "\n")
    write_text(paths["txt"], f"{name}: slow = latency > {threshold_us:,.1f} µs\n"
               f"{render(metrics)}\n")
    _plot_confusion(paths["confusion"], name, metrics, cm)
    _plot_cdf(paths["latency_cdf"], name, lat, yp, float(threshold_us))
    return paths
