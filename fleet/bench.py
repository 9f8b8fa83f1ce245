"""``mittd fleet bench``: how much faster ``fleet train`` is with more workers.

Why a benchmark, not a timed test: a fleet's nightly retrain is sized from the
per-device train seconds and the speed-up per added worker, measured on the
machine that runs it (docs/FLEET.md extrapolates both to 10,000 devices). The
devices are slices of the shipped sample trace (``mittd.traces.shipped``), so the
run needs no data; each setting trains every device into a fresh model directory
(no bundle is skipped as up to date), and with several rounds the order of the
settings alternates, so a machine that warms up or slows down mid-run favours none.

Each setting starts its own local Ray cluster of N CPUs; the cluster's start-up is
timed apart from the run (it is paid once per fleet run, not per device). A probe
task reports the thread caps (``mittd.fleet.tasks.THREAD_ENV``) and the threads its
worker really runs after TensorFlow has worked, to show the tasks do not fight
over the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from mittd.fleet.manifest import DeviceJob, FleetError
from mittd.fleet.tasks import THREAD_ENV
from mittd.traces.argtypes import at_most, count, output_dir, output_file, positive_int

__all__ = ["SPEEDUP_TARGET", "add_command", "cmd_bench", "make_traces", "parse_workers",
           "render", "run_bench"]

SPEEDUP_TARGET = 1.7  # issue 16: 2 workers over 1, 8 small traces
SOURCE = "fio_mixed_30s"
MIN_IOS = 1000  # fewer cannot be split into train, validation and test parts


def parse_workers(text: str) -> list[int]:
    """``1,2`` → [1, 2]: the worker counts to compare (distinct, >= 1, in order)."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected worker counts like 1,2, got {text!r}"
                                         ) from None
    if not vals or min(vals) < 1 or max(vals) > 1024 or len(set(vals)) != len(vals):
        raise argparse.ArgumentTypeError(f"expected distinct worker counts in [1, 1024] like "
                                         f"1,2, got {text!r}")
    return vals


def make_traces(out: Path, devices: int, ios: int | None, source: str = SOURCE
                ) -> list[DeviceJob]:
    """``devices`` traces of ``ios`` IOs each, cut from the shipped sample trace (apart
    when it is long enough, else overlapping at an even stride), one device each."""
    from mittd.traces.schema import read_trace, trace_metadata, write_trace
    from mittd.traces.shipped import shipped_trace

    src = shipped_trace(source)
    table = read_trace(src)
    n = table.num_rows
    ios = min(ios or n // devices, n)
    if ios < MIN_IOS:
        raise FleetError(f"--ios {ios}: each device needs at least {MIN_IOS} IOs (the sample "
                         f"trace has {n})")
    stride = ios if ios * devices <= n else (n - ios) // max(devices - 1, 1)
    meta = trace_metadata(src)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i in range(devices):
        name = f"bench{i:02d}"
        path = out / f"{name}.parquet"
        write_trace(path, table.slice(i * stride, ios),
                    {**meta, "bench_slice": {"source": source, "start": i * stride,
                                             "ios": ios}})
        jobs.append(DeviceJob(name, (str(path),)))
    return jobs


def _probe() -> dict[str, Any]:
    """In a worker: the thread caps it sees and the threads it runs once TF has worked."""
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.ones((256, 256), np.float32))
    float(tf.reduce_sum(tf.matmul(x, x)))
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        threads = None
    return {"env": {k: os.environ.get(k) for k in THREAD_ENV if "THREADS" in k},
            "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "process_threads": threads, "cpus": os.cpu_count()}


def _one(jobs: Sequence[DeviceJob], workers: int, model_dir: Path, epochs: int,
         replay: bool, progress: bool, probe: bool) -> dict[str, Any]:
    """One ``fleet train`` of every device with a local Ray of ``workers`` CPUs."""
    from mittd.fleet.cluster import ray_session
    from mittd.fleet.runner import run_fleet
    from mittd.fleet.tasks import train_device

    model_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ray_session(workers, fresh=True) as ray:
        start_s = time.perf_counter() - t0
        fn = partial(train_device, model_dir=str(model_dir.resolve()),
                     settings={"epochs": epochs}, force=True, replay=replay)
        t1 = time.perf_counter()
        rows = run_fleet(jobs, fn, workers=workers, retries=1, progress=progress,
                         kind=f"train ×{workers}")
        wall = time.perf_counter() - t1
        seen = ray.get(ray.remote(num_cpus=1)(_probe).remote()) if probe else None
    ok = [r for r in rows if r.get("status") == "ok"]
    errors = sorted({str(r.get("error")) for r in rows if r.get("status") == "error"})
    task_s = [float(r["seconds"]) for r in ok if r.get("seconds") is not None]
    return {"workers": workers, "wall_s": wall, "ray_start_s": start_s, "devices": len(rows),
            "ok": len(ok), "errors": errors, "task_s_sum": sum(task_s),
            "task_s_median": statistics.median(task_s) if task_s else None, "probe": seen}


def run_bench(jobs: Sequence[DeviceJob], workers: Sequence[int], work_dir: Path, *,
              epochs: int = 2, rounds: int = 1, replay: bool = True, progress: bool = True,
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every worker setting ``rounds`` times (order alternating), fresh model dirs."""
    runs = []
    for r in range(rounds):
        order = list(workers) if r % 2 == 0 else list(reversed(workers))
        for w in order:
            say(f"round {r + 1}/{rounds}: fleet train of {len(jobs)} devices, {w} worker(s) …")
            res = _one(jobs, w, work_dir / f"models-r{r}-w{w}", epochs, replay, progress,
                       probe=(r == 0 and w == max(workers)))
            res["round"] = r
            runs.append(res)
            say(f"  {res['wall_s']:.1f} s ({res['ok']}/{res['devices']} ok; Ray start "
                f"{res['ray_start_s']:.1f} s)")
    by_w = {w: [x for x in runs if x["workers"] == w] for w in workers}
    base = statistics.median(x["wall_s"] for x in by_w[workers[0]])
    settings = []
    for w in workers:
        wall = statistics.median(x["wall_s"] for x in by_w[w])
        task = statistics.median(x["task_s_median"] for x in by_w[w]
                                 if x["task_s_median"] is not None) if any(
            x["task_s_median"] is not None for x in by_w[w]) else None
        settings.append({"workers": w, "wall_s": wall, "speedup": base / wall if wall else None,
                         "per_device_wall_s": wall / len(jobs),
                         "task_s_median": task,
                         "ray_start_s": statistics.median(x["ray_start_s"] for x in by_w[w]),
                         "ok": min(x["ok"] for x in by_w[w])})
    probe = next((x["probe"] for x in runs if x["probe"]), None)
    return {"devices": len(jobs), "workers": list(workers), "rounds": rounds, "epochs": epochs,
            "replay": replay, "cpus": os.cpu_count(), "settings": settings, "runs": runs,
            "probe": probe, "target": {"workers": 2, "speedup": SPEEDUP_TARGET}}


def render(res: dict[str, Any]) -> str:
    lines = [f"fleet bench: {res['devices']} devices, {res['epochs']} epochs"
             f"{' + replay' if res['replay'] else ''}, {res['rounds']} round(s), "
             f"{res['cpus']} CPUs", "",
             "| workers | wall s | speed-up | s per device | median task s | Ray start s "
             "| ok |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for s in res["settings"]:
        task = "—" if s["task_s_median"] is None else f"{s['task_s_median']:.1f}"
        lines.append(f"| {s['workers']} | {s['wall_s']:.1f} | {s['speedup']:.2f}× | "
                     f"{s['per_device_wall_s']:.1f} | {task} | {s['ray_start_s']:.1f} | "
                     f"{s['ok']}/{res['devices']} |")
    errors = sorted({e for x in res["runs"] for e in x["errors"]})
    if errors:
        lines += ["", f"errors ({len(errors)} distinct):", *(f"  {e}" for e in errors[:5])]
    two = next((s for s in res["settings"] if s["workers"] == 2), None)
    if two is not None and res["workers"][0] == 1:
        met = "met" if two["speedup"] >= SPEEDUP_TARGET else "not met"
        lines += ["", f"2 workers over 1: {two['speedup']:.2f}× (target ≥ {SPEEDUP_TARGET}×: "
                  f"{met})"]
    p = res.get("probe")
    if p:
        caps = ", ".join(f"{k}={v}" for k, v in p["env"].items())
        lines.append(f"worker threads: {caps}; TF intra/inter op "
                     f"{p['tf_intra_op']}/{p['tf_inter_op']} (0 = from the environment); "
                     f"{p['process_threads']} threads in the worker process")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    from mittd.fleet.cluster import require_ray
    from mittd.training.cli import TF_MODULES, _require

    require_ray()
    _require("fleet bench", TF_MODULES)
    workers = args.workers
    say = (lambda _m: None) if args.no_progress else (lambda m: print(m, file=sys.stderr))
    keep = Path(args.keep) if args.keep else None
    work = keep or Path(tempfile.mkdtemp(prefix="mittd-fleet-bench-"))
    try:
        jobs = make_traces(work / "traces", args.devices, args.ios)
        res = run_bench(jobs, workers, work, epochs=args.epochs, rounds=args.rounds,
                        replay=not args.no_replay, progress=not args.no_progress, say=say)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    res["ios"] = args.ios
    print(render(res))
    if args.json:
        from mittd.traces.atomic import write_text

        write_text(args.json, json.dumps(res, indent=1, default=str) + "\n")
    return 0 if all(s["ok"] == res["devices"] for s in res["settings"]) else 3


def add_command(sub: argparse._SubParsersAction) -> None:
    """``mittd fleet bench`` (``sub``: the ``fleet`` subcommands)."""
    b = sub.add_parser(
        "bench", help="time fleet train with 1 and 2 workers (speed-up)",
        description="Cut DEVICES small traces from the shipped sample trace, run fleet train "
        "over them with each worker count (a fresh local Ray cluster and model directory "
        "each; the settings' order alternates over rounds) and print the wall time per "
        "setting and the speed-up over the first. Needs the train and cluster extras.")
    b.add_argument("--devices", type=at_most(positive_int, 4096), default=8,
                   help="devices (traces) to train (default 8)")
    b.add_argument("--workers", type=parse_workers, default=[1, 2], metavar="N,M",
                   help="worker counts to compare, the first is the baseline (default 1,2)")
    b.add_argument("--epochs", type=count, default=2, help="training epochs (default 2)")
    b.add_argument("--ios", type=at_most(positive_int, 10**8), metavar="N",
                   help="IOs per device (default: the sample trace split evenly)")
    b.add_argument("--rounds", type=at_most(positive_int, 100), default=1,
                   help="repeat every setting, alternating the order (default 1)")
    b.add_argument("--no-replay", action="store_true",
                   help="train only (fleet train replays each bundle by default)")
    b.add_argument("--keep", type=output_dir, metavar="DIR",
                   help="keep the traces and bundles here (default: a temporary directory)")
    b.add_argument("--json", type=output_file, metavar="FILE", help="write the results here")
    b.add_argument("--no-progress", action="store_true", help="no progress output")
    b.set_defaults(func=cmd_bench)
