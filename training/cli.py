"""``mittd train``, ``prune``, ``compress`` and ``tune``.

Registering the commands imports nothing heavy; TensorFlow is imported only when
one of them runs, so ``mittd --help`` and the daemon stay free of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mittd.daemon.replay.traces import ReplayError
from mittd.predictor.bundle import BundleError
from mittd.predictor.models import MODELS
from mittd.traces.argtypes import non_negative_int, output_file, positive_int
from mittd.traces.errors import TraceError
from mittd.traces.records import segment_paths

TRAIN_EXTRA = ("needs the train extra: pip install 'mittd[train]' (TensorFlow, tf-keras, "
               "tensorflow-model-optimization, optuna, matplotlib)")


class TrainingError(Exception):
    """A training command cannot run as asked; one line for the user."""


def _say(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    def say(msg: str) -> None:
        if not getattr(args, "quiet", False):
            print(msg, flush=True)
    return say


def _pipeline():  # type: ignore[no-untyped-def]
    try:
        from mittd.training import pipeline
    except ImportError as e:
        raise TrainingError(f"{e.name or e}: {TRAIN_EXTRA}") from None
    return pipeline


def _out(path: str, force: bool) -> Path:
    out = Path(path)
    if out.suffix != ".mittd":
        raise TrainingError(f"{out}: the bundle file must end in .mittd")
    if out.exists() and not force:
        raise TrainingError(f"{out}: already exists (use --force to overwrite)")
    if not out.parent.is_dir():
        raise TrainingError(f"{out.parent}: directory does not exist")
    return out


def _run(fn, *a, **kw):  # type: ignore[no-untyped-def]
    """Turn data and parameter mistakes from the pipeline into one-line errors."""
    try:
        return fn(*a, **kw)
    except (ValueError, FileNotFoundError, BundleError, ReplayError) as e:
        raise TrainingError(str(e).splitlines()[0]) from None


def cmd_train(args: argparse.Namespace) -> int:
    out = _out(args.output, args.force)
    p = _pipeline()
    if args.replica is not None:  # checked before TensorFlow starts, not after training
        try:
            segment_paths(args.replica)  # a file, or a directory or glob of segments
        except TraceError as e:
            raise TrainingError(f"--replica {e}") from None
    _run(p.train_flow, args.traces, args.model, args.slo, out, epochs=args.epochs,
         batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
         test_fraction=args.test_fraction, ladder_k=args.ladder, reads_only=args.reads_only,
         report_dir=Path(args.report) if args.report else None, sweep=args.sparsity_sweep,
         say=_say(args), verbose=0 if args.quiet else 1,
         validation_fraction=args.validation_fraction, reject_budget=args.reject_budget,
         replica=args.replica)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    out = _out(args.output, args.force)
    p = _pipeline()
    _run(p.prune_flow, Path(args.bundle), args.method, args.sparsity, out, group=args.group,
         epochs=args.epochs, traces=args.trace, seed=args.seed,
         report_dir=Path(args.report) if args.report else None, say=_say(args))
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    out = _out(args.output, args.force)
    p = _pipeline()
    _run(p.compress_flow, Path(args.bundle), args.weights, out, finetune=args.finetune,
         traces=args.trace, seed=args.seed, say=_say(args))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    _pipeline()
    from mittd.training import tune

    metric = "roc_auc" if args.auc_floor is not None else "accuracy"
    floor = args.auc_floor if args.auc_floor is not None else args.accuracy_floor
    result = _run(tune.tune, args.traces, args.model, floor=floor, metric=metric,
                  trials=args.trials, slo=args.slo, seed=args.seed, say=_say(args))
    print(tune.render(result, metric))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    return 0


def _fraction(text: str) -> float:
    try:
        v = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.2 or 20%, got {text!r}"
                                         ) from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return v


def _budget(text: str) -> float:
    v = _fraction(text)
    if v == 0.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text!r}")
    return v


def _sparsity(text: str) -> float:
    v = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be in (0, 1) or (0%, 100%): {text}")
    return v


def add_commands(commands: argparse._SubParsersAction) -> None:
    t = commands.add_parser(
        "train", help="train a latency predictor on labelled traces and export a bundle",
        description="Label the IOs of TRACE(s) slow when their latency exceeds the SLO, "
        "featurise them with the model's featuriser, split by time (train on the earlier "
        "part, test on the later), train with tf-keras, evaluate on the test split "
        "(accuracy, precision, recall, F1, ROC-AUC, PR-AUC, FPR, FNR, fraction rejected) "
        "and export a .mittd bundle. " + TRAIN_EXTRA + ".")
    t.add_argument("traces", nargs="+", metavar="TRACE",
                   help="labelled traces (any format), or directories or globs of Parquet "
                        "segments such as the daemon's IO records")
    t.add_argument("--model", choices=list(MODELS), default="precise_linear",
                   help="network to train (default precise_linear)")
    t.add_argument("--slo", default="auto",
                   help="latency threshold: 500us, 2ms, p95, or auto = the knee of the "
                   "latency CDF as LinnOS/Heimdall label (default auto)")
    t.add_argument("-o", "--output", required=True, help="bundle to write (.mittd)")
    t.add_argument("--epochs", type=positive_int, default=8, help="training epochs (default 8)")
    t.add_argument("--batch-size", type=positive_int, default=256, help="default 256")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    t.add_argument("--seed", type=non_negative_int, default=0,
                   help="random seed (runs are repeatable)")
    t.add_argument("--test-fraction", type=float, default=0.3,
                   help="the latest part of each trace kept for testing (default 0.3)")
    t.add_argument("--validation-fraction", type=_fraction, default=0.2, metavar="F",
                   help="the part of each trace just before the test part held out of "
                   "training: the decision policy and cutoff are chosen there by "
                   "closed-loop replay (default 0.2; 0: no selection)")
    t.add_argument("--reject-budget", type=_budget, default=0.05, metavar="B",
                   help="most reads the device may reject, as a fraction (default 0.05 = "
                   "hedging's extra load): the cutoffs tried and the reject cap")
    t.add_argument("--replica", metavar="TRACE2",
                   help="an independent recording of the same workload, failed over to in "
                   "the validation replay (default: the trace itself, time-shifted)")
    t.add_argument("--ladder", type=int, metavar="K",
                   help="train a K-threshold head (P(latency > t_k)) instead of one SLO")
    t.add_argument("--reads-only", action="store_true", help="label and learn reads only")
    t.add_argument("--report", metavar="DIR", help="write JSON, text and PNG reports here")
    t.add_argument("--sparsity-sweep", action="store_true",
                   help="also prune by magnitude to 90/95/97/98 %% (precise_linear) or "
                   "90/95 %% (good_custom) and print the sparsity table (seed 000 Table 2)")
    t.add_argument("--force", action="store_true", help="overwrite the output")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    p = commands.add_parser(
        "prune", help="prune a bundle (magnitude, SIMD-aware, node, Scalpel) and fine-tune",
        description="Prune a trained bundle and fine-tune it on its training data: "
        "magnitude (TF-MOT prune_low_magnitude, PolynomialDecay), simd (Scalpel's "
        "SIMD-aware groups), node (Scalpel's node pruning with mask layers) or scalpel "
        "(node, then SIMD-aware). Reports accuracy and the measured µs per decision "
        "before and after. " + TRAIN_EXTRA + ".")
    p.add_argument("bundle", help="trained .mittd bundle")
    p.add_argument("--method", choices=["magnitude", "simd", "node", "scalpel"],
                   default="magnitude")
    p.add_argument("--sparsity", type=_sparsity, required=True, help="e.g. 0.95 or 95%%")
    p.add_argument("--group", type=int, default=8,
                   help="SIMD group size for simd/scalpel (8 = AVX2 float32)")
    p.add_argument("--epochs", type=positive_int, default=3, help="fine-tuning epochs (default 3)")
    p.add_argument("--trace", action="append",
                   help="training trace (default: the ones recorded in the bundle)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--report", metavar="DIR", help="write JSON, text and PNG reports here")
    p.add_argument("-o", "--output", required=True, help="pruned bundle to write")
    p.add_argument("--force", action="store_true", help="overwrite the output")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_prune)

    c = commands.add_parser(
        "compress", help="4-bit shared weights (k-means) or float16 weights",
        description="Weight sharing with a 16-entry k-means codebook per layer (Deep "
        "Compression, EIE's 4-bit weights), optionally with centroid fine-tuning, or "
        "float16 weights; reports the accuracy change. " + TRAIN_EXTRA + ".")
    c.add_argument("bundle", help=".mittd bundle")
    c.add_argument("--weights", choices=["kmeans4", "fp16"], required=True)
    c.add_argument("--finetune", action="store_true",
                   help="fine-tune the centroids on the training data (kmeans4)")
    c.add_argument("--trace", action="append",
                   help="evaluation data (default: the traces recorded in the bundle)")
    c.add_argument("--seed", type=non_negative_int, default=0)
    c.add_argument("-o", "--output", required=True, help="compressed bundle to write")
    c.add_argument("--force", action="store_true", help="overwrite the output")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_compress)

    u = commands.add_parser(
        "tune", help="search compression parameters for the fastest model above a floor",
        description="Bayesian (Optuna TPE) search over pruning method, sparsity and SIMD "
        "group size, minimising the measured batch-1 µs per decision subject to an "
        "accuracy or ROC-AUC floor; prints the Pareto front. " + TRAIN_EXTRA + ".")
    u.add_argument("traces", nargs="+", metavar="TRACE")
    u.add_argument("--model", choices=["precise_linear", "good_custom"],
                   default="precise_linear")
    u.add_argument("--slo", default="auto", help="as for train (default auto)")
    floor = u.add_mutually_exclusive_group()
    floor.add_argument("--accuracy-floor", type=float, default=0.9,
                       help="minimum test accuracy (default 0.9)")
    floor.add_argument("--auc-floor", type=float, help="minimum test ROC-AUC instead")
    u.add_argument("--trials", type=int, default=12, help="optimiser trials (default 12)")
    u.add_argument("--seed", type=non_negative_int, default=0)
    u.add_argument("--json", type=output_file, metavar="FILE",
                   help="also write the results as JSON")
    u.add_argument("--quiet", action="store_true")
    u.set_defaults(func=cmd_tune)


