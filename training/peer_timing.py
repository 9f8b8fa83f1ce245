"""How a peer runtime (TensorFlow, TF Lite, ONNX Runtime) is timed and checked
beside mittd's engines, in one home: each peer is a numpy row in, a numpy logit row
out, conversions included, its outputs checked against ``predictor.graph.forward``
before any timing. Imports no peer, so each peer's module pulls in only its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

__all__ = ["TOLERANCE", "Call", "OutputMismatch", "check", "latency_us", "throughput"]

TOLERANCE = 1e-4  # relative, on a max(1, |reference|) scale
Call = Callable[[np.ndarray], np.ndarray]


class OutputMismatch(RuntimeError):
    """A peer computes something other than ``predictor.graph.forward``."""


def check(name: str, call: Call, xs: np.ndarray, ref: np.ndarray) -> float:
    """Largest relative error of ``call`` over rows batched as ``xs``; raises past
    TOLERANCE."""
    got = np.concatenate([call(x) for x in xs]).astype(np.float64)
    err = float(np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref))))
    if not err <= TOLERANCE:
        raise OutputMismatch(f"{name}: outputs differ from predictor.graph.forward by {err:.3g} "
                             f"(relative), more than {TOLERANCE:g}")
    return err


def latency_us(call: Call, rows: np.ndarray, calls: int, warmup: int) -> np.ndarray:
    """Each call timed on its own (perf_counter_ns), inputs cycling through ``rows``."""
    n = len(rows)
    for i in range(warmup):
        call(rows[i % n])
    out = np.empty(calls, np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        x = rows[i % n]
        t0 = clock()
        call(x)
        out[i] = clock() - t0
    return out / 1000.0


def throughput(call: Call, batches: np.ndarray, repeats: int, min_s: float) -> float:
    """Decisions/s at the batch size of ``batches``: median over ``repeats`` runs of
    at least ``min_s`` seconds each."""
    call(batches[0])
    n, b = len(batches), batches.shape[1]
    rates = []
    for _ in range(repeats):
        k = 0
        t0 = time.perf_counter()
        while True:
            call(batches[k % n])
            k += 1
            dt = time.perf_counter() - t0
            if k >= 3 and dt >= min_s:
                break
        rates.append(k * b / dt)
    return float(np.median(rates))
