"""The same network timed through TensorFlow, for ``mittd bench predictor``'s
side-by-side comparison with mittd's own engines.

Three paths, each timed the way a daemon would call it — a numpy feature row
in, a numpy logit row out, conversions included:

- ``tf_eager``: ``model(x, training=False)`` on a (1, d) input;
- ``tf_function``: the model under ``tf.function`` with a fixed input signature
  ((1, d) for latency, (batch, d) for throughput), traced once before timing;
- ``tflite``: ``TFLiteConverter.from_keras_model``, float32, default ops and no
  optimisations, so the pruned model runs **dense** (TF Lite only stores sparse
  tensors when asked with ``Optimize.EXPERIMENTAL_SPARSITY``; this is checked on
  the converted tensors). The interpreter applies its default XNNPACK delegate.
  One interpreter at batch 1 (``set_tensor``/``invoke``/``get_tensor``), a second
  resized to ``batch`` for throughput; each ``allocate_tensors`` once.

Threads, measured on the 2-core development machine (``DEFAULT_THREADS``): TF's
intra- and inter-op pools at 1 thread gave the same batch-256 throughput as 2 or
the defaults (TF's matmuls did not scale past one core here at these sizes,
within ±2 %) and a batch-1 ``tf_function`` p50 equal or 5–20 % lower. TF only takes thread
settings before its runtime starts, so a process that already ran TF ops keeps
its own (the result reports the settings in force). TF Lite takes a thread count
per interpreter: 1 at batch 1 (2 threads: p50 up to 30 % higher, p99 10×), 2 at
batch 256 (1.8× the decisions/s of 1 thread).

Importing this module needs TensorFlow (the ``train`` extra); callers catch the
ImportError.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from mittd.predictor.graph import Graph, forward
from mittd.training.keras_graph import to_keras
from mittd.training.peer_timing import TOLERANCE, Call, OutputMismatch
from mittd.training.peer_timing import check as _check
from mittd.training.peer_timing import latency_us as _latency_us
from mittd.training.peer_timing import throughput as _throughput

__all__ = ["PATHS", "TOLERANCE", "OutputMismatch", "tf_latency"]

PATHS = ("tf_eager", "tf_function", "tflite")
# (TF intra-op, TF inter-op, TF Lite at batch 1, TF Lite at batch ``batch``); 0 = TF default
DEFAULT_THREADS = (1, 1, 1, 2)

Params = Mapping[str, tuple[np.ndarray, np.ndarray]]


def _set_tf_threads(intra: int, inter: int) -> tuple[int, int]:
    """Set TF's pools if its runtime has not started; return the settings in force."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TF already ran something in this process
        pass
    return (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads())


def _tflite_model(model: Any) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)  # float32, default builtin ops
    return conv.convert()


def _interpreter(flat: bytes, threads: int, batch: int, d: int) -> Call:
    """A TF Lite call at a fixed batch, allocated once; refuses sparse tensors."""
    with warnings.catch_warnings():  # tf.lite.Interpreter's LiteRT deprecation notice
        warnings.simplefilter("ignore")
        interp = tf.lite.Interpreter(model_content=flat, num_threads=threads)
    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]
    if batch != 1:
        interp.resize_tensor_input(inp, [batch, d], strict=False)
    interp.allocate_tensors()
    sparse = [t["name"] for t in interp.get_tensor_details() if t.get("sparsity_parameters")]
    if sparse:
        raise OutputMismatch(f"TF Lite stored tensors sparse, expected dense: {sparse}")

    def call(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp, x)
        interp.invoke()
        return interp.get_tensor(out)

    return call


def tf_latency(graph: Graph, params: Params, inputs: np.ndarray, batch: int = 256,
               repeats: int = 5, calls: int = 2000, warmup: int = 200,
               min_s: float = 0.2, threads: tuple[int, int, int, int] = DEFAULT_THREADS,
               ) -> dict[str, Any]:
    """Batch-1 latency (µs samples, p50, p99) and batch-``batch`` decisions/s of
    ``graph`` with ``params`` through eager Keras, ``tf.function`` and TF Lite.

    ``inputs`` is (n, input_dim); every path's logits are checked against
    ``predictor.graph.forward`` on the first rows before timing (``OutputMismatch``
    past ``TOLERANCE``). ``threads`` = (TF intra-op, TF inter-op, TF Lite at batch
    1, TF Lite at ``batch``), 0 meaning TF's default.

    Returns ``tf_version``, ``tflite_version``, ``threads`` (in force), ``batch``,
    ``calls`` and, per path in ``PATHS``, a dict: ``samples_us`` (float array, one
    per timed call), ``p50_us``, ``p99_us``, ``decisions_per_s``, ``max_rel_err``."""
    xs = np.ascontiguousarray(np.atleast_2d(np.asarray(inputs, np.float32)))
    if xs.shape[1] != graph.input_dim:
        raise ValueError(f"{graph.name}: inputs have {xs.shape[1]} features, graph needs "
                         f"{graph.input_dim}")
    d = graph.input_dim
    intra, inter = _set_tf_threads(threads[0], threads[1])
    model = to_keras(graph, params)
    rows = xs[:, None, :]  # (n, 1, d): batch-1 views, no copy at call time
    nb = max(1, min(8, -(-len(xs) // batch)))
    batches = np.resize(xs, (nb * batch, d)).reshape(nb, batch, d)

    fn1 = tf.function(lambda x: model(x, training=False),
                      input_signature=[tf.TensorSpec([1, d], tf.float32)])
    fnb = tf.function(lambda x: model(x, training=False),
                      input_signature=[tf.TensorSpec([batch, d], tf.float32)])
    flat = _tflite_model(model)
    one: dict[str, Call] = {
        "tf_eager": lambda x: model(x, training=False).numpy(),
        "tf_function": lambda x: fn1(x).numpy(),
        "tflite": _interpreter(flat, threads[2], 1, d),
    }
    many: dict[str, Call] = {
        "tf_eager": one["tf_eager"],
        "tf_function": lambda x: fnb(x).numpy(),
        "tflite": _interpreter(flat, threads[3], batch, d),
    }

    k = min(len(xs), 32)
    ref1 = forward(graph, params, xs[:k])
    refb = forward(graph, params, batches[0])
    out: dict[str, Any] = {
        "tf_version": tf.version.VERSION,
        "tflite_version": f"{tf.version.VERSION} (tf.lite bundled with TensorFlow)",
        "threads": {"tf_intra_op": intra, "tf_inter_op": inter,
                    "tflite_batch1": threads[2], "tflite_batch": threads[3]},
        "batch": batch,
        "calls": calls,
    }
    for name in PATHS:
        err = max(_check(name, one[name], rows[:k], ref1),
                  _check(f"{name} (batch {batch})", many[name], batches[:1], refb))
        samples = _latency_us(one[name], rows, calls, warmup)
        out[name] = {
            "samples_us": samples,
            "p50_us": float(np.percentile(samples, 50)),
            "p99_us": float(np.percentile(samples, 99)),
            "decisions_per_s": _throughput(many[name], batches, repeats, min_s),
            "max_rel_err": err,
        }
    return out
