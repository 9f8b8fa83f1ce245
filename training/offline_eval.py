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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from mittd.predictor.bundle import load_bundle
from mittd.predictor.engines import make_engine
from mittd.predictor.features import make_featuriser, trace_columns
from mittd.predictor.graph import p_slow
from mittd.traces.argtypes import number, output_file, probability
from mittd.traces.atomic import write_text
from mittd.traces.records import D_REJECT, DECISIONS, iter_records
from mittd.traces.registry import TraceStream, open_trace
from mittd.traces.schema import open_parquet
from mittd.training import evaluate as ev

__all__ = ["Served", "add_commands", "evaluate_bundle", "served_columns"]

COLUMNS = (("roc_auc", "ROC-AUC", ".3f"), ("pr_auc", "PR-AUC", ".3f"),
           ("accuracy", "accuracy", ".2%"), ("recall", "recall", ".1%"),
           ("precision", "precision", ".1%"), ("fpr", "FPR", ".1%"))


class EvaluateError(Exception):
    """One line for the user."""


@dataclass(frozen=True)
class Served:
    """What the daemon recorded for each row of a trace view of records, in the rows'
    order (``TraceStream.table()``): P(slow) (NaN: none made), the head asked (-1:
    none) and the deciding bundle's sha256 ("" for rows of plain trace files)."""

    p_slow: np.ndarray
    threshold_index: np.ndarray
    model_sha: np.ndarray

    def take(self, idx: np.ndarray) -> Served:
        return Served(self.p_slow[idx], self.threshold_index[idx], self.model_sha[idx])


SERVED_COLUMNS = ("p_slow", "threshold_index", "model_sha", "decision")


def served_columns(stream: TraceStream) -> Served | None:
    """The recorded decision columns aligned row for row with ``stream.table()`` (the
    IOs that reached the device, file after file); None when no file is a record."""
    if not stream.is_records:
        return None
    records = set(stream.record_paths)
    ps: list[np.ndarray] = []
    ks: list[np.ndarray] = []
    shas: list[np.ndarray] = []
    for path in stream.paths:
        if path not in records:  # a plain trace in the set: rows with nothing served
            n = open_parquet(path).metadata.num_rows  # damaged: one TraceError line
            ps.append(np.full(n, np.nan))
            ks.append(np.full(n, -1, np.int8))
            shas.append(np.full(n, "", object))
            continue
        for batch in iter_records([path], SERVED_COLUMNS):
            issued = pc.invert(pc.equal(batch.column("decision").cast("string"),
                                        DECISIONS[D_REJECT]))
            batch = batch.filter(issued)  # as reached_device keeps them
            ps.append(batch.column("p_slow").to_numpy(zero_copy_only=False)
                      .astype(np.float64))
            ks.append(batch.column("threshold_index").to_numpy(zero_copy_only=False))
            shas.append(batch.column("model_sha").to_numpy(zero_copy_only=False)
                        .astype(object))
    if not ps:
        return Served(np.zeros(0), np.zeros(0, np.int8), np.zeros(0, object))
    return Served(np.concatenate(ps), np.concatenate(ks), np.concatenate(shas))


def _issue_order(table: Any) -> np.ndarray | None:
    """The permutation ``trace_columns`` applies (stable sort by issue time), or None."""
    ts = table.column("ts_issue_us").to_numpy()
    if len(ts) > 1 and not bool(np.all(ts[1:] >= ts[:-1])):
        return np.argsort(ts, kind="stable")
    return None


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    return ev.roc_auc(y, score) if len(y) else None


def evaluate_bundle(bundle_path: str | Path, table: Any, start: float = 0.0,
                    reads_only: bool = False, threshold: float | None = None,
                    served: Served | None = None) -> dict[str, Any]:
    """Metrics of one bundle on a canonical trace table (issue order, ``start``
    fraction skipped after featurising: the state before it is still seen).

    With ``served`` (the records' columns, aligned with ``table``), also
    ``served_roc_auc``: the ROC-AUC of the recorded P(slow) on the scored IOs this
    bundle decided with a prediction of its first head (threshold_index 0, the one
    labelled here), ``served_ios`` of them, and ``offline_roc_auc_on_served``: this
    re-prediction's ROC-AUC on those same IOs (None when there are none).
    """
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
    row = {"bundle": str(bundle_path), "model": b.version_id, "threshold_us": t_us,
           "decision_threshold": cut, "ios": int(keep.sum()),
           "slow_fraction": float(y.mean()), **m}
    if served is not None:
        if len(served.p_slow) != len(keep):
            raise EvaluateError(f"{bundle_path}: the recorded columns do not match the "
                                "trace's rows")
        order = _issue_order(table)
        s = served.take(order) if order is not None else served
        mine = ((s.model_sha == b.sha256) & np.isfinite(s.p_slow)
                & (s.threshold_index == 0))[keep]
        row["served_ios"] = int(mine.sum())
        row["served_roc_auc"] = _auc(y[mine], s.p_slow[keep][mine])
        row["offline_roc_auc_on_served"] = _auc(y[mine], p[mine])
    return row


SERVED_COLUMN = ("served_roc_auc", "served ROC-AUC", ".3f")


def _render(rows: list[dict[str, Any]], served: bool = False) -> str:
    columns: Sequence[tuple[str, str, str]] = (*COLUMNS, SERVED_COLUMN) if served else COLUMNS
    head = ["bundle", "IOs", "slow", *(c[1] for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        cells = [Path(r["bundle"]).stem, f"{r['ios']:,}", f"{r['slow_fraction']:.1%}"]
        cells += [format(r[k], f) if isinstance(r.get(k), float) else "-"
                  for k, _, f in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


START = number(0.0, 1.0, lo_open=False, hi_open=True,
               doc="The part of a trace skipped before scoring, in [0, 1).")


def cmd_evaluate(args: argparse.Namespace) -> int:
    if not 0.0 <= args.start < 1.0:  # argparse checked it; callers in code may not
        raise EvaluateError(f"--from must be in [0, 1), got {args.start}")
    if args.json:
        from mittd.training.cli import same_file

        for src in (args.trace, *args.bundles):
            if same_file(Path(args.json), Path(src)):
                raise EvaluateError(f"--json {args.json} is also an input ({src}): write "
                                    "the rows to another file")
    stream = open_trace(args.trace, args.format)
    table = stream.table()
    served = served_columns(stream)
    rows = [evaluate_bundle(b, table, args.start, args.reads_only, args.decision_threshold,
                            served) for b in args.bundles]
    thresholds = ", ".join(f"{r['threshold_us']:.1f} µs" for r in rows)
    print(f"{args.trace}: each bundle judged at its own trained threshold ({thresholds})"
          + (", reads only" if args.reads_only else ""))
    print(_render(rows, served is not None))
    if served is not None:
        ios = ", ".join(f"{Path(r['bundle']).stem} {r['served_ios']:,}" for r in rows)
        print(f"served ROC-AUC: the P(slow) the daemon recorded, on the scored IOs each "
              f"bundle decided ({ios} IOs)")
    if args.json:
        write_text(args.json, json.dumps(rows, indent=1, default=float))
    return 0


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "evaluate", help="a bundle's ROC-AUC, accuracy, recall... on any labelled trace",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("bundles", nargs="+", metavar="B.mittd", help="trained bundles")
    p.add_argument("--trace", required=True,
                   help="labelled trace (any format mittd reads), or the daemon's IO records: "
                        "a segment, a directory or a glob of them")
    p.add_argument("--from", dest="start", type=START, default=0.0, metavar="F",
                   help="score only IOs after the first F of the trace (e.g. 0.7: the test "
                        "split of a model trained on this trace); default 0")
    p.add_argument("--reads-only", action="store_true", help="score reads only")
    p.add_argument("--decision-threshold", type=probability, metavar="P",
                   help="predict slow when P(slow) > P (default: each bundle's own)")
    p.add_argument("--format", default="auto", help="trace format (default: detected)")
    p.add_argument("--json", type=output_file, metavar="FILE", help="also write the rows as JSON")
    p.set_defaults(func=cmd_evaluate)


USER_ERRORS = (EvaluateError,)
