"""Inference engines: interchangeable, exact implementations of one network.

===========  ===============================================================
engine       what it runs
===========  ===============================================================
dense        numpy/BLAS, one matrix product per layer (the plain baseline)
csr          compiled CSR sparse rows for every layer
blocksparse  compiled Scalpel SIMD-aware groups (seed 003 §3.3) for every layer
csc          compiled sparse columns skipping zero inputs (EIE's dataflow)
nodepruned   dead nodes compacted away (Scalpel §3.4), then compiled dense
dcol         dead nodes compacted away, then dense columns added for non-zero
             inputs only (zero inputs skipped 8 at a time by a bit mask)
auto         node compaction, then per layer the storage measured fastest on
             this machine (Scalpel's "optimised pruning": a layer not sparse
             enough to win stays dense)
===========  ===============================================================

All engines compute the network of ``predictor.graph.forward`` (tests hold them
to it). The compiled ones run the whole network in one call with no allocation
(``predictor.kernels``); their ``input`` is a view the featuriser writes into.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mittd.predictor import kernels as K
from mittd.predictor.eie import make_eie
from mittd.predictor.engine import Engine, WeightMap
from mittd.predictor.formats import (
    KIND_BLOCK,
    KIND_CSC,
    KIND_CSR,
    KIND_DCOL,
    KIND_DENSE,
    KIND_NAMES,
    KIND_SELL,
    SELL_MAX_INPUTS,
)
from mittd.predictor.graph import (
    Graph,
    GraphBuilder,
    GraphError,
    Params,
)
from mittd.predictor.plan import Plan, compact_nodes, compile_plan, relabel_units

MIN_CHUNK, MAX_CHUNK = 64, 1024  # batched path: columns per kernel call
BATCH_AS_CSR = (KIND_CSC, KIND_SELL, KIND_DCOL)  # batch-1 layouts; batches read them as CSR


class DenseNumpyEngine(Engine):
    """numpy/BLAS per layer, buffers preallocated; the baseline the others beat."""

    name = "dense"

    def __init__(self, graph: Graph, params: WeightMap) -> None:
        super().__init__(graph, params)
        self._w = {n: (np.ascontiguousarray(k, np.float32), np.asarray(b, np.float32))
                   for n, (k, b) in params.items()}
        widths = graph.shapes()
        self._buf = {n.name: np.zeros(widths[n.name], np.float32) for n in graph.nodes}
        self._steps = self._compile(self._buf)
        self._batch: dict[int, tuple[dict[str, np.ndarray], list[Callable[[], None]]]] = {}

    def _compile(self, buf: dict[str, np.ndarray]) -> list[Callable[[], None]]:
        steps: list[Callable[[], None]] = []
        for n in self.graph.nodes:
            out = buf[n.name]
            ins = [buf[i] for i in n.inputs]
            if n.op == "input":
                continue
            if n.op == "slice":
                s, w = n.attrs["start"], n.attrs["width"]
                steps.append(lambda o=out, a=ins[0], s=s, w=w: np.copyto(o, a[..., s:s + w]))
            elif n.op == "sum_slices":
                s, w, c = n.attrs["start"], n.attrs["width"], n.attrs["count"]

                def sum_slices(o=out, a=ins[0], s=s, w=w, c=c) -> None:
                    np.copyto(o, a[..., s:s + w])
                    for q in range(1, c):
                        o += a[..., s + q * w:s + (q + 1) * w]
                steps.append(sum_slices)
            elif n.op == "dense":
                k, b = self._w[n.name]

                def dense(o=out, a=ins[0], k=k, b=b) -> None:
                    np.dot(a, k, out=o)
                    o += b
                steps.append(dense)
            elif n.op == "add":
                steps.append(lambda o=out, a=ins[0], c=ins[1]: np.add(a, c, out=o))
            elif n.op == "subtract":
                steps.append(lambda o=out, a=ins[0], c=ins[1]: np.subtract(a, c, out=o))
            elif n.op == "relu":
                steps.append(lambda o=out, a=ins[0]: np.maximum(a, 0.0, out=o))
            elif n.op == "concat":
                def concat(o=out, parts=tuple(ins)) -> None:
                    pos = 0
                    for p in parts:
                        w = p.shape[-1]
                        o[..., pos:pos + w] = p
                        pos += w
                steps.append(concat)
        return steps

    @property
    def input(self) -> np.ndarray:
        return self._buf["input"]

    def run1(self) -> np.ndarray:
        for step in self._steps:
            step()
        return self._buf[self.graph.output]

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        n = len(x)
        if n not in self._batch:
            widths = self.graph.shapes()
            buf = {m.name: np.zeros((n, widths[m.name]), np.float32) for m in self.graph.nodes}
            self._batch = {n: (buf, self._compile(buf))}
        buf, steps = self._batch[n]
        buf["input"][:] = x
        for step in steps:
            step()
        return buf[self.graph.output].copy()


class CompiledEngine(Engine):
    """Runs a compiled plan with the numba kernels; ``kinds`` picks each layer's
    storage format."""

    name = "compiled"

    def __init__(self, graph: Graph, params: WeightMap, kinds: Mapping[str, int],
                 group: int = 8, removed: Mapping[str, int] | None = None,
                 threads: int | None = None) -> None:
        super().__init__(graph, params)
        self.group = group
        self.plan: Plan = compile_plan(graph, params, kinds, group)
        # CSC pays (skipping zero activations) one row at a time; in the batched
        # kernel it scatters into the outputs and runs ~1.4x slower than CSR
        # (95 % precise_linear, 512 rows: 3.5 vs 2.4 µs/row). Batches run a twin
        # plan with the CSC layers stored as CSR (same weights, same result).
        # SELL's gather is a batch-1 layout too: batches read those layers as CSR.
        self._batch_plan = self.plan
        if any(k in BATCH_AS_CSR for k in kinds.values()):
            self._batch_plan = compile_plan(
                graph, params, {n: KIND_CSR if k in BATCH_AS_CSR else k
                                for n, k in kinds.items()}, group)
        self._ints = self.plan.ints
        self._arena = self.plan.arena
        self._input = self.plan.input
        self._output = self.plan.output
        self._removed = dict(removed or {})
        self.threads = max(1, min(threads or (os.cpu_count() or 1), 8))
        self._acts: dict[tuple[int, int], np.ndarray] = {}
        self._pool: ThreadPoolExecutor | None = None
        K.run1(self._ints, self._arena)  # compile (or load from cache) now, not on a request

    @property
    def input(self) -> np.ndarray:
        return self._input

    def run1(self) -> np.ndarray:
        K.run1(self._ints, self._arena)
        return self._output

    def margin1(self) -> float:
        K.run1(self._ints, self._arena)
        out = self._output
        return float(out[1] - out[0]) if self.graph.head == "softmax" else float(out[0])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Batched logits; the batch is cut into chunks (bounded memory whatever n)
        run on ``threads`` threads at once (the kernels release the GIL)."""
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.graph.input_dim:
            raise GraphError(f"{self.graph.name}: batch must be (n, {self.graph.input_dim})")
        n = len(x)
        out = np.empty((n, self.plan.output_dim), np.float32)
        workers = self.threads if n >= 2 * MIN_CHUNK else 1
        size = min(MAX_CHUNK, max(MIN_CHUNK, -(-n // workers)))
        chunks = [(lo, min(lo + size, n)) for lo in range(0, n, size)]
        if workers == 1 or len(chunks) == 1:
            for lo, hi in chunks:
                self._run_chunk(x, out, lo, hi, 0)
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="mittd-engine")
        jobs = [self._pool.submit(self._run_chunks, x, out, chunks[w::workers], w)
                for w in range(workers)]
        for job in jobs:
            job.result()
        return out

    def _run_chunks(self, x: np.ndarray, out: np.ndarray,
                    chunks: list[tuple[int, int]], worker: int) -> None:
        for lo, hi in chunks:
            self._run_chunk(x, out, lo, hi, worker)

    def _run_chunk(self, x: np.ndarray, out: np.ndarray, lo: int, hi: int,
                   worker: int) -> None:
        m = hi - lo
        plan = self._batch_plan
        act = self._acts.get((worker, m))
        if act is None:
            act = np.zeros((plan.act_size, m), np.float32)
            self._acts[(worker, m)] = act
        i0, o0 = plan.input_off, plan.output_off
        act[i0:i0 + self.graph.input_dim] = x[lo:hi].T
        K.run_batch(plan.ints, plan.arena, act)
        out[lo:hi] = act[o0:o0 + plan.output_dim].T

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "layers": {
                name: {"format": self.plan.kinds[name], "stored_weights": self.plan.stored[name],
                       "nodes_removed": self._removed.get(name, 0)}
                for name in self.plan.kinds
            },
        }


def limit_blas_threads(n: int = 1) -> None:
    """Cap BLAS (OpenBLAS) threads process-wide; returns nothing, stays in effect.

    The batched kernels hand dense layers to BLAS (``np.dot`` in numba goes to
    SciPy's OpenBLAS). On a small machine whose other cores are busy — a daemon's
    gRPC workers, the client, fio — OpenBLAS's spinning worker threads make a
    512-row batch ~30x slower (measured: 45 µs vs 1.6 µs per row). The daemon and
    the replayer run one BLAS thread per calling thread instead. SciPy's BLAS is
    loaded first so the cap reaches it too.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (load the library numba calls)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n, user_api="blas")


def _uniform(graph: Graph, kind: int) -> dict[str, int]:
    return {n.name: kind for n in graph.dense_nodes()}


def _named(engine: CompiledEngine, name: str) -> CompiledEngine:
    engine.name = name
    return engine


def make_csr(graph: Graph, params: WeightMap, **_: Any) -> Engine:
    return _named(CompiledEngine(graph, params, _uniform(graph, KIND_CSR)), "csr")


def make_csc(graph: Graph, params: WeightMap, **_: Any) -> Engine:
    return _named(CompiledEngine(graph, params, _uniform(graph, KIND_CSC)), "csc")


def make_sell(graph: Graph, params: WeightMap, **_: Any) -> Engine:
    """Node compaction, hidden units renumbered by their non-zeros (exact), SELL-8."""
    g, p, removed = compact_nodes(graph, params)
    return _named(CompiledEngine(g, relabel_units(g, p), _uniform(g, KIND_SELL),
                                 removed=removed), "sell")


def make_blocksparse(graph: Graph, params: WeightMap, group: int = 8, **_: Any) -> Engine:
    return _named(CompiledEngine(graph, params, _uniform(graph, KIND_BLOCK), group),
                  "blocksparse")


def make_nodepruned(graph: Graph, params: WeightMap, **_: Any) -> Engine:
    g, p, removed = compact_nodes(graph, params)
    return _named(CompiledEngine(g, p, _uniform(g, KIND_DENSE), removed=removed), "nodepruned")


def make_dcol(graph: Graph, params: WeightMap, **_: Any) -> Engine:
    g, p, removed = compact_nodes(graph, params)
    return _named(CompiledEngine(g, p, _uniform(g, KIND_DCOL), removed=removed), "dcol")


# -- auto: per-layer choice by measured speed ---------------------------------------

CANDIDATES = (KIND_DENSE, KIND_CSR, KIND_BLOCK, KIND_CSC, KIND_SELL, KIND_DCOL)


def _time_once(engine: CompiledEngine, inputs: np.ndarray, repeats: int) -> float:
    """Mean ns of one decision over ``repeats`` runs in one compiled loop, cycling
    through ``inputs``."""
    plan = engine.plan
    at = plan.act_base + plan.input_off
    x = np.ascontiguousarray(inputs, np.float32)
    t0 = time.perf_counter_ns()
    K.run_many(plan.ints, plan.arena, at, x, repeats)
    return (time.perf_counter_ns() - t0) / repeats


def fastest(engines: Sequence[CompiledEngine], inputs: np.ndarray, rounds: int = 9,
            repeats: int = 200) -> tuple[int, list[float]]:
    """The index of the fastest engine and every engine's median ns per decision.

    Why interleaved rounds and medians: timed one after another, a burst of noise
    on a shared machine (another process, a frequency step) lands on whichever
    candidate is being timed, and a best-of-N keeps a lucky outlier — ``auto``
    once picked a plan 1.4x slower than plain csc that way. Each round here times
    every candidate once, in a rotated order, so a burst costs one round of one
    candidate, and the median over rounds decides."""
    for e in engines:  # warm: caches, branch predictors, page faults
        _time_once(e, inputs, max(1, repeats // 4))
    times: list[list[float]] = [[] for _ in engines]
    for r in range(rounds):
        for j in range(len(engines)):
            i = (j + r) % len(engines)
            times[i].append(_time_once(engines[i], inputs, repeats))
    med = [statistics.median(t) for t in times]
    return int(np.argmin(med)), med


def _layer_engine(kernel: np.ndarray, bias: np.ndarray, kind: int, group: int
                  ) -> CompiledEngine:
    n_in, n_out = kernel.shape
    b = GraphBuilder("layer", n_in)
    g = b.build(b.dense("input", n_out, name="l"), head="sigmoid")
    return CompiledEngine(g, {"l": (kernel, bias)}, {"l": kind}, group)


def layer_inputs(graph: Graph, params: WeightMap, sample: np.ndarray | None,
                 n: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Representative input vectors of every dense layer: the real activations of
    ``sample`` inputs when given (activation sparsity matters to ``csc``), else of
    random binary inputs (the LBA bits' kind)."""
    from mittd.predictor.graph import forward_all

    if sample is None:
        rng = np.random.default_rng(seed)
        sample = (rng.random((n, graph.input_dim)) < 0.3).astype(np.float32)
    acts = forward_all(graph, params, sample[:n])
    return {d.name: acts[d.inputs[0]].astype(np.float32) for d in graph.dense_nodes()}


def choose_kinds(graph: Graph, params: WeightMap, sample: np.ndarray | None = None,
                 group: int = 8, repeats: int = 200) -> tuple[dict[str, int], dict]:
    """Time every candidate format on every layer (:func:`fastest`); keep the fastest."""
    inputs = layer_inputs(graph, params, sample)
    choice: dict[str, int] = {}
    timings: dict[str, dict[str, float]] = {}
    for d in graph.dense_nodes():
        kernel, bias = (np.asarray(a, np.float32) for a in params[d.name])
        kinds = [k for k in CANDIDATES  # SELL's 16-bit column ids bound its width
                 if k != KIND_SELL or kernel.shape[0] <= SELL_MAX_INPUTS]
        engines = [_layer_engine(kernel, bias, k, group) for k in kinds]
        best, med = fastest(engines, inputs[d.name], repeats=repeats)
        timings[d.name] = {KIND_NAMES[k]: t for k, t in zip(kinds, med, strict=True)}
        choice[d.name] = kinds[best]
    return choice, timings


def make_auto(graph: Graph, params: WeightMap, sample: np.ndarray | None = None,
              group: int = 8, kinds: Mapping[str, str] | None = None, **_: Any) -> Engine:
    """Node compaction, then the per-layer fastest formats; the whole network is
    timed against the uniform plans too (per-layer timings of tiny layers are
    noisy), and the fastest plan wins. ``kinds`` (layer → format name) skips the
    measurement, e.g. when a bundle recorded the choice made on this machine."""
    g, p, removed = compact_nodes(graph, params)
    p = relabel_units(g, p)  # exact; puts SELL rows in order for whichever layers choose it
    if kinds is not None:
        by_name = {v: k for k, v in KIND_NAMES.items()}
        chosen = {n: by_name[f] for n, f in kinds.items()}
        return _named(CompiledEngine(g, p, chosen, group, removed=removed), "auto")
    per_layer, timings = choose_kinds(g, p, sample, group)
    wide = any(k.shape[0] > SELL_MAX_INPUTS for k, _ in p.values())
    plans = [per_layer] + [_uniform(g, k) for k in CANDIDATES if not (wide and k == KIND_SELL)]
    if sample is None:
        rng = np.random.default_rng(0)
        sample = (rng.random((32, graph.input_dim)) < 0.3).astype(np.float32)
    unique = [dict(k) for k in {tuple(sorted(k.items())): k for k in plans}.values()]
    engines = [CompiledEngine(g, p, kinds_, group, removed=removed) for kinds_ in unique]
    i, med = fastest(engines, np.asarray(sample[:32], np.float32))
    best = engines[i]
    best.timings = {"layers_ns": timings, "network_ns": med[i],  # type: ignore[attr-defined]
                    "plans_ns": med}
    return _named(best, "auto")


ENGINES: dict[str, Callable[..., Engine]] = {
    "dense": lambda g, p, **_: DenseNumpyEngine(g, p),
    "csr": make_csr,
    "blocksparse": make_blocksparse,
    "csc": make_csc,
    "sell": make_sell,
    "nodepruned": make_nodepruned,
    "dcol": make_dcol,
    "auto": make_auto,
}


#: Every engine ``make_engine`` builds: the float-exact ``ENGINES`` and ``eie`` (16-bit
#: fixed point, EIE's arithmetic: decisions, not logits, match the others).
ENGINE_NAMES: tuple[str, ...] = (*ENGINES, "eie")


def make_engine(name: str, graph: Graph, params: WeightMap | Params, **opts: Any) -> Engine:
    if name == "eie":
        return make_eie(graph, params, **opts)
    if name not in ENGINES:
        raise GraphError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
    return ENGINES[name](graph, params, **opts)
