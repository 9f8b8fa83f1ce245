"""The per-device work of a fleet run; each function runs inside a Ray worker.

Why a batch system's rules: with thousands of devices, one bad trace must not fail
the run. Every exception inside a task becomes an error row (one line); only a dead
worker (kill -9, OOM) escapes, and that is Ray's to retry. Rows are plain dicts
(JSON-able) so the driver, the report and the sidecars share them.

Each worker limits TensorFlow and BLAS to one thread (``THREAD_ENV``): the parallelism
is across devices, and N tasks each spawning N threads on N cores only thrash.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mittd.fleet.hashing import file_sha256, inputs_sha, up_to_date, write_sidecar
from mittd.fleet.manifest import DeviceJob

__all__ = ["DEFAULT_SETTINGS", "REPLAY_FIELDS", "THREAD_ENV", "bundle_path", "decision_us",
           "error_row", "one_line", "replay_device", "train_device"]

# set in every Ray worker (runtime_env) and, as defaults, at the start of each task
THREAD_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
              "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1", "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}

# ``mittd train``'s defaults; every key is part of the inputs' hash
DEFAULT_SETTINGS: dict[str, Any] = {
    "epochs": 8, "batch_size": 256, "learning_rate": 1e-3, "seed": 0, "test_fraction": 0.3,
    "validation_fraction": 0.2, "reject_budget": 0.05, "reads_only": False,
}

# what a train row takes from the replay of its test split
REPLAY_FIELDS = ("replay_trace", "replay_from", "replay_slo_us", "reads", "p99_baseline_us",
                 "p99_hedge_us", "p99_mittd_us", "gain_vs_baseline", "gain_vs_hedge",
                 "extra_ios_baseline", "extra_ios_hedge", "extra_ios_mittd", "reject_rate",
                 "mode", "us_per_decision", "engine", "note")

# errors whose message is already the explanation (no type name needed)
_PLAIN = ("TraceError", "ReplayError", "BundleError", "OutputError", "TrainingError",
          "FleetError", "ValueError", "FileNotFoundError")


def one_line(e: BaseException) -> str:
    """An exception as one line for a report cell."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    name = type(e).__name__
    if not text:
        return name
    return text if name in _PLAIN else f"{name}: {text}"


def _limit_threads() -> None:
    for k, v in THREAD_ENV.items():
        os.environ.setdefault(k, v)


def bundle_path(model_dir: str | Path, device: str) -> Path:
    return Path(model_dir) / f"{device}.mittd"


def base_row(job: DeviceJob, kind: str) -> dict[str, Any]:
    return {"device": job.device, "traces": list(job.traces), "model": job.model,
            "slo": job.slo, "kind": kind, "status": "error", "error": None}


def error_row(job: DeviceJob, kind: str, error: str, seconds: float | None = None
              ) -> dict[str, Any]:
    """A row for a device whose task never returned one (its worker died)."""
    return {**base_row(job, kind), "error": error, "seconds": seconds}


def _policy_text(bundle: Any) -> str:
    from mittd.predictor.policy import DecisionPolicy

    try:
        return DecisionPolicy.from_dict(bundle.policy).describe()
    except ValueError as e:
        return f"(bad policy: {one_line(e)})"


def train_device(job: DeviceJob, model_dir: str | Path, settings: Mapping[str, Any], *,
                 force: bool = False, replay: bool = True,
                 replay_settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train ``job``'s bundle into ``model_dir/<device>.mittd`` (atomically), unless an
    up-to-date one is there (``force``: train anyway); then, with ``replay``, replay its
    test split (``replay_settings``: see :func:`replay_device`) so that the row has the
    p99s. Never raises (but for a dead worker): a failure is the row's ``error``."""
    _limit_threads()
    t0 = time.perf_counter()
    s = {**DEFAULT_SETTINGS, **settings}
    row = base_row(job, "train")
    out = bundle_path(model_dir, job.device)
    try:
        sha = inputs_sha(job, s)
        row["inputs_sha256"] = sha
        prev = None if force else up_to_date(out, sha)
        if prev is not None:
            old = prev.get("row") if isinstance(prev.get("row"), dict) else {}
            return {**old, **row, "status": "skipped (up to date)", "bundle": str(out),
                    "seconds": time.perf_counter() - t0, "train_seconds": old.get("seconds")}
        from mittd.predictor.bundle import load_bundle
        from mittd.training.pipeline import train_flow

        result = train_flow(list(job.traces), job.model, job.slo, out, epochs=s["epochs"],
                            batch_size=s["batch_size"], learning_rate=s["learning_rate"],
                            seed=s["seed"], test_fraction=s["test_fraction"], ladder_k=None,
                            reads_only=s["reads_only"], report_dir=None, sweep=False,
                            say=lambda _msg: None, verbose=0,
                            validation_fraction=s["validation_fraction"],
                            reject_budget=s["reject_budget"])
        b = load_bundle(out)
        m = result.get("metrics") or {}
        row.update(status="ok", bundle=str(out), bundle_sha256=file_sha256(out),
                   roc_auc=m.get("roc_auc"), accuracy=m.get("accuracy"),
                   policy=_policy_text(b), degenerate=bool(b.degenerate_reason()),
                   slo_us=(b.latency_thresholds_us() or [None])[0])
        if replay:
            rep = replay_device(job, out, replay_settings or {})
            if rep["status"] == "ok":
                row.update({k: rep[k] for k in REPLAY_FIELDS if k in rep})
                row["replay_seconds"] = rep["seconds"]
            else:
                row["replay_error"] = rep["error"]
        row["seconds"] = time.perf_counter() - t0
        write_sidecar(out, sha, job, s, row)
    except Exception as e:  # a batch system: every failure is a row
        row.update(status="error", error=one_line(e))
    row["seconds"] = time.perf_counter() - t0
    return row


def replay_device(job: DeviceJob, bundle: str | Path, settings: Mapping[str, Any]
                  ) -> dict[str, Any]:
    """Replay ``job``'s (first) trace with ``bundle``: read p99 and extra IOs under no
    rejection, hedging and the bundle's own policy, and µs per decision.

    ``settings``: ``start`` (skip this fraction of the IOs; default the bundle's test
    split, ``1 - test_fraction``: the part it never trained on), ``slo`` (default
    ``model``: the bundle's trained threshold), ``limit``, ``engine`` (default
    ``auto``, the daemon's: it times the engines first, seconds per device). Never
    raises (but for a dead worker)."""
    _limit_threads()
    t0 = time.perf_counter()
    row = base_row(job, "replay")
    try:
        from mittd.daemon.replay import load_model, load_trace, run_replay

        row["bundle"] = str(bundle)
        model = load_model(bundle, "mittd")
        start = settings.get("start")
        if start is None:
            data = model.bundle.provenance.get("data") or {}
            start = 1.0 - float(data.get("test_fraction", DEFAULT_SETTINGS["test_fraction"]))
        primary = load_trace(job.traces[0], limit=settings.get("limit"), start=float(start))
        engine = str(settings.get("engine") or "auto")
        rp = run_replay(primary, [], [model], ["baseline", "models", "hedge"],
                        str(settings.get("slo") or "model"), engine=engine)
        known = primary.known_reads
        import numpy as np

        res = {r.name: r for r in rp.results}
        base, hedge, mine = (float(np.percentile(res[k].latency_us[known], 99.0))
                             for k in ("baseline", "hedge", "mittd"))
        m = res["mittd"]
        us = decision_us(model.bundle, job.traces[0], engine)
        row.update(
            status="ok", replay_trace=job.traces[0], replay_from=float(start),
            replay_slo_us=rp.slo_us, reads=int(known.sum()),
            p99_baseline_us=base, p99_hedge_us=hedge, p99_mittd_us=mine,
            gain_vs_baseline=(base - mine) / base if base > 0 else None,
            gain_vs_hedge=(hedge - mine) / hedge if hedge > 0 else None,
            extra_ios_baseline=res["baseline"].extra_ios, extra_ios_hedge=res["hedge"].extra_ios,
            extra_ios_mittd=m.extra_ios, reject_rate=float(m.rejected[known].mean()),
            mode=m.mode, us_per_decision=us, engine=engine,
            policy=_policy_text(model.bundle), roc_auc=_test_auc(model.bundle))
        if len(job.traces) > 1:
            row["note"] = f"replayed the first of {len(job.traces)} traces"
    except Exception as e:  # a batch system: every failure is a row
        row.update(status="error", error=one_line(e))
    row["seconds"] = time.perf_counter() - t0
    return row


def _test_auc(bundle: Any) -> float | None:
    tm = bundle.provenance.get("test_metrics")
    v = tm.get("roc_auc") if isinstance(tm, Mapping) else None
    return float(v) if isinstance(v, int | float) else None



def decision_us(bundle: Any, trace: str, engine: str, rows: int = 4096, calls: int = 2000
                ) -> float | None:
    """Median batch-1 µs per decision (the model; the featuriser is not timed) of
    ``engine`` on the trace's own first ``rows`` feature rows, after a warm-up.

    Why not the replay's predict-time histogram: its mean carries the first call's
    JIT compilation, milliseconds over a short test split."""
    from mittd.predictor.engines import make_engine
    from mittd.predictor.features import make_featuriser
    from mittd.traces.registry import open_trace

    table = open_trace(trace).table().slice(0, rows)
    x = make_featuriser(bundle.featuriser).encode_trace(table)
    if not len(x):
        return None
    opts = {"sample": x[:64]} if engine == "auto" else {}
    eng = make_engine(engine, bundle.graph, bundle.params, **opts)
    buf = eng.input
    clock = time.perf_counter_ns
    samples = []
    for i in range(calls + 200):
        buf[:] = x[i % len(x)]
        t0 = clock()
        eng.margin1()
        if i >= 200:
            samples.append(clock() - t0)
    return float(sorted(samples)[len(samples) // 2]) / 1e3
