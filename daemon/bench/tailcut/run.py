"""``mittd bench tailcut``: does mittd beat hedging on workloads nobody tuned it on?

For every seeded workload (``workloads.py``) and, with ``shipped``, both shipped
traces:

1. **collect** it twice with fio (``mittd collect``): the first recording is the
   primary, the second its replica (``dirs`` may put them on two disks);
2. **split** the primary by issue time: the first half trains, the next 20 % is
   the validation window, the last 30 % the test part;
3. **train** every model (the seed's precise_linear on LBAs, our
   precise_linear_hist, the LinnOS and Heimdall baselines) on the first part;
4. **choose** each model's decision policy (reject / both / hedge, cutoff, hedge
   delay) by closed-loop replay of the validation window failing over to the
   replica's same window (``mittd.daemon.replay.select``); mittd's pick is the
   policy of its own model (precise_linear or precise_linear_hist) with the best
   robust p99 *on the validation window*;
5. **replay** the test part — never looked at before — through the daemon's
   admission core, against no rejection, hedging after the validation window's
   p95, random rejection at the rate of mittd's pick (hedged too when the pick
   hedges), the oracle (rejects every read slower than the SLO), the oracle at
   the budget (rejects the slowest ``reject_budget`` of the reads: what a perfect
   predictor could do with hedging's extra IOs), and each model's own row.

Nothing is chosen on the test part. The targets (``TARGETS``) are checked per
workload and printed beside the numbers; the result is a JSON file, a text
table and a PNG.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mittd.daemon.bench.tailcut.workloads import Workload, generate
from mittd.traces.atomic import write_text

__all__ = ["MITTD_MODELS", "MODELS", "TailcutConfig", "TailcutError", "run_tailcut"]

MODELS = ("precise_linear", "precise_linear_hist", "linnos", "heimdall")
MITTD_MODELS = ("precise_linear", "precise_linear_hist")  # mittd picks among these
MiB = 1 << 20


class TailcutError(Exception):
    """The benchmark cannot run as asked; one line for the user."""


@dataclass
class TailcutConfig:
    seed: int = 0
    workloads: int = 8
    dirs: Sequence[Path] = ()
    runtime_s: float = 25.0
    size: int = 1 << 30
    models: Sequence[str] = MODELS
    slo: str = "auto"
    reads_only: bool = True
    epochs: int = 4
    reject_budget: float = 0.05
    validation_fraction: float = 0.2
    test_fraction: float = 0.3
    shipped: bool = True
    keep: bool = False
    out_dir: Path = Path("out/tailcut")


@dataclass
class ModelRun:
    """One model on one workload: its metrics, the policy chosen on validation."""

    name: str
    bundle: Path
    threshold_us: float
    val_metrics: dict[str, Any] | None
    test_metrics: dict[str, Any]
    selection: dict[str, Any] | None
    train_s: float


@dataclass
class WorkloadRun:
    name: str
    summary: str
    primary: str
    replica: str
    replica_kind: str  # independent | time-shift
    ios: int
    read_share: float
    models: list[ModelRun] = field(default_factory=list)
    pick: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _check(cfg: TailcutConfig) -> None:
    if cfg.workloads < 0:
        raise TailcutError(f"--workloads must be >= 0, got {cfg.workloads}")
    if cfg.workloads == 0 and not cfg.shipped:
        raise TailcutError("nothing to run: --workloads 0 and --no-shipped")
    if not cfg.runtime_s >= 2:
        raise TailcutError(f"--runtime must be at least 2 s, got {cfg.runtime_s:g}")
    if cfg.size < 16 * MiB:
        raise TailcutError(f"--size must be at least 16 MiB, got {cfg.size}")
    bad = [m for m in cfg.models if m not in MODELS]
    if bad or not cfg.models:
        raise TailcutError(f"--models: unknown {', '.join(bad) or '(none)'}; choose from "
                           f"{', '.join(MODELS)}")
    if not any(m in MITTD_MODELS for m in cfg.models):
        raise TailcutError(f"--models needs at least one of mittd's own: "
                           f"{', '.join(MITTD_MODELS)}")
    if not 0 < cfg.reject_budget < 1:
        raise TailcutError(f"--reject-budget must be in (0, 1), got {cfg.reject_budget}")
    if cfg.epochs < 1:
        raise TailcutError(f"--epochs must be >= 1, got {cfg.epochs}")


# -- collection ---------------------------------------------------------------------


def _collect(w: Workload, recording: int, base: Path, cfg: TailcutConfig,
             tick: Callable[[float, float], None]) -> Path:
    from mittd.traces.collect import CollectSpec, collect

    target = base / "tailcut-device.img"
    out = base / f"{w.name}.rec{recording}.parquet"
    spec = CollectSpec(target=target, output=out, size=cfg.size, runtime_s=cfg.runtime_s,
                       jobs=w.jobs_for_recording(recording), device=f"{w.name}-r{recording}",
                       force=True)
    collect(spec, lambda _stage, t, total: tick(t, total))
    return out


# -- one workload ---------------------------------------------------------------------


def _train_model(name: str, primary: Path, replica: Path | None, cfg: TailcutConfig,
                 out: Path) -> ModelRun:
    """``mittd train``'s own flow (train, evaluate, choose the policy on validation,
    export), quietly."""
    from mittd.predictor.bundle import load_bundle
    from mittd.training.pipeline import train_flow
    from mittd.training.train import DEFAULTS

    path = out / f"{name}.mittd"
    r = train_flow([str(primary)], name, cfg.slo, path, epochs=cfg.epochs,
                   batch_size=DEFAULTS["batch_size"], learning_rate=DEFAULTS["learning_rate"],
                   seed=cfg.seed, test_fraction=cfg.test_fraction, ladder_k=None,
                   reads_only=cfg.reads_only, report_dir=None, sweep=False,
                   say=lambda _m: None, verbose=0,
                   validation_fraction=cfg.validation_fraction,
                   reject_budget=cfg.reject_budget,
                   replica=str(replica) if replica else None)
    threshold = load_bundle(path).latency_thresholds_us()[0]
    return ModelRun(name, path, float(threshold), r["validation_metrics"], r["metrics"],
                    r["selection"], r["seconds"])


def _row(name: str, kind: str, r: Any, primary: Any, **extra: Any) -> dict[str, Any]:
    known = primary.known_reads
    lat = r.latency_us[known]
    n = int(known.sum())
    p = np.percentile(lat, [50, 90, 99, 99.9])
    return {"policy": name, "kind": kind, "mean_us": float(lat.mean()), "p50_us": float(p[0]),
            "p90_us": float(p[1]), "p99_us": float(p[2]), "p99_9_us": float(p[3]),
            "reject_share": float(r.rejected[known].mean()),
            "extra_ios": int(r.extra_ios), "extra_fraction": r.extra_ios / n,
            "extra_device_ios": int(r.hedges), "extra_device_fraction": r.hedges / n,
            "lock_in": bool(getattr(r, "lock_in", False)),
            "predicted_slow_share": getattr(r, "predicted_slow_share", None), **extra}


def _test_replay(run: WorkloadRun, full: Any, rep: Any, split_ts: int, hedge_us: float,
                 models: list[ModelRun], slo_us: float, seed: int, budget: float
                 ) -> list[dict[str, Any]]:
    from mittd.daemon.replay.core import hedged, load_model, replay_model, replica_latencies
    from mittd.daemon.replay.policies import (
        replay_baseline,
        replay_hedge,
        replay_oracle,
        replay_random,
    )
    from mittd.daemon.replay.traces import time_window

    test = time_window(full, split_ts, None, "test part")
    cost = 10
    rep_lat = replica_latencies(test, [rep], cost)
    rows = [_row("baseline", "baseline", replay_baseline(test, rep_lat, cost), test),
            _row("hedge", "hedge", replay_hedge(test, rep, hedge_us), test,
                 hedge_after_us=hedge_us)]
    results = {}
    for m in models:
        model = load_model(m.bundle, m.name)
        res = replay_model(test, [rep], model, slo_us, rep_lat=rep_lat)
        results[m.name] = res
        rows.append(_row(m.name, "model", res, test, mode=res.mode,
                         hedge_after_us=res.hedge_after_us,
                         cutoff=model.bundle.decision_thresholds()[0]))
    if run.pick is None:  # every mittd model chose hedging on validation: so does mittd
        rows.append({**rows[1], "policy": "mittd", "kind": "mittd", "model": None,
                     "mode": "hedge", "hedge_after_us": hedge_us})
    else:
        res = results[run.pick]
        rows.append({**next(r for r in rows if r["policy"] == run.pick), "policy": "mittd",
                     "kind": "mittd", "model": run.pick})
        rate = float(res.rejected[test.known_reads].mean())
        rnd = replay_random(test, rep_lat, cost, rate, seed)
        name = "random"
        if res.mode in ("both", "hedge") and res.hedge_after_us:
            rnd.latency_us, rnd.hedges = hedged(test, rep, rnd.latency_us,
                                                test.reads & (rnd.served_by == 0),
                                                res.hedge_after_us)
            name = "random+hedge"
        rows.append(_row(name, "random", rnd, test, rate=rate))
    rows.append(_row("oracle", "oracle", replay_oracle(test, rep_lat, cost, slo_us), test))
    # the limit under the same budget: a clairvoyant that rejects the slowest reads
    known = test.known_reads
    at = float(np.quantile(test.cols.lat[known], 1.0 - budget))
    rows.append(_row("oracle@budget", "oracle", replay_oracle(test, rep_lat, cost, at), test,
                     rate=budget))
    return rows


TARGETS = {
    "p99_vs_hedge": "p99 <= hedging's",
    "p999_vs_hedge": "p99.9 <= 1.1 x hedging's",
    "extra_vs_hedge": "extra IOs <= hedging's",
    "p99_vs_baseline": "p99 <= no rejection's",
    "no_lock_in": "no lock-in",
    "predictable_cut": "p99 >= 15 % below hedging's where validation ROC-AUC >= 0.85",
}


def _targets(run: WorkloadRun) -> dict[str, Any]:
    by = {r["policy"]: r for r in run.rows}
    m, h, b = by.get("mittd"), by["hedge"], by["baseline"]
    if m is None:
        return {}
    auc = max((x.val_metrics or {}).get("roc_auc", math.nan) for x in run.models
              if x.name in MITTD_MODELS)
    t: dict[str, Any] = {
        "p99_vs_hedge": m["p99_us"] <= h["p99_us"],
        "p999_vs_hedge": m["p99_9_us"] <= 1.1 * h["p99_9_us"],
        "extra_vs_hedge": m["extra_ios"] <= h["extra_ios"],
        "p99_vs_baseline": m["p99_us"] <= b["p99_us"],
        "no_lock_in": not any(r.get("lock_in") for r in run.rows),
        "validation_roc_auc": auc,
        "p99_gain_vs_hedge": 1.0 - m["p99_us"] / h["p99_us"],
    }
    t["predictable_cut"] = (t["p99_gain_vs_hedge"] >= 0.15) if auc >= 0.85 else None
    return t


def evaluate(name: str, summary: str, primary: Path, replica: Path | None,
             cfg: TailcutConfig, out: Path, say: Callable[[str], None]) -> WorkloadRun:
    """Steps 2-5 for one primary recording (and its replica recording, or itself)."""
    from mittd.daemon.replay.traces import Replica, load_trace, replica_notes, time_window

    t0 = time.perf_counter()
    full = load_trace(primary)
    reads = full.reads
    run = WorkloadRun(name, summary, str(primary), str(replica or primary),
                      "independent" if replica else "time-shift", full.n,
                      float(reads.mean()))
    out.mkdir(parents=True, exist_ok=True)
    for m in cfg.models:
        say(f"{name}: training {m}")
        run.models.append(_train_model(m, primary, replica, cfg, out))
    run.seconds["train_select_s"] = time.perf_counter() - t0
    first = run.models[0].selection
    if first is None:
        raise TailcutError(f"{name}: no validation window (trace too short?)")
    from mittd.predictor.bundle import load_bundle

    spec = load_bundle(run.models[0].bundle).provenance["policy_selection"]
    split_ts = spec["window_ts_us"][1]
    if replica:
        rep_full = load_trace(replica, what="replica trace")
        rep = Replica(str(replica), rep_full, split_ts - full.t0)
    else:
        rep = Replica(f"{primary} (itself, shifted)", full,
                      split_ts - full.t0 + full.period_us // 2)
    mine = [x for x in run.models if x.name in MITTD_MODELS and x.selection
            and x.selection["policy"]["mode"] != "hedge"]
    run.pick = min(mine, key=lambda x: x.selection["policy"]["validation"][
        "chosen_robust_p99_us"]).name if mine else None  # None: hedging, as every model said
    hedge_us = float(first["hedge"]["hedge_after_us"])
    t1 = time.perf_counter()
    run.rows = _test_replay(run, full, rep, split_ts, hedge_us, run.models,
                            run.models[0].threshold_us, cfg.seed, cfg.reject_budget)
    run.seconds["test_replay_s"] = time.perf_counter() - t1
    test = time_window(full, split_ts, None, "test part")
    run.notes = replica_notes(test, [rep], replica is not None)
    run.targets = _targets(run)
    return run


# -- the whole benchmark ----------------------------------------------------------------


def _bases(cfg: TailcutConfig, default: Path) -> tuple[Path, Path]:
    """The primary's and the replica's folders (``--dir A[,B]``), checked."""
    from mittd.traces.collect import direct_io_error

    dirs = [Path(d).absolute() for d in cfg.dirs] or [default]
    for d in dirs:
        if not d.is_dir():
            raise TailcutError(f"--dir {d}: not a directory")
        if not os.access(d, os.W_OK):
            raise TailcutError(f"--dir {d}: not writable")
        if direct_io_error(d) is not None:
            raise TailcutError(f"--dir {d}: the file system refuses O_DIRECT (tmpfs?)")
        if shutil.disk_usage(d).free < cfg.size + 256 * MiB:
            raise TailcutError(f"--dir {d}: less than {cfg.size / MiB + 256:,.0f} MiB free")
    return dirs[0], dirs[1 % len(dirs)]


def run_tailcut(cfg: TailcutConfig, say: Callable[[str], None] | None = None,
                progress: bool = False) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns plain, JSON-able data and
    writes ``tailcut.json``, ``tailcut.txt`` and ``tailcut.png`` to ``cfg.out_dir``."""
    from mittd.daemon.bench.tailcut.report import aggregate, plot, render
    from mittd.daemon.replay.report import jsonable

    _check(cfg)
    say = say or (lambda _m: None)
    if cfg.workloads and shutil.which("fio") is None:
        raise TailcutError("fio not found on PATH: install it (apt-get install fio)")
    work = generate(cfg.seed, cfg.workloads) if cfg.workloads else []
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the device files: --dir, else ./out (disk-backed in this project), else /var/tmp
    scratch_root = Path("out" if Path("out").is_dir() else "/var/tmp").absolute()
    runs: list[WorkloadRun] = []
    scratch: list[Path] = []  # every folder made here, removed at the end
    t_start = time.perf_counter()
    try:
        if cfg.dirs:
            d1, d2 = _bases(cfg, scratch_root)
            base1 = Path(tempfile.mkdtemp(prefix="mittd-tailcut-", dir=d1))
            scratch.append(base1)
            base2 = base1
            if d2 != d1:
                base2 = Path(tempfile.mkdtemp(prefix="mittd-tailcut-", dir=d2))
                scratch.append(base2)
        else:
            base1 = base2 = Path(tempfile.mkdtemp(prefix="mittd-tailcut-", dir=scratch_root))
            scratch.append(base1)
            _bases(cfg, base1)
        jobs: list[tuple[str, Any]] = [("workload", w) for w in work]
        if cfg.shipped:
            from mittd.traces.shipped import SHIPPED_TRACES

            jobs += [("shipped", n) for n in SHIPPED_TRACES]
        bar = tqdm(jobs, desc="tailcut", unit="workload", disable=not progress)
        for kind, item in bar:
            t0 = time.perf_counter()
            if kind == "workload":
                w: Workload = item
                bar.set_postfix_str(f"{w.name}: recording")
                collect_bar = tqdm(total=2 * cfg.runtime_s, desc=f"{w.name} fio", unit="s",
                                   leave=False, disable=not progress,
                                   bar_format="{desc}: {n:.0f}/{total:.0f} s {bar}")
                recs = []
                for r, base in ((1, base1), (2, base2)):
                    def tick(t: float, _total: float, r: int = r,
                             cb: Any = collect_bar) -> None:
                        cb.n = min(2 * cfg.runtime_s, (r - 1) * cfg.runtime_s + t)
                        cb.refresh()
                    recs.append(_collect(w, r, base, cfg, tick))
                collect_bar.close()
                collected = time.perf_counter() - t0
                bar.set_postfix_str(f"{w.name}: training and choosing")
                run = evaluate(w.name, w.summary, recs[0], recs[1], cfg, out / w.name, say)
                run.seconds["collect_s"] = collected
                if cfg.keep:
                    for p in recs:
                        shutil.copy(p, out / w.name / p.name)
                for p in recs:
                    p.unlink(missing_ok=True)
            else:
                from mittd.traces.shipped import SHIPPED_TRACES, shipped_trace

                bar.set_postfix_str(f"{item}: training and choosing")
                run = evaluate(f"shipped:{item}", SHIPPED_TRACES[item], shipped_trace(item),
                               None, cfg, out / item, say)
            run.seconds["total_s"] = time.perf_counter() - t0
            runs.append(run)
            say(render({"runs": [asdict(run)], "aggregate": {}}, brief=True))
        bar.close()
    finally:
        for d in scratch:
            shutil.rmtree(d, ignore_errors=True)
    result = {"config": {k: (str(v) if isinstance(v, Path) else
                             [str(x) for x in v] if k == "dirs" else v)
                         for k, v in asdict(cfg).items()},
              "workloads": [asdict(w) for w in work],
              "runs": [asdict(r) for r in runs],
              "seconds": time.perf_counter() - t_start}
    result["aggregate"] = aggregate(result["runs"])
    write_text(out / "tailcut.json", json.dumps(result, indent=1, default=jsonable))
    write_text(out / "tailcut.txt", render(result) + "\n")
    note = plot(result, out / "tailcut.png")
    result["files"] = [str(out / "tailcut.json"), str(out / "tailcut.txt")]
    if note:
        say(note)
    else:
        result["files"].append(str(out / "tailcut.png"))
    return result

