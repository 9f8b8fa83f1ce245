"""``mittd bench predictor``: microseconds per decision, engine by engine.

For each model and sparsity, on bundles of random weights pruned three ways
(``predictor.synthetic``), and on inputs featurised from the real trace shipped
in ``traces/samples`` (so activation sparsity is realistic), it measures:

- batch 1, engine only: per-call latency of ``engine.margin1()`` (one decision);
- batch 1, featurisation included: ``featuriser.encode_live(tracker, ...)``
  writing into the engine's input, then ``margin1()`` — what the daemon does
  per request; and featurisation alone;
- batched: decisions/s of ``engine.logits`` at batch 256;
- fused (compiled engines): featurise + predict inside the fused decision kernel
  on its own clock (:func:`time_fused`), beside the model alone in a compiled loop
  (:func:`engine_kernel_ns`) and the model alone one call at a time on the same
  clock, interleaved in the same replay (every other decision): what fusing the
  featuriser in adds to the model, measured alike;

and, side by side in the same run when TensorFlow is installed, the same
network through TF eager, a ``tf.function`` and the TF Lite interpreter
(``training.tf_bench``), and ONNX Runtime (``training.onnx_bench``), each on the
compacted network mittd runs. Each configuration also gets its floor on this CPU
(``predictor.floor``: multiply-adds after zero-skipping and the bytes they read,
at rates measured here) and every engine's ratio to it. BLAS is capped at one
thread for the whole run (``limit_blas_threads``): on a busy machine OpenBLAS's
spinning threads made the batch-256 column collapse to hundreds of decisions/s.
Every call is timed on its own with ``time.perf_counter_ns``; medians (p50) and
p99 are quoted, as this machine is shared and noisy.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pyarrow as pa

from mittd.daemon.fastpath import monotonic_ns
from mittd.predictor.engines import ENGINES, make_engine
from mittd.predictor.features import FEATURISERS
from mittd.predictor.kernels import run1
from mittd.predictor.models import MODEL_FEATURISER
from mittd.predictor.synthetic import synthetic_bundle
from mittd.traces.schema import read_trace
from mittd.traces.shipped import shipped_trace

DEFAULT_CONFIGS = (
    ("precise_linear", (0.0, 0.90, 0.95, 0.97, 0.98)),
    ("good_custom", (0.0, 0.90, 0.95)),
)
METHODS = ("magnitude", "simd", "node")
SAMPLE_TRACE = shipped_trace()


@dataclass
class TraceInputs:
    """Real IOs of the sample trace, ready to featurise live or as a batch."""

    ts: np.ndarray
    latency: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    op: np.ndarray

    @classmethod
    def from_table(cls, t: pa.Table) -> TraceInputs:
        return cls(
            t.column("ts_issue_us").to_numpy(),
            t.column("latency_us").to_numpy(),
            t.column("offset").to_numpy(),
            t.column("size").to_numpy(),
            t.column("op").combine_chunks().indices.to_numpy(zero_copy_only=False)
            .astype(np.int64),
        )


def percentiles(samples_ns: np.ndarray) -> dict[str, float]:
    return {"p50_us": float(np.percentile(samples_ns, 50)) / 1e3,
            "p99_us": float(np.percentile(samples_ns, 99)) / 1e3}


def time_calls(fn: Callable[[int], object], calls: int, warmup: int = 500,
               prepare: Callable[[int], object] | None = None) -> np.ndarray:
    """Per-call wall time (ns) of ``fn(i)`` for i in range(calls); ``prepare(i)``
    runs before each call, untimed."""
    for i in range(warmup):
        if prepare:
            prepare(i)
        fn(i)
    out = np.empty(calls, np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        if prepare:
            prepare(warmup + i)
        t0 = clock()
        fn(warmup + i)
        out[i] = clock() - t0
    return out


class LiveReplay:
    """Feeds a live tracker with the trace's issues and completions, IO by IO, the
    way the daemon sees them; ``before(i)`` applies the completions due before IO
    i, ``after(i)`` issues it. Wraps around the trace with shifted clocks."""

    def __init__(self, featuriser: Any, trace: TraceInputs) -> None:
        self.tracker = featuriser.make_tracker()
        self.n = len(trace.ts)
        done = trace.ts + np.nan_to_num(trace.latency, nan=0.0).astype(np.int64)
        self.order = np.argsort(done, kind="stable").tolist()
        self.done = done.tolist()
        self.ts, self.off, self.size, self.op = (
            a.tolist() for a in (trace.ts, trace.offset, trace.size, trace.op))
        self.span = int(trace.ts[-1] - trace.ts[0]) + 20_000_000
        self.next_done = 0
        self.lap = -1

    def before(self, i: int) -> None:
        k = i % self.n
        lap = i // self.n
        if lap != self.lap:  # a new pass over the trace: start from an empty device
            self.lap = lap
            self.next_done = 0
            self.tracker.expire(self.ts[0] + lap * self.span + 1)
        base = lap * self.span
        now = self.ts[k] + base
        j = self.next_done
        while j < self.n and self.done[self.order[j]] + base <= now and self.order[j] < k:
            o = self.order[j]
            self.tracker.complete(o + lap * self.n, self.done[o] + base)
            j += 1
        self.next_done = j

    def after(self, i: int) -> None:
        k = i % self.n
        base = (i // self.n) * self.span
        self.tracker.issue(k + (i // self.n) * self.n, self.ts[k] + base, self.off[k],
                           self.size[k], self.op[k])

    def encode(self, featuriser: Any, out: np.ndarray, i: int) -> None:
        k = i % self.n
        featuriser.encode_live(self.tracker, self.off[k], self.size[k], self.op[k], out=out)


def time_live(featuriser: Any, engine: Any, trace: TraceInputs, calls: int,
              predict: bool) -> np.ndarray:
    """Per-decision time of featurise (+ predict) on a live tracker; the tracker's
    own bookkeeping (issue, complete) is not counted."""
    replay = LiveReplay(featuriser, trace)
    buf = engine.input
    pending: list[int] = []

    def prepare(i: int) -> None:
        if pending:
            replay.after(pending.pop())
        replay.before(i)
        pending.append(i)

    if predict:
        def step(i: int) -> object:
            replay.encode(featuriser, buf, i)
            return engine.margin1()
    else:
        def step(i: int) -> object:
            replay.encode(featuriser, buf, i)
            return None

    return time_calls(step, calls, prepare=prepare)


@numba.njit(cache=True)
def _timed_run1(ints: np.ndarray, arena: np.ndarray) -> int:  # pragma: no cover - compiled
    """The model once, timed on the fused kernel's clock around ``run1`` alone."""
    t0 = monotonic_ns()
    run1(ints, arena)
    return monotonic_ns() - t0


def time_fused(bundle: Any, engine: Any, trace: TraceInputs, calls: int,
               warmup: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Per-decision ns of featurise + predict inside the fused decision kernel, on
    its own clock (``mittd.daemon.fastpath.admit1``: no Python dispatch in it),
    replaying the trace's IOs through an ``AdmissionCore`` serving ``engine``, each
    completed when its latency falls due; and, interleaved in the same replay, the
    model alone (``run1`` on the last decision's input row, one compiled call timed
    on the same clock) before every other decision, so both see the same Python
    between decisions. ``calls`` samples of each: their difference is what
    featurising inside the call costs."""
    import heapq

    from mittd.daemon.admission import AdmissionCore
    from mittd.daemon.devices import build_state

    st = build_state(bundle, engine, decision_threshold=0.5)
    core = AdmissionCore({"d": st}, predict_budget_us=1e9)
    if st.admit_args is None:
        raise ValueError(f"engine {engine.name!r} has no compiled plan to fuse")
    ints, arena = st.plan.ints, st.plan.arena
    deadline = float(st.thresholds_us[0])  # head 0: the model is always asked
    data = st.counters.predict_ns.data
    n = len(trace.ts)
    span = int(trace.ts[-1] - trace.ts[0]) + 20_000_000
    ts, lat = trace.ts.tolist(), np.nan_to_num(trace.latency, nan=0.0).tolist()
    off, size, op = trace.offset.tolist(), trace.size.tolist(), trace.op.tolist()
    due: list[tuple[int, int, float]] = []
    fused = np.empty(calls, np.float64)
    model = np.empty(calls, np.float64)
    for i in range(warmup + 2 * calls):
        k, lap = i % n, i // n
        now = int(ts[k]) + lap * span
        while due and due[0][0] <= now:
            t, rid, latency = heapq.heappop(due)
            core.complete("d", rid, latency, t)
        j, alone = divmod(i - warmup, 2)
        if alone and i >= warmup:
            model[j] = _timed_run1(ints, arena)
        before = data[-1]
        d = core.admit("d", int(op[k]), int(off[k]), int(size[k]), deadline, i, now)
        if not alone and i >= warmup:
            fused[j] = data[-1] - before
        if d.admit:
            heapq.heappush(due, (now + int(lat[k]), i, float(lat[k])))
    return fused, model


def engine_kernel_ns(engine: Any, x: np.ndarray, repeats: int = 2000, rounds: int = 7
                     ) -> float:
    """The median over ``rounds`` of the mean ns per decision of the model alone in
    one compiled loop (``kernels.run_many``: input copy + network, no Python call),
    timed as ``auto`` times its candidates (``engines.fastest``)."""
    from mittd.predictor.engines import fastest

    return fastest([engine], x, rounds=rounds, repeats=repeats)[1][0]


def bench_config(model: str, sparsity: float, method: str, trace: TraceInputs,
                 x: np.ndarray, engines: Iterable[str], calls: int, batch: int,
                 featuriser: Any) -> dict[str, Any]:
    bundle = synthetic_bundle(model, sparsity, method, seed=0)
    rows: dict[str, Any] = {}
    xb = x[:batch]
    for name in engines:
        engine = make_engine(name, bundle.graph, bundle.params, sample=x[:64])
        inp = engine.input

        def engine_only(i: int, engine: Any = engine, inp: np.ndarray = inp) -> object:
            inp[:] = x[i % len(x)]
            return engine.margin1()

        # the copy above is a few hundred ns the daemon does not pay (it featurises
        # straight into the input); measure it and take it off
        copy_ns = time_calls(lambda i, inp=inp: inp.__setitem__(slice(None), x[i % len(x)]),
                             calls // 4)
        t_engine = time_calls(engine_only, calls) - int(np.median(copy_ns))
        t_full = time_live(featuriser, engine, trace, calls, predict=True)
        reps = []
        for _ in range(7):
            t0 = time.perf_counter()
            engine.logits(xb)
            reps.append(time.perf_counter() - t0)
        row = {
            "engine": percentiles(t_engine),
            "with_features": percentiles(t_full),
            "batch_per_s": batch / float(np.median(reps)),
        }
        if hasattr(engine, "plan"):
            row["formats"] = sorted(set(engine.plan.kinds.values()))
            row["engine_kernel_us"] = engine_kernel_ns(engine, x) / 1e3
            fused, model = time_fused(bundle, engine, trace, calls // 4)
            row["fused"], row["model_call"] = percentiles(fused), percentiles(model)
        rows[name] = row
    return rows


def run(configs: Iterable[tuple[str, Iterable[float]]] = DEFAULT_CONFIGS,
        methods: Iterable[str] = METHODS, engines: Iterable[str] | None = None,
        calls: int = 20_000, batch: int = 256, with_tf: bool = True,
        trace_path: Path = SAMPLE_TRACE, progress: Callable[[str], None] | None = None
        ) -> dict[str, Any]:
    from mittd.predictor.engines import limit_blas_threads
    from mittd.predictor.floor import machine_rates

    engines = list(engines or ENGINES)
    limit_blas_threads(1)
    table = read_trace(trace_path)
    trace = TraceInputs.from_table(table.slice(0, 20_000))
    rates = machine_rates()
    results: dict[str, Any] = {"host": _host(), "calls": calls, "batch": batch,
                               "trace": str(trace_path), "rates": rates.as_dict(),
                               "configs": []}
    tf_mod = onnx_mod = None
    if with_tf:
        try:
            from mittd.training import tf_bench as tf_mod  # type: ignore[no-redef]
        except ImportError as e:
            results["tf_unavailable"] = str(e)
        try:
            from mittd.training import onnx_bench as onnx_mod  # type: ignore[no-redef]
        except ImportError as e:
            results["onnx_unavailable"] = str(e)
    for model, sparsities in configs:
        featuriser = FEATURISERS[MODEL_FEATURISER[model]]()
        x = featuriser.encode_trace(table.slice(0, 4096))
        feat_ns = time_live(featuriser, _NoEngine(featuriser.dim), trace, calls,
                            predict=False)
        for s in sparsities:
            for method in (methods if s > 0 else ("magnitude",)):
                if progress:
                    progress(f"{model} {s:.0%} {method}")
                entry = {
                    "model": model, "sparsity": s, "method": method,
                    "featurise": percentiles(feat_ns),
                    "floor": _floor(model, s, method, x, rates),
                    "engines": bench_config(model, s, method, trace, x, engines, calls,
                                            batch, featuriser),
                }
                if tf_mod is not None or onnx_mod is not None:
                    # the peers get the shapes mittd runs: dead units compacted away
                    # (node pruning's whole gain), never the padded original
                    from mittd.predictor.plan import compact_nodes

                    b = synthetic_bundle(model, s, method, seed=0)
                    g, p, removed = compact_nodes(b.graph, b.params)
                    for key, mod, fn in (("tf", tf_mod, "tf_latency"),
                                         ("onnx", onnx_mod, "onnx_latency")):
                        if mod is not None:
                            entry[key] = _peer(getattr(mod, fn)(g, p, x, batch=batch),
                                               int(sum(removed.values())))
                results["configs"].append(entry)
    return results


def _peer(res: dict[str, Any], units_removed: int) -> dict[str, Any]:
    """A peer's result as the report reads it: no samples, ``batch_per_s``."""
    for path in res.values():
        if isinstance(path, dict):
            path.pop("samples_us", None)
            if "decisions_per_s" in path:
                path["batch_per_s"] = path["decisions_per_s"]
    res["units_removed"] = units_removed
    return res


def _floor(model: str, sparsity: float, method: str, x: np.ndarray,
           rates: Any) -> dict[str, float]:
    """The configuration's work (on the compacted network, as the engines run it)
    and its floor on this CPU (``predictor.floor``)."""
    from mittd.predictor.floor import floor_us, network_work
    from mittd.predictor.plan import compact_nodes

    b = synthetic_bundle(model, sparsity, method, seed=0)
    g, p, _ = compact_nodes(b.graph, b.params)
    work = network_work(g, p, x)
    return {**work.as_dict(), "floor_us": floor_us(work, rates)}


class _NoEngine:
    """Stands in for an engine to time featurisation alone."""

    def __init__(self, dim: int) -> None:
        self.input = np.zeros(dim, np.float32)


def _host() -> dict[str, Any]:
    import numba

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    import llvmlite.binding as llvm

    feats = llvm.get_host_cpu_features()
    simd = [f for f in ("avx512f", "avx2", "fma") if feats.get(f)]
    return {"cpu": cpu, "cpu_name": llvm.get_host_cpu_name(), "simd": simd,
            "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__}


# -- report ----------------------------------------------------------------------------

TARGETS = {
    ("precise_linear", 0.98): "target p50 <= 2.0 µs (seed 000: EIE 32 PEs 2.01 µs, "
    "i7-8700 13.4 µs); >= 400,000 decisions/s batched",
    ("good_custom", 0.0): "target p50 <= 7.49 µs (seed 000: i7-8700)",
}


def render(results: dict[str, Any]) -> str:
    """Markdown tables, one per model/sparsity/pruning method."""
    h = results["host"]
    simd = "/".join(h.get("simd", [])) or "no AVX2"
    lines = [f"Host: {h['cpu']} ({h.get('cpu_name', '?')}, {simd}), {h['cores']} cores, "
             f"Python {h['python']}, numpy {h['numpy']}, numba {h['numba']}; "
             f"{results['calls']:,} timed calls per cell, batch {results['batch']}; "
             f"inputs featurised from {results['trace']}."]
    rt = results.get("rates")
    if rt:
        lines.append(f"Rates measured on this CPU: {rt['ns_per_mac']:.3f} ns per gathered "
                     f"multiply-add, {rt['ns_per_dense_mac']:.3f} ns per dense one, "
                     f"{rt['ns_per_byte'] * 1e3:.1f} ps per byte from L2; a Python call of a "
                     f"compiled kernel {rt['call_ns']:.0f} ns (in every engine's p50, not "
                     "in the floor).")
    if "tf_unavailable" in results:
        lines.append(f"TensorFlow not measured: {results['tf_unavailable']}")
    if "onnx_unavailable" in results:
        lines.append(f"ONNX Runtime not measured: {results['onnx_unavailable']}")
    for c in results["configs"]:
        title = f"{c['model']} — {c['sparsity']:.0%} sparse"
        if c["sparsity"] > 0:
            title += f", {c['method']} pruning"
        lines += ["", f"### {title}", ""]
        target = TARGETS.get((c["model"], c["sparsity"]))
        if target:
            lines.append(f"({target})")
            lines.append("")
        f = c["featurise"]
        lines.append(f"featurisation alone: p50 {f['p50_us']:.2f} µs, p99 {f['p99_us']:.2f} µs")
        fl = c.get("floor")
        if fl:
            lines.append(
                f"floor on this CPU: {fl['nonzeros']:,} non-zeros, {fl['macs']:,.0f} "
                f"multiply-adds after skipping zero activations ({fl['input_nonzero_share']:.1%}"
                f" of inputs non-zero), {fl['bytes'] / 1e3:,.1f} KB read → "
                f"**{fl['floor_us']:.2f} µs** (no call overhead)")
        lines.append("")
        lines.append("| engine | p50 µs | × floor | p99 µs | p50 µs incl. features | p99 µs incl. "
                     "features | kernel µs | model per call p50 µs | fused p50 µs (+) | "
                     f"decisions/s at batch {results['batch']} | formats |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for name, r in c["engines"].items():
            ratio = (f"{r['engine']['p50_us'] / fl['floor_us']:.1f}×"
                     if fl and fl["floor_us"] > 0 else "")
            kern = call = fused = ""
            if "fused" in r:
                kern = f"{r['engine_kernel_us']:.2f}"
                mc = r["model_call"]["p50_us"]
                call = f"{mc:.2f}"
                fz = r["fused"]["p50_us"]
                fused = f"{fz:.2f} ({fz - mc:+.2f})"
            lines.append(
                f"| {name} | {r['engine']['p50_us']:.2f} | {ratio} | "
                f"{r['engine']['p99_us']:.2f} | "
                f"{r['with_features']['p50_us']:.2f} | {r['with_features']['p99_us']:.2f} | "
                f"{kern} | {call} | {fused} | "
                f"{r['batch_per_s']:,.0f} | {', '.join(r.get('formats', ['numpy']))} |"
            )
        peers = []
        for key, paths, version in (("tf", ("tf_eager", "tf_function", "tflite"), "tf_version"),
                                    ("onnx", ("onnxruntime",), "ort_version")):
            res = c.get(key)
            if not res:
                continue
            label = "TF" if key == "tf" else "ORT"
            for path in paths:
                if path in res:
                    r = res[path]
                    peers.append((path, r["p50_us"]))
                    lines.append(f"| {path} | {r['p50_us']:.2f} | | {r['p99_us']:.2f} | | | | | | "
                                 f"{r['batch_per_s']:,.0f} | {label} {res.get(version, '')}, "
                                 f"compacted ({res.get('units_removed', 0):,} units removed) |")
        best = min(c["engines"].items(), key=lambda kv: kv[1]["engine"]["p50_us"])
        for path, p50 in peers:
            if path in ("tflite", "onnxruntime"):
                lines.append("")
                lines.append(f"best engine: {best[0]}, {p50 / best[1]['engine']['p50_us']:.1f}x "
                             f"faster than {'TF Lite' if path == 'tflite' else 'ONNX Runtime'} "
                             "at batch 1 (p50)")
    return "\n".join(lines)
