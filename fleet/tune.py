"""``mittd fleet tune``: choose compression parameters per device or per device class.

Two granularities, because a fleet is both:

* ``--per device`` (default): one Ray task per device, each running the existing
  ``mittd tune`` search (:func:`mittd.training.tune.tune`: dense model once, then an
  Optuna TPE search over pruning method, sparsity and SIMD group, minimising the
  measured µs per decision under an accuracy or ROC-AUC floor). The tasks are
  independent, so this scales like ``fleet train``.
* ``--per class``: the devices of one class (the manifest's ``class`` column, else
  their model) share one configuration, so one search per class pools their traces
  and runs its *trials* in parallel with **Ray Tune** and ``OptunaSearch`` (the
  same TPE sampler, the same two objectives and search space as ``mittd tune``).
  Why Ray Tune rather than Optuna's shared journal storage: the dense model is
  trained once per class and handed to every trial through Ray's object store
  (``tune.with_parameters``), so trials need neither shared files nor the traces
  on every node, and Ray Tune retries a trial whose worker died (``FailureConfig``);
  with a journal file every task would have to reach one shared file system and
  re-load the data itself. Each device's traces are checked first (one Ray task
  each): a trace that fails to parse or label is that device's error row, and its
  class is tuned on the others.

Rows are plain dicts; the table and JSON are written atomically
(:mod:`mittd.traces.atomic`). Ray, Optuna and TensorFlow are imported only inside
the functions that run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from mittd.fleet.cli import EXIT_PARTIAL, add_cluster_options
from mittd.fleet.manifest import DeviceJob, FleetError, load_fleet
from mittd.fleet.tasks import THREAD_ENV, base_row, one_line
from mittd.traces.argtypes import (
    at_most,
    count,
    output_dir,
    output_file,
    positive_int,
    probability,
    seed32,
)
from mittd.traces.atomic import write_text

__all__ = ["METRICS", "TUNE_MODELS", "add_command", "class_of", "cmd_tune", "pareto_front",
           "render", "suggest", "tune_classes", "tune_device", "tune_devices"]

TUNE_MODELS = ("precise_linear", "good_custom")  # as ``mittd tune``: the prunable models
METRICS = ("accuracy", "roc_auc")
MAX_TRIALS = 10_000
QUALITY = ("accuracy", "roc_auc", "recall", "precision", "degenerate")


def _limit_threads() -> None:
    for k, v in THREAD_ENV.items():
        os.environ.setdefault(k, v)


def class_of(job: DeviceJob) -> str:
    """The class a device is tuned with: its manifest ``class``, else its model."""
    return job.device_class or job.model


def _check_model(job: DeviceJob) -> str | None:
    if job.model not in TUNE_MODELS:
        return (f"model {job.model} cannot be tuned (mittd tune prunes "
                f"{' and '.join(TUNE_MODELS)})")
    return None


# -- per device: one Ray task runs ``mittd tune`` ------------------------------------

def tune_device(job: DeviceJob, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``mittd tune`` on one device's traces, inside a Ray worker. Never raises (but
    for a dead worker): a failure is the row's ``error``."""
    _limit_threads()
    t0 = time.perf_counter()
    row = {**base_row(job, "tune"), "class": job.device_class}
    try:
        bad = _check_model(job)
        if bad:
            raise ValueError(bad)
        from mittd.training.tune import tune

        result = tune(list(job.traces), job.model, floor=settings["floor"],
                      metric=settings["metric"], trials=settings["trials"], slo=job.slo,
                      epochs=settings["epochs"], prune_epochs=settings["prune_epochs"],
                      seed=settings["seed"], say=lambda _msg: None)
        row.update(status="ok", **result)
    except Exception as e:  # a batch system: every failure is a row
        row.update(status="error", error=one_line(e))
    row["seconds"] = time.perf_counter() - t0
    return row


def tune_devices(jobs: Sequence[DeviceJob], settings: Mapping[str, Any], *,
                 workers: int | None = None, address: str | None = None, retries: int = 2,
                 progress: bool = True) -> list[dict[str, Any]]:
    """One row per device (``tune_device`` on Ray), in job order."""
    from mittd.fleet.runner import run_fleet

    rows = run_fleet(jobs, partial(tune_device, settings=dict(settings)), workers=workers,
                     address=address, retries=retries, progress=progress, kind="tune")
    for job, row in zip(jobs, rows, strict=True):
        row.setdefault("class", job.device_class)
    return rows


# -- per class: Ray Tune + OptunaSearch over the trials of one search ----------------

def suggest(trial: Any) -> None:
    """``mittd tune``'s search space (one home: ``training.tune.suggest``), as the
    define-by-run space ``OptunaSearch`` wants (it returns nothing)."""
    from mittd.training.tune import suggest as space

    space(trial)


def check_device(job: DeviceJob, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Parse and label one device's traces (no TensorFlow): a class is tuned only on
    devices whose traces load, the others are error rows."""
    _limit_threads()
    t0 = time.perf_counter()
    row = {**base_row(job, "tune"), "class": class_of(job)}
    try:
        bad = _check_model(job)
        if bad:
            raise ValueError(bad)
        from mittd.predictor.models import MODEL_FEATURISER
        from mittd.training.dataset import load_dataset

        ds = load_dataset(list(job.traces), MODEL_FEATURISER[job.model], slo=job.slo)
        row.update(status="ok", examples=len(ds.y_train) + len(ds.y_test))
    except Exception as e:  # a batch system: every failure is a row
        row.update(status="error", error=one_line(e))
    row["seconds"] = time.perf_counter() - t0
    return row


def _dense(traces: list[str], model: str, slo: str, epochs: int, seed: int
           ) -> dict[str, Any]:
    """One class's data and dense model (a Ray task): what every trial prunes."""
    _limit_threads()
    from mittd.predictor.models import MODEL_FEATURISER
    from mittd.training.dataset import load_dataset
    from mittd.training.pipeline import decision_latency_us, evaluate_params
    from mittd.training.train import train

    ds = load_dataset(traces, MODEL_FEATURISER[model], slo=slo)
    dense = train(model, ds, epochs=epochs, seed=seed, verbose=0)
    m0 = evaluate_params(dense.graph, dense.params, ds)
    us0 = decision_latency_us(dense.graph, dense.params, ds.x_test)
    return {"ds": ds, "graph": dense.graph, "params": dense.params,
            "dense": {"decision_us": us0, "accuracy": m0["accuracy"],
                      "roc_auc": m0["roc_auc"]}}


def _trial(config: dict[str, Any], *, data: dict[str, Any], metric: str, prune_epochs: int,
           seed: int) -> None:
    """One Ray Tune trial: the body of ``mittd tune``'s objective."""
    _limit_threads()
    from ray import tune as rtune

    from mittd.training.keras_graph import to_keras
    from mittd.training.pipeline import (
        achieved_sparsity,
        decision_latency_us,
        evaluate_params,
        run_prune,
    )

    ds, graph = data["ds"], data["graph"]
    method, sparsity = config["method"], float(config["sparsity"])
    group = int(config.get("group") or 8)
    params = run_prune(to_keras(graph, data["params"]), graph, ds, method, sparsity,
                       group=group, epochs=prune_epochs, seed=seed)
    m = evaluate_params(graph, params, ds)
    us = decision_latency_us(graph, params, ds.x_test)
    rtune.report({"decision_us": us, "objective": float(m[metric]),
                  "achieved_sparsity": achieved_sparsity(params),
                  **{k: float(m[k]) for k in QUALITY if k in m}})


def pareto_front(rows: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Trials no other trial beats on both µs (lower) and ``metric`` (higher), fastest
    first: ``mittd tune``'s Pareto front."""
    def dominated(a: Mapping[str, Any]) -> bool:
        return any(b["decision_us"] <= a["decision_us"] and b[metric] >= a[metric]
                   and (b["decision_us"] < a["decision_us"] or b[metric] > a[metric])
                   for b in rows)
    return sorted((dict(r) for r in rows if not dominated(r)), key=lambda r: r["decision_us"])


def _group(jobs: Sequence[DeviceJob]) -> dict[str, list[DeviceJob]]:
    """Devices by class; one class must share one model and SLO (a manifest mistake)."""
    classes: dict[str, list[DeviceJob]] = {}
    for j in jobs:
        classes.setdefault(class_of(j), []).append(j)
    for name, members in classes.items():
        kinds = {(j.model, j.slo) for j in members}
        if len(kinds) > 1:
            seen = ", ".join(f"{m}/{s}" for m, s in sorted(kinds))
            raise FleetError(f"class {name!r}: its devices must share one model and SLO to be "
                             f"tuned together (found {seen}); give them different classes")
    return classes


def _class_row(name: str, members: Sequence[DeviceJob]) -> dict[str, Any]:
    return {"class": name, "devices": [j.device for j in members], "kind": "tune-class",
            "model": members[0].model, "slo": members[0].slo, "status": "error",
            "error": None}


def _tune_class(ray: Any, name: str, members: Sequence[DeviceJob], dense_ref: Any,
                settings: Mapping[str, Any], workers: int | None, retries: int,
                storage: Path) -> dict[str, Any]:
    """One Ray Tune run (OptunaSearch, TPE) over one class's trials."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no console tables from Ray Tune
    import logging

    import optuna
    from ray import tune as rtune
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)

    t0 = time.perf_counter()
    row = _class_row(name, members)
    metric = settings["metric"]
    try:
        try:
            data = ray.get(dense_ref)
        except Exception as e:
            cause = getattr(e, "cause", None) or e
            raise RuntimeError(f"dense model: {one_line(cause)}") from None
        row["dense"] = data["dense"]
        search = OptunaSearch(suggest, metric=["decision_us", "objective"], mode=["min", "max"],
                              seed=settings["seed"])
        trainable = rtune.with_resources(
            rtune.with_parameters(_trial, data=data, metric=metric,  # once in the object store
                                  prune_epochs=settings["prune_epochs"], seed=settings["seed"]),
            {"cpu": 1})
        tuner = rtune.Tuner(
            trainable,
            tune_config=rtune.TuneConfig(search_alg=search, num_samples=settings["trials"],
                                         max_concurrent_trials=workers or None),
            run_config=rtune.RunConfig(
                name=f"class-{name}", storage_path=str(storage.resolve()), verbose=0,
                failure_config=rtune.FailureConfig(max_failures=retries)))
        results = tuner.fit()
        trials, failed = [], []
        for i, r in enumerate(results):
            if r.error is not None or "decision_us" not in (r.metrics or {}):
                failed.append(one_line(r.error) if r.error else "no result")
                continue
            m = r.metrics
            trials.append({"trial": i, **r.config, "decision_us": float(m["decision_us"]),
                           metric: float(m["objective"]),
                           "achieved_sparsity": m.get("achieved_sparsity"),
                           **{k: m[k] for k in QUALITY if k in m and k != metric}})
        if not trials:
            raise RuntimeError(f"every trial failed: {failed[0] if failed else 'none ran'}")
        floor = settings["floor"]
        feasible = [t for t in trials if t[metric] >= floor]
        best = min(feasible, key=lambda t: t["decision_us"]) if feasible else None
        row.update(status="ok", pareto=pareto_front(trials, metric), trials=len(trials),
                   failed_trials=len(failed), floor={metric: floor},
                   best=None if best is None else {
                       k: best[k] for k in ("trial", "method", "sparsity", "group",
                                            "decision_us", metric) if k in best})
    except Exception as e:  # one class failing must not fail the other classes
        row.update(status="error", error=one_line(e))
    row["seconds"] = time.perf_counter() - t0
    return row


def tune_classes(jobs: Sequence[DeviceJob], settings: Mapping[str, Any], *,
                 workers: int | None = None, address: str | None = None, retries: int = 2,
                 progress: bool = True, storage: str | Path | None = None,
                 say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Error rows for the devices whose traces do not load, then one row per class."""
    from mittd.fleet.cluster import LOCAL_OBJECT_STORE, ray_session
    from mittd.fleet.runner import run_fleet

    classes = _group(jobs)
    # the object store holds each class's data set, once, for its trials
    store = max(LOCAL_OBJECT_STORE, 512 << 20)
    with ray_session(workers, address, object_store=store) as ray, \
            contextlib.ExitStack() as stack:
        checked = run_fleet(jobs, partial(check_device, settings=dict(settings)),
                            workers=workers, retries=retries, progress=progress, kind="check")
        bad = {r["device"] for r in checked if r.get("status") != "ok"}
        rows = [r for r in checked if r["device"] in bad]
        dense = ray.remote(num_cpus=1, max_retries=retries)(_dense)
        refs = {}
        for name, members in classes.items():  # every class's dense model at once
            good = [j for j in members if j.device not in bad]
            if good:
                refs[name] = dense.remote([t for j in good for t in j.traces], good[0].model,
                                          good[0].slo, settings["epochs"], settings["seed"])
        base = Path(storage) if storage else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="mittd-fleet-tune-")))
        for name, members in classes.items():
            good = [j for j in members if j.device not in bad]
            if not good:
                row = _class_row(name, members)
                row["error"] = "no device of the class has a trace that loads"
                rows.append(row)
                continue
            say(f"class {name}: {len(good)} device(s), {settings['trials']} trials …")
            rows.append(_tune_class(ray, name, good, refs[name], settings, workers, retries,
                                    base))
    return rows


# -- output --------------------------------------------------------------------------

def _fmt(v: Any, spec: str = ".4f") -> str:
    return "—" if v is None else format(v, spec)


def render(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    """The fleet tuning table: one line per device or class."""
    name = "metric" if metric == "accuracy" else "ROC-AUC"
    lines = [f"| device / class | model | trials | best method | sparsity | group | µs/decision "
             f"| {name} | dense µs | dense {name} | status |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        who = r.get("device") or f"class {r.get('class')} ({len(r.get('devices') or [])} dev.)"
        if r.get("status") != "ok":
            lines.append(f"| {who} | {r.get('model', '')} | | | | | | | | | error: "
                         f"{r.get('error')} |")
            continue
        b, d = r.get("best") or {}, r.get("dense") or {}
        floor = next(iter((r.get("floor") or {metric: None}).values()))
        status = "ok" if b else f"ok: no trial reached {metric} >= {floor}"
        lines.append(
            f"| {who} | {r['model']} | {r.get('trials', '')} | {b.get('method', '—')} | "
            f"{_fmt(b.get('sparsity'), '.1%')} | {b.get('group', 8) if b else '—'} | "
            f"{_fmt(b.get('decision_us'), '.2f')} | {_fmt(b.get(metric))} | "
            f"{_fmt(d.get('decision_us'), '.2f')} | {_fmt(d.get(metric))} | {status} |")
    failed = sum(r.get("status") != "ok" for r in rows)
    lines += ["", f"{len(rows) - failed} ok, {failed} failed"]
    return "\n".join(lines)


def cmd_tune(args: argparse.Namespace) -> int:
    from mittd.fleet.cluster import require_ray
    from mittd.fleet.runner import FleetInterrupted
    from mittd.training.cli import TF_MODULES, _require

    require_ray()
    _require("fleet tune", (*TF_MODULES, "optuna"))
    jobs = load_fleet(args.spec, model=args.model)
    if args.per == "class":
        _group(jobs)  # a class mixing models is refused before any cluster starts
    settings = {"floor": args.floor, "metric": args.metric, "trials": args.trials,
                "epochs": args.epochs, "prune_epochs": args.prune_epochs, "seed": args.seed}
    say = (lambda _m: None) if args.no_progress else (lambda m: print(m, file=sys.stderr))
    out = Path(args.output) if args.output else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    common = {"workers": args.workers, "address": args.address, "retries": args.retries,
              "progress": not args.no_progress}
    t0 = time.perf_counter()
    try:
        if args.per == "class":
            rows = tune_classes(jobs, settings, storage=out / "ray_tune" if out else None,
                                say=say, **common)
        else:
            rows = tune_devices(jobs, settings, **common)
    except FleetInterrupted as e:
        rows = e.rows
        print(f"mittd: {e}", file=sys.stderr)
        _write(args, out, rows, settings, time.perf_counter() - t0)
        return 130
    _write(args, out, rows, settings, time.perf_counter() - t0)
    failed = sum(r.get("status") == "error" for r in rows)
    if failed:
        print(f"partial: {failed} of {len(rows)} rows failed", file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def _write(args: argparse.Namespace, out: Path | None, rows: list[dict[str, Any]],
           settings: Mapping[str, Any], seconds: float) -> None:
    table = render(rows, args.metric)
    print(table)
    doc = {"per": args.per, "spec": str(args.spec), "settings": dict(settings),
           "seconds": seconds, "rows": rows}
    text = json.dumps(doc, indent=1, default=str) + "\n"
    if out:
        write_text(out / "tune.json", text)
        write_text(out / "tune.md", f"# mittd fleet tune (per {args.per})\n\n{table}\n")
    if args.json:
        write_text(args.json, text)


def add_command(sub: argparse._SubParsersAction) -> None:
    """``mittd fleet tune`` (``sub``: the ``fleet`` subcommands)."""
    t = sub.add_parser(
        "tune", help="search compression parameters per device or per device class",
        description="Run mittd tune's search (Optuna TPE over pruning method, sparsity and "
        "SIMD group; the fastest measured µs per decision above an accuracy or ROC-AUC "
        "floor) for every device of a fleet, one Ray task per device, or, with --per class, "
        "one Ray Tune search (OptunaSearch) per device class with its trials in parallel. "
        "SPEC: a directory or glob of traces, or a manifest .csv/.json (device, trace, "
        "model, slo, class). Exit status 3: some devices are error rows (partial).")
    t.add_argument("spec", metavar="SPEC", help="directory, glob or manifest of traces")
    t.add_argument("--per", choices=["device", "class"], default="device",
                   help="one search per device (default) or per class (the manifest's class "
                   "column, else the model)")
    t.add_argument("--model", choices=list(TUNE_MODELS), default="precise_linear",
                   help="model where the manifest names none (default precise_linear)")
    t.add_argument("--trials", type=at_most(positive_int, MAX_TRIALS), default=12,
                   help="optimiser trials per device or class (default 12)")
    t.add_argument("--metric", choices=list(METRICS), default="accuracy",
                   help="quality kept above the floor (default accuracy)")
    t.add_argument("--floor", type=probability, default=0.9,
                   help="minimum test accuracy or ROC-AUC (default 0.9)")
    t.add_argument("--epochs", type=count, default=6,
                   help="epochs of the dense model (default 6, as mittd tune)")
    t.add_argument("--prune-epochs", type=count, default=2,
                   help="fine-tuning epochs per trial (default 2)")
    t.add_argument("--seed", type=seed32, default=0)
    t.add_argument("-o", "--output", type=output_dir, metavar="DIR",
                   help="write tune.json and tune.md here (and, per class, Ray Tune's "
                   "results: shared storage on a cluster)")
    t.add_argument("--json", type=output_file, metavar="FILE",
                   help="also write the rows as JSON here")
    add_cluster_options(t)
    t.set_defaults(func=cmd_tune)
