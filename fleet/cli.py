"""``mittd fleet train|replay|report`` (and ``tune``, ``bench`` when installed).

Registering the commands imports neither Ray nor TensorFlow: ``mittd --help`` and
the daemon stay free of them. Each command checks first that the cluster extra
(Ray) is installed — one line, not a traceback — then loads the fleet (a bad
manifest is one line before any cluster starts), runs one Ray task per device and
writes the fleet report.

Exit status: 0 when every device is ok or skipped, 3 ("partial") when some devices
are error rows, 2 for a user mistake, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mittd.fleet.manifest import DEFAULT_MODEL, DeviceJob, FleetError, load_fleet
from mittd.predictor.engines import ENGINE_NAMES
from mittd.predictor.models import MODELS
from mittd.traces.argtypes import (
    at_most,
    count,
    non_negative_int,
    number,
    output_dir,
    positive_int,
    seed32,
)

__all__ = ["EXIT_PARTIAL", "USER_ERRORS", "add_cluster_options", "add_commands",
           "finish", "run_and_report"]

USER_ERRORS: tuple[type[BaseException], ...] = (FleetError,)
EXIT_PARTIAL = 3
MAX_WORKERS = 4096  # CPUs of a local Ray cluster: beyond this a count is a typo
MAX_RETRIES = 100  # a task whose worker dies 100 times will die again
REPORT_DIRNAME = "fleet_report"

learning_rate = number(0.0, 1.0, lo_open=True, hi_open=False, doc="A learning rate in (0, 1].")
start_fraction = number(0.0, 1.0, lo_open=False, hi_open=True, doc="A fraction in [0, 1).")

SPEC_HELP = ("the fleet: a directory (one device per trace file, named by its stem, and "
             "one per subdirectory of Parquet segments), a glob, or a manifest .csv "
             "(header device,trace[,model,slo,class]; several traces ';'-separated) or "
             ".json (a list of {device, trace, model, slo, class})")


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """The options every fleet command shares (how many workers, which cluster)."""
    g = p.add_argument_group("cluster")
    g.add_argument("--workers", type=at_most(positive_int, MAX_WORKERS), metavar="N",
                   help="CPUs of the local Ray cluster = devices run at once (default: all "
                        "CPUs); ignored with --address")
    g.add_argument("--address", metavar="ADDR",
                   help="an existing Ray cluster (ray://host:10001, host:6379 or auto; default "
                        "$RAY_ADDRESS, else a local cluster started in-process)")
    g.add_argument("--retries", type=at_most(non_negative_int, MAX_RETRIES), default=2,
                   metavar="N",
                   help="re-run a device's task when its worker dies, up to N times "
                        "(default 2)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _require_ray() -> None:
    from mittd.fleet.cluster import require_ray

    require_ray()


def finish(rows: Sequence[Mapping[str, Any]], report_dir: Path, *, kind: str,
           meta: Mapping[str, Any]) -> int:
    """Write the fleet report, print it, and say what the exit status means."""
    from mittd.fleet.report import render, write_report

    doc, files, drawn = write_report(rows, report_dir, kind=kind, meta=meta)
    print(render(doc))
    if not drawn:
        print("note: matplotlib is not installed; fleet.png skipped (pip install matplotlib)",
              file=sys.stderr)
    print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    failed = sum(r.get("status") == "error" for r in rows)
    if failed:
        print(f"partial: {failed} of {len(rows)} devices failed", file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def run_and_report(jobs: Sequence[DeviceJob], fn: Callable[[DeviceJob], dict[str, Any]],
                   args: argparse.Namespace, *, kind: str, report_dir: Path,
                   meta: Mapping[str, Any] | None = None) -> int:
    """Run ``fn`` per device with the cluster options of ``args``, then :func:`finish`;
    Ctrl-C is one line and exit 130."""
    from mittd.fleet.runner import FleetInterrupted, run_fleet

    t0 = time.perf_counter()
    try:
        rows = run_fleet(jobs, fn, workers=args.workers, address=args.address,
                         retries=args.retries, progress=not args.no_progress, kind=kind)
    except FleetInterrupted as e:
        print(f"mittd: {e}", file=sys.stderr)
        return 130
    info = {"devices": len(jobs), "workers": args.workers or os.cpu_count(),
            "address": args.address or os.environ.get("RAY_ADDRESS") or None,
            "wall_s": time.perf_counter() - t0, **dict(meta or {})}
    return finish(rows, report_dir, kind=kind, meta=info)


def _model_dir(text: str, create: bool) -> Path:
    d = Path(text).expanduser()
    if create:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FleetError(f"{d}: cannot create the model directory: {e.strerror or e}"
                             ) from None
    elif not d.is_dir():
        raise FleetError(f"{d}: no such model directory")
    return d


def _replay_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"engine": args.engine, "slo": args.replay_slo, "start": args.start,
            "limit": args.limit}


def cmd_train(args: argparse.Namespace) -> int:
    _require_ray()
    from mittd.training.cli import TF_MODULES, _require

    _require("fleet train", TF_MODULES)
    jobs = load_fleet(args.spec, model=args.model, slo=args.slo)
    model_dir = _model_dir(args.output, create=True)
    from mittd.fleet.tasks import train_device

    settings = {"epochs": args.epochs, "batch_size": args.batch_size,
                "learning_rate": args.lr, "seed": args.seed}
    fn = functools.partial(train_device, model_dir=str(model_dir.resolve()), settings=settings,
                           force=args.force, replay=not args.no_replay,
                           replay_settings=_replay_settings(args))
    report = Path(args.report) if args.report else model_dir / REPORT_DIRNAME
    return run_and_report(jobs, fn, args, kind="train", report_dir=report,
                          meta={"spec": str(args.spec), "model_dir": str(model_dir),
                                "settings": settings, "force": args.force})


def cmd_replay(args: argparse.Namespace) -> int:
    _require_ray()
    jobs = load_fleet(args.spec, model=DEFAULT_MODEL)
    model_dir = _model_dir(args.models, create=False)
    from mittd.fleet.tasks import bundle_path

    fn = functools.partial(_replay_one, model_dir=str(model_dir.resolve()),
                           settings=_replay_settings(args))
    report = Path(args.report) if args.report else model_dir / REPORT_DIRNAME
    missing = [j.device for j in jobs if not bundle_path(model_dir, j.device).is_file()]
    if len(missing) == len(jobs):
        raise FleetError(f"{model_dir}: no bundle for any device of {args.spec} (expected "
                         f"<device>.mittd, e.g. {jobs[0].device}.mittd)")
    return run_and_report(jobs, fn, args, kind="replay", report_dir=report,
                          meta={"spec": str(args.spec), "model_dir": str(model_dir),
                                "settings": _replay_settings(args)})


def _replay_one(job: DeviceJob, model_dir: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A device's replay with its own bundle (in the worker)."""
    from mittd.fleet.tasks import bundle_path, replay_device

    return replay_device(job, bundle_path(model_dir, job.device), settings)


def cmd_report(args: argparse.Namespace) -> int:
    from mittd.fleet.report import load_rows, render, write_report

    d = Path(args.model_dir)
    src = d if (d / "fleet.json").is_file() else d / REPORT_DIRNAME
    doc = load_rows(src)
    out = Path(args.report) if args.report else src
    meta = {k: v for k, v in doc.items()
            if k not in ("report", "version", "kind", "written_unix", "aggregates", "rows")}
    new, files, drawn = write_report(doc["rows"], out, kind=str(doc.get("kind", "train")),
                                     meta=meta)
    print(render(new))
    if not drawn:
        print("note: matplotlib is not installed; fleet.png skipped (pip install matplotlib)",
              file=sys.stderr)
    print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0


def _add_report_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", metavar="DIR", type=output_dir,
                   help="fleet report directory (default MODEL_DIR/fleet_report)")


def _add_replay_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("replay")
    g.add_argument("--engine", choices=ENGINE_NAMES, default="auto",
                   help="inference engine of the replay (default auto, as the daemon: the "
                        "fastest measured, which costs seconds of timing per device)")
    g.add_argument("--replay-slo", metavar="SLO", default="model",
                   help="the replay's deadline (default model: each bundle's trained "
                        "threshold; or 500us, p95, auto)")
    g.add_argument("--from", dest="start", type=start_fraction, metavar="F",
                   help="replay from this fraction of each trace on (default: each bundle's "
                        "test split, the part it was not trained on)")
    g.add_argument("--limit", type=count, metavar="N", help="replay at most N IOs per device")


def add_commands(commands: argparse._SubParsersAction) -> None:
    f = commands.add_parser(
        "fleet", help="per-device models for many devices, on Ray",
        description="Train, replay and report one model per device for a whole fleet, one "
        "Ray task per device: a local Ray cluster started in-process by default, or an "
        "existing one (--address / RAY_ADDRESS). A device whose trace fails to parse or "
        "train is an error row, never a failed run (exit 3, 'partial'); a killed worker's "
        "task is retried; a re-run skips devices whose bundle matches its inputs' hash. "
        "Needs the cluster extra: pip install 'mittd[cluster]'.")
    sub = f.add_subparsers(dest="fleet_command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train one bundle per device (MODEL_DIR/<device>.mittd)",
                       description="Train one bundle per device into MODEL_DIR (atomic "
                       "writes; <device>.inputs.json beside each records its inputs' hash), "
                       "replay each on its test split (p99 vs no rejection and hedging) and "
                       "write the fleet report (default MODEL_DIR/fleet_report). Needs the "
                       "train and cluster extras.")
    t.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    t.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", type=output_dir,
                   help="directory for the bundles (created)")
    t.add_argument("--model", choices=list(MODELS), default=DEFAULT_MODEL,
                   help=f"network to train where the manifest names none (default "
                        f"{DEFAULT_MODEL})")
    t.add_argument("--slo", default="auto",
                   help="labelling threshold where the manifest names none (default auto)")
    t.add_argument("--epochs", type=count, default=8, help="training epochs (default 8)")
    t.add_argument("--batch-size", type=count, default=256, help="default 256")
    t.add_argument("--lr", type=learning_rate, default=1e-3, help="Adam learning rate (1e-3)")
    t.add_argument("--seed", type=seed32, default=0, help="random seed (default 0)")
    t.add_argument("--force", action="store_true",
                   help="retrain every device, even those whose bundle is up to date")
    t.add_argument("--no-replay", action="store_true",
                   help="train only: no p99 columns in the report")
    _add_report_option(t)
    _add_replay_options(t)
    add_cluster_options(t)
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("replay", help="replay each device's trace with its bundle",
                       description="Replay each device's trace through the admission core "
                       "with MODEL_DIR/<device>.mittd: read p99 with no rejection, with "
                       "hedging and with the bundle's policy, extra IOs and µs per decision; "
                       "write the fleet report (default MODEL_DIR/fleet_report).")
    r.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    r.add_argument("--models", required=True, metavar="MODEL_DIR",
                   help="the directory 'mittd fleet train' wrote")
    _add_report_option(r)
    _add_replay_options(r)
    add_cluster_options(r)
    r.set_defaults(func=cmd_replay)

    rep = sub.add_parser("report", help="re-render a fleet report from its saved rows",
                         description="Re-render MODEL_DIR/fleet_report/fleet.json (or "
                         "MODEL_DIR/fleet.json) as the table, Markdown and PNG.")
    rep.add_argument("model_dir", metavar="MODEL_DIR")
    rep.add_argument("--report", metavar="DIR", type=output_dir,
                     help="write the re-rendered report here (default: where it was read)")
    rep.set_defaults(func=cmd_report)

    for name in ("tune", "bench"):  # helper modules, when installed
        try:
            mod = importlib.import_module(f"mittd.fleet.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"mittd.fleet.{name}":
                raise
            continue
        mod.add_command(sub)
