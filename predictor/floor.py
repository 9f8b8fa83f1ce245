"""How fast a network could run on this CPU: the floor a batch-1 engine is held to.

Why: "x µs per decision" says little without knowing what the machine allows. A
pruned network's work at batch 1 is its multiply-adds after skipping zero
activations, each a gather of one input (about one per cycle on an AVX2 core),
plus streaming the weights those need from L2. Both are measured here on this CPU
by small compiled loops (:func:`machine_rates`), and the floor is

    floor ns = max(multiply-adds x ns per gathered multiply-add,
                   bytes touched x ns per byte streamed from L2)

(the loads and the arithmetic overlap, so the slower of the two bounds it), or,
where it is less, the same for the dense way (every weight of the compacted
layers at the vectorised multiply-add rate, 4 bytes each) or for the dense way
over the non-zero inputs only (their columns' weights, as ``dcol`` runs them),

where the multiply-adds are counted on real inputs (activation sparsity matters:
6.5 % of precise_linear's input bits are non-zero) and the bytes are the weights
those multiply-adds read, 4 bytes of value and 2 of index each (16-bit indices
are exact for layers under 65,536 inputs). It is a floor in the honest sense: it
leaves out what every real kernel pays (biases, ReLUs, row bookkeeping, the
Python→numba call, which :func:`machine_rates` reports apart), so an engine at
1.5x its floor is close to the machine's limit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numba
import numpy as np

from mittd.predictor.formats import SELL_LANES
from mittd.predictor.graph import Graph, forward_all
from mittd.predictor.kernels import _dense_rows, _sell_chunk

__all__ = ["MachineRates", "NetworkWork", "floor_us", "machine_rates", "network_work"]

VALUE_BYTES, INDEX_BYTES = 4, 2


@dataclass(frozen=True)
class NetworkWork:
    """What one decision must do: stored non-zeros, multiply-adds after skipping
    zero activations (mean over the sample), and the bytes those read."""

    nonzeros: int
    macs: float
    bytes: float
    input_nonzero_share: float
    dense_weights: int  # every weight of the layers, zeros included (a dense kernel's work)
    # the weights of the columns of non-zero inputs, zeros included (mean over the
    # sample): the dense work left once zero inputs are skipped, as ``dcol`` does
    active_dense_weights: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class MachineRates:
    """This CPU's rates, measured: ns per gathered multiply-add (inputs in L1),
    ns per byte streamed from L2, and ns per Python call of a compiled kernel."""

    ns_per_mac: float
    ns_per_byte: float
    call_ns: float
    ns_per_dense_mac: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def network_work(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 sample: np.ndarray) -> NetworkWork:
    """Count the work of ``graph`` on ``sample`` inputs (n, input_dim)."""
    sample = np.asarray(sample, np.float32)
    acts = forward_all(graph, params, sample)
    nonzeros = dense = 0
    macs = active_dense = 0.0
    for d in graph.dense_nodes():
        kernel = np.asarray(params[d.name][0])
        dense += kernel.size
        per_input = (kernel != 0).sum(axis=1)  # non-zeros each input feeds
        nonzeros += int(per_input.sum())
        active = np.asarray(acts[d.inputs[0]]) != 0
        macs += float((active * per_input).sum(axis=1).mean())
        active_dense += float(active.sum(axis=1).mean()) * kernel.shape[1]
    return NetworkWork(nonzeros, macs, macs * (VALUE_BYTES + INDEX_BYTES),
                       float((sample != 0).mean()), dense, active_dense)


@numba.njit(cache=True, fastmath=True)
def _gather_loop(vals: np.ndarray, cols: np.ndarray, x: np.ndarray,
                 reps: int) -> float:  # pragma: no cover - compiled
    # the SELL kernel's own gather-and-multiply-add (an explicit vgatherdps on AVX2),
    # in four chains so that no chain of adds, only the gathers, sets the pace
    s = np.float32(0.0)
    q = vals.size // (4 * SELL_LANES)
    for _ in range(reps):
        for c in range(4):
            t = _sell_chunk(vals, cols, x, c * q, q)
            s += t[0]
    return float(s)


@numba.njit(cache=True, fastmath=True)
def _dense_loop(w: np.ndarray, x: np.ndarray, reps: int) -> float:  # pragma: no cover
    # the dense engines' own row kernel on an L1-resident block
    b = np.zeros(w.size // x.size, np.float32)
    y = np.zeros(w.size // x.size, np.float32)
    for _ in range(reps):
        _dense_rows(w, b, x, y, 0)
    return float(y[0])


@numba.njit(cache=True, fastmath=True)
def _stream_loop(buf: np.ndarray, reps: int) -> float:  # pragma: no cover - compiled
    s = np.float32(0.0)
    for _ in range(reps):
        for i in range(buf.size):
            s += buf[i]
    return float(s)


@numba.njit(cache=True)
def _nothing(a: np.ndarray, b: np.ndarray) -> None:  # pragma: no cover - compiled
    pass


def _best_ns(fn, *args: object, rounds: int = 7) -> float:  # type: ignore[no-untyped-def]
    fn(*args[:-1], 1)  # compile or load, warm
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn(*args)
        out.append(time.perf_counter_ns() - t0)
    return float(min(out))  # the machine at its best: a floor, not a typical time


def machine_rates(seed: int = 0) -> MachineRates:
    """Measure :class:`MachineRates` (well under a second)."""
    rng = np.random.default_rng(seed)
    n, reps = 2048, 200  # 2,048 weights (16 KB with indices): L1, as a layer's slice
    vals = rng.standard_normal(n).astype(np.float32)
    cols = rng.integers(0, 352, n).astype(np.uint16).view(np.int32)  # as SELL stores them
    x = rng.standard_normal(352).astype(np.float32)
    mac = _best_ns(_gather_loop, vals, cols, x, reps) / (n * reps)
    buf = rng.standard_normal(48 * 1024).astype(np.float32)  # 192 KB: past L1, in L2
    byte = _best_ns(_stream_loop, buf, 50) / (buf.nbytes * 50)
    a = np.zeros(4, np.float32)
    _nothing(a, a)
    calls = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(2000):
            _nothing(a, a)
        calls.append((time.perf_counter_ns() - t0) / 2000)
    w = rng.standard_normal(16 * 352).astype(np.float32)  # 16 rows as long as a layer's: L1
    dense = _best_ns(_dense_loop, w, x, reps) / (w.size * reps)
    return MachineRates(mac, byte, float(np.median(calls)), dense)


def floor_us(work: NetworkWork, rates: MachineRates) -> float:
    """The floor, µs, no call overhead: the cheapest of the sparse way (gathered
    multiply-adds after zero-skipping, or the L2 streaming of their weights, whichever
    is slower: the two overlap), the dense way (every weight, vectorised, or
    streamed at 4 bytes each) — a node-pruned network, compacted, is dense work —
    and the dense way over the non-zero inputs only (``dcol``'s)."""
    sparse = max(work.macs * rates.ns_per_mac, work.bytes * rates.ns_per_byte)
    per_dense = max(rates.ns_per_dense_mac, VALUE_BYTES * rates.ns_per_byte)
    dense = work.dense_weights * per_dense
    active = work.active_dense_weights * per_dense
    return min(sparse, dense, active) / 1e3
