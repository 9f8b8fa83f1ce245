"""``mittd train``, ``prune``, ``compress`` and ``tune``.

Registering the commands imports nothing heavy; TensorFlow is imported only when
one of them runs, so ``mittd --help`` and the daemon stay free of it. Before any
work each command checks that the train extra is installed (``find_spec``, which
imports nothing), so a missing TensorFlow is one line, not a traceback after the
data has loaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mittd.daemon.replay.traces import ReplayError
from mittd.predictor.bundle import BundleError
from mittd.predictor.models import MODELS
from mittd.traces.argtypes import (
    at_most,
    count,
    number,
    output_dir,
    output_file,
    positive_int,
    probability,
    seed32,
)
from mittd.traces.atomic import write_text
from mittd.traces.errors import TraceError
from mittd.traces.records import segment_paths

TRAIN_EXTRA = ("needs the train extra: pip install 'mittd[train]' (TensorFlow, tf-keras, "
               "tensorflow-model-optimization, optuna, matplotlib)")


# an Adam step above 1 only diverges
learning_rate = number(0.0, 1.0, lo_open=True, hi_open=False, doc="A learning rate in (0, 1].")
MAX_LADDER = 64  # thresholds of a ladder head
MAX_GROUP = 1024  # SIMD group size (8 = AVX2 float32)


class TrainingError(Exception):
    """A training command cannot run as asked; one line for the user."""


def _say(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    def say(msg: str) -> None:
        if not getattr(args, "quiet", False):
            print(msg, flush=True)
    return say


# what each command imports (all of the train extra but matplotlib, needed for --report)
TF_MODULES = ("tensorflow", "tf_keras", "tensorflow_model_optimization")


def _missing_extra(command: str, module: str) -> TrainingError:
    return TrainingError(f"{command} needs the train extra: pip install 'mittd[train]' "
                         f"(missing module {module})")


def _require(command: str, modules: Iterable[str]) -> None:
    """Refuse, in one line, to start ``command`` without the modules it will import."""
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken install, or sys.modules[name] = None
            found = False
        if not found:
            raise _missing_extra(command, name)


def _pipeline(command: str, extra: Sequence[str] = ()):  # type: ignore[no-untyped-def]
    _require(command, (*TF_MODULES, *extra))
    from mittd.training import pipeline  # TensorFlow itself only inside the flows

    return pipeline


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (a link, a relative path): an output must never
    be one of the inputs it is computed from."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _out(path: str, force: bool, inputs: Sequence[str] = ()) -> Path:
    out = Path(path)
    if out.suffix != ".mittd":
        raise TrainingError(f"{out}: the bundle file must end in .mittd")
    for src in inputs:
        if same_file(out, Path(src)):
            raise TrainingError(f"-o {out} is also an input ({src}): write the new bundle "
                                "to another file")
    if out.is_dir():
        raise TrainingError(f"{out}: is a directory, expected a bundle file to write")
    if out.exists() and not force:
        raise TrainingError(f"{out}: already exists (use --force to overwrite)")
    if not out.parent.is_dir():
        raise TrainingError(f"{out.parent}: directory does not exist")
    return out


def _run(command: str, fn, *a, **kw):  # type: ignore[no-untyped-def]
    """Turn data and parameter mistakes from the pipeline into one-line errors."""
    try:
        return fn(*a, **kw)
    except ImportError as e:  # a module of the extra that find_spec saw but cannot load
        raise _missing_extra(command, e.name or str(e)) from None
    except (ValueError, FileNotFoundError, BundleError, ReplayError) as e:
        raise TrainingError(str(e).splitlines()[0]) from None


def _report_extra(args: argparse.Namespace) -> tuple[str, ...]:
    return ("matplotlib",) if getattr(args, "report", None) else ()


def cmd_train(args: argparse.Namespace) -> int:
    out = _out(args.output, args.force, [*args.traces, *([args.replica] if args.replica
                                                         else [])])
    p = _pipeline("train", _report_extra(args))
    if args.replica is not None:  # checked before TensorFlow starts, not after training
        try:
            segment_paths(args.replica)  # a file, or a directory or glob of segments
        except TraceError as e:
            raise TrainingError(f"--replica {e}") from None
    _run("train", p.train_flow, args.traces, args.model, args.slo, out, epochs=args.epochs,
         batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
         test_fraction=args.test_fraction, ladder_k=args.ladder, reads_only=args.reads_only,
         report_dir=Path(args.report) if args.report else None, sweep=args.sparsity_sweep,
         say=_say(args), verbose=0 if args.quiet else 1,
         validation_fraction=args.validation_fraction, reject_budget=args.reject_budget,
         replica=args.replica)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    out = _out(args.output, args.force, [args.bundle, *(args.trace or [])])
    p = _pipeline("prune", _report_extra(args))
    _run("prune", p.prune_flow, Path(args.bundle), args.method, args.sparsity, out,
         group=args.group, epochs=args.epochs, traces=args.trace, seed=args.seed,
         report_dir=Path(args.report) if args.report else None, say=_say(args))
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    out = _out(args.output, args.force, [args.bundle, *(args.trace or [])])
    p = _pipeline("compress")
    _run("compress", p.compress_flow, Path(args.bundle), args.weights, out, finetune=args.finetune,
         traces=args.trace, seed=args.seed, say=_say(args))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    if args.json:
        for src in args.traces:
            if same_file(Path(args.json), Path(src)):
                raise TrainingError(f"--json {args.json} is also an input ({src}): write the "
                                    "results to another file")
    _pipeline("tune", ("optuna",))
    from mittd.training import tune

    metric = "roc_auc" if args.auc_floor is not None else "accuracy"
    floor = args.auc_floor if args.auc_floor is not None else args.accuracy_floor
    result = _run("tune", tune.tune, args.traces, args.model, floor=floor, metric=metric,
                  trials=args.trials, slo=args.slo, seed=args.seed, say=_say(args))
    print(tune.render(result, metric))
    if args.json:
        import json

        write_text(args.json, json.dumps(result, indent=1, default=float))
    return 0


def _parse_fraction(text: str) -> float:
    try:
        return float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.2 or 20%, got {text!r}"
                                         ) from None


def _fraction(text: str) -> float:
    v = _parse_fraction(text)
    if not 0.0 <= v < 1.0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return v


def _budget(text: str) -> float:
    v = _fraction(text)
    if v == 0.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text!r}")
    return v


def _sparsity(text: str) -> float:
    v = _parse_fraction(text)
    if not 0.0 < v < 1.0:  # NaN too
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
    t.add_argument("--epochs", type=count, default=8, help="training epochs (default 8)")
    t.add_argument("--batch-size", type=count, default=256, help="default 256")
    t.add_argument("--lr", type=learning_rate, default=1e-3, help="Adam learning rate (1e-3)")
    t.add_argument("--seed", type=seed32, default=0,
                   help="random seed (runs are repeatable)")
    t.add_argument("--test-fraction", type=_budget, default=0.3, metavar="F",
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
    t.add_argument("--ladder", type=at_most(positive_int, MAX_LADDER), metavar="K",
                   help="train a K-threshold head (P(latency > t_k)) instead of one SLO")
    t.add_argument("--reads-only", action="store_true", help="label and learn reads only")
    t.add_argument("--report", metavar="DIR", type=output_dir,
                   help="write JSON, text and PNG reports here")
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
    p.add_argument("--group", type=at_most(positive_int, MAX_GROUP), default=8,
                   help="SIMD group size for simd/scalpel (8 = AVX2 float32)")
    p.add_argument("--epochs", type=count, default=3, help="fine-tuning epochs (default 3)")
    p.add_argument("--trace", action="append",
                   help="training trace (default: the ones recorded in the bundle)")
    p.add_argument("--seed", type=seed32, default=0)
    p.add_argument("--report", metavar="DIR", type=output_dir,
                   help="write JSON, text and PNG reports here")
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
    c.add_argument("--seed", type=seed32, default=0)
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
    floor.add_argument("--accuracy-floor", type=probability, default=0.9,
                       help="minimum test accuracy (default 0.9)")
    floor.add_argument("--auc-floor", type=probability,
                       help="minimum test ROC-AUC instead")
    u.add_argument("--trials", type=count, default=12, help="optimiser trials (default 12)")
    u.add_argument("--seed", type=seed32, default=0)
    u.add_argument("--json", type=output_file, metavar="FILE",
                   help="also write the results as JSON")
    u.add_argument("--quiet", action="store_true")
    u.set_defaults(func=cmd_tune)


