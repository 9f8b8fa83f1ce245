"""``mittd evaluate``: a trained bundle's classification metrics on any labelled trace.

Why: a model is trained and tested on one trace's time split; whether it holds on
another workload (a trace never trained on) is the question that matters before
deploying it. Each bundle is judged at its own first trained latency threshold,
from the compiled engine the daemon runs, on every IO (like training's test
metrics) or on reads only. Needs numpy only — no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from mittd.predictor.bundle import load_bundle
from mittd.predictor.engines import make_engine
from mittd.predictor.features import make_featuriser, trace_columns
from mittd.predictor.graph import p_slow
from mittd.traces.registry import open_trace
from mittd.training import evaluate as ev

__all__ = ["add_commands", "evaluate_bundle"]

COLUMNS = (("roc_auc", "ROC-AUC", ".3f"), ("pr_auc", "PR-AUC", ".3f"),
           ("accuracy", "accuracy", ".2%"), ("recall", "recall", ".1%"),
           ("precision", "precision", ".1%"), ("fpr", "FPR", ".1%"))


class EvaluateError(Exception):
    """One line for the user."""


def evaluate_bundle(bundle_path: str | Path, table: Any, start: float = 0.0,
                    reads_only: bool = False, threshold: float | None = None
                    ) -> dict[str, Any]:
    """Metrics of one bundle on a canonical trace table (issue order, ``start``
    fraction skipped after featurising: the state before it is still seen)."""
    b = load_bundle(bundle_path)
    try:
        feat = make_featuriser(b.featuriser)
        x = feat.encode_trace(table)
    except ValueError as e:
        raise EvaluateError(f"{bundle_path}: {e}") from None
    cols = trace_columns(table)
    t_us = b.latency_thresholds_us()[0]
    keep = np.isfinite(cols.lat)
    keep[: int(start * len(keep))] = False
    if reads_only:
        keep &= cols.op == 0
    if not keep.any():
        raise EvaluateError("no IO with a known latency to evaluate on")
    engine = make_engine("csr", b.graph, b.params)
    p = p_slow(b.graph, engine.logits(x[keep]))
    p = p[:, 0] if p.ndim == 2 else p
    y = (cols.lat[keep] > t_us).astype(np.int8)
    probs = b.decision_thresholds()
    cut = float(probs[0]) if threshold is None else threshold
    m = ev.metrics(y, p, cut)
    return {"bundle": str(bundle_path), "model": b.version_id, "threshold_us": t_us,
            "decision_threshold": cut, "ios": int(keep.sum()),
            "slow_fraction": float(y.mean()), **m}


def _render(rows: list[dict[str, Any]]) -> str:
    head = ["bundle", "IOs", "slow", *(c[1] for c in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        cells = [Path(r["bundle"]).stem, f"{r['ios']:,}", f"{r['slow_fraction']:.1%}"]
        cells += [format(r[k], f) if isinstance(r.get(k), float) else "-"
                  for k, _, f in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if not 0.0 <= args.start < 1.0:
        raise EvaluateError(f"--from must be in [0, 1), got {args.start}")
    table = open_trace(args.trace, args.format).table()
    rows = [evaluate_bundle(b, table, args.start, args.reads_only, args.decision_threshold)
            for b in args.bundles]
    thresholds = ", ".join(f"{r['threshold_us']:.1f} µs" for r in rows)
    print(f"{args.trace}: each bundle judged at its own trained threshold ({thresholds})"
          + (", reads only" if args.reads_only else ""))
    print(_render(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    return 0


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "evaluate", help="a bundle's ROC-AUC, accuracy, recall... on any labelled trace",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("bundles", nargs="+", metavar="B.mittd", help="trained bundles")
    p.add_argument("--trace", required=True, help="labelled trace (any format mittd reads)")
    p.add_argument("--from", dest="start", type=float, default=0.0, metavar="F",
                   help="score only IOs after the first F of the trace (e.g. 0.7: the test "
                        "split of a model trained on this trace); default 0")
    p.add_argument("--reads-only", action="store_true", help="score reads only")
    p.add_argument("--decision-threshold", type=float, metavar="P",
                   help="predict slow when P(slow) > P (default: each bundle's own)")
    p.add_argument("--format", default="auto", help="trace format (default: detected)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.set_defaults(func=cmd_evaluate)


USER_ERRORS = (EvaluateError,)
