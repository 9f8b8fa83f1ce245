"""The same network through ONNX Runtime, for ``mittd bench predictor``'s
side-by-side comparison (beside TF Lite).

The ONNX graph is built from mittd's own graph (``predictor.graph``), op for op
(``Gemm`` per dense layer, ``Relu``, ``Add``, ``Sub``, ``Slice``, ``Concat``,
``Sum``), on the weights given — the compacted network where mittd compacts, so
the peer runs the shapes mittd runs. Weights are dense initialisers: ONNX Runtime's
CPU provider has no sparse ``Gemm``, so a pruned model runs dense, as TF Lite's does.

Timed the way a daemon would call it, with IO binding: the input and output are
bound once to numpy buffers, and a call is ``buffer[:] = x``,
``run_with_iobinding``, read the output — no per-call allocation. One intra- and
one inter-op thread, sequential execution, every graph optimisation on.

Importing this module needs ``onnx`` and ``onnxruntime`` (the ``train`` extra);
callers catch the ImportError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mittd.predictor.graph import Graph, forward
from mittd.training.peer_timing import Call, check, latency_us, throughput

__all__ = ["onnx_latency", "to_onnx"]

Params = Mapping[str, tuple[np.ndarray, np.ndarray]]
OPSET = 17


def to_onnx(graph: Graph, params: Params) -> onnx.ModelProto:
    """``graph`` with ``params`` as an ONNX model: input ``input`` (N, d), output
    ``logits`` (N, output_dim), both float32, batch dimension free."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def t(name: str) -> str:  # tensor names apart from the graph's own input/output names
        return "input" if graph.node(name).op == "input" else f"{name}:0"

    for n in graph.nodes:
        if n.op == "input":
            continue
        ins = [t(i) for i in n.inputs]
        out = t(n.name)
        if n.op == "dense":
            k, b = (np.asarray(a, np.float32) for a in params[n.name])
            nodes.append(helper.make_node("Gemm", [ins[0], const(f"{n.name}/kernel", k),
                                                   const(f"{n.name}/bias", b)], [out]))
        elif n.op == "relu":
            nodes.append(helper.make_node("Relu", ins, [out]))
        elif n.op in ("add", "subtract"):
            nodes.append(helper.make_node("Add" if n.op == "add" else "Sub", ins, [out]))
        elif n.op == "concat":
            nodes.append(helper.make_node("Concat", ins, [out], axis=1))
        elif n.op == "slice":
            s, w = n.attrs["start"], n.attrs["width"]
            nodes.append(_slice(ins[0], s, w, out, const))
        elif n.op == "sum_slices":
            s, w, c = n.attrs["start"], n.attrs["width"], n.attrs["count"]
            parts = [f"{out}/{q}" for q in range(c)]
            for q, part in enumerate(parts):
                nodes.append(_slice(ins[0], s + q * w, w, part, const))
            nodes.append(helper.make_node("Sum", parts, [out]))
        else:  # the graph validated its ops: a new one must be added here
            raise ValueError(f"{graph.name}/{n.name}: no ONNX form for op {n.op!r}")
    nodes.append(helper.make_node("Identity", [t(graph.output)], ["logits"]))
    g = helper.make_graph(
        nodes, graph.name, [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                          ["n", graph.input_dim])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["n", graph.output_dim])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


def _slice(src: str, start: int, width: int, name: str, const: Any) -> onnx.NodeProto:
    return helper.make_node("Slice", [src, const(f"{name}/starts", np.array([start])),
                                      const(f"{name}/ends", np.array([start + width])),
                                      const(f"{name}/axes", np.array([1]))], [name])


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def _bound_call(sess: ort.InferenceSession, batch: int, d: int, n_out: int) -> Call:
    """A call at a fixed batch with its input and output bound to numpy buffers."""
    x = np.zeros((batch, d), np.float32)
    y = np.zeros((batch, n_out), np.float32)
    io = sess.io_binding()
    io.bind_ortvalue_input("input", ort.OrtValue.ortvalue_from_numpy(x))
    io.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(y))

    def call(v: np.ndarray) -> np.ndarray:
        x[:] = v
        sess.run_with_iobinding(io)
        return y

    return call


def onnx_latency(graph: Graph, params: Params, inputs: np.ndarray, batch: int = 256,
                 repeats: int = 5, calls: int = 2000, warmup: int = 200,
                 min_s: float = 0.2) -> dict[str, Any]:
    """Batch-1 latency (p50, p99 µs) and batch-``batch`` decisions/s through ONNX
    Runtime, outputs checked against ``predictor.graph.forward`` first (as
    ``tf_bench.tf_latency``; the same keys, under ``onnxruntime``)."""
    xs = np.ascontiguousarray(np.atleast_2d(np.asarray(inputs, np.float32)))
    if xs.shape[1] != graph.input_dim:
        raise ValueError(f"{graph.name}: inputs have {xs.shape[1]} features, graph needs "
                         f"{graph.input_dim}")
    d, n_out = graph.input_dim, graph.output_dim
    sess = _session(to_onnx(graph, params))
    one = _bound_call(sess, 1, d, n_out)
    many = _bound_call(sess, batch, d, n_out)
    rows = xs[:, None, :]
    nb = max(1, min(8, -(-len(xs) // batch)))
    batches = np.resize(xs, (nb * batch, d)).reshape(nb, batch, d)
    k = min(len(xs), 32)
    err = max(check("onnxruntime", lambda v: one(v).copy(), rows[:k],
                    forward(graph, params, xs[:k])),
              check(f"onnxruntime (batch {batch})", lambda v: many(v).copy(), batches[:1],
                    forward(graph, params, batches[0])))
    samples = latency_us(one, rows, calls, warmup)
    return {"ort_version": ort.__version__, "batch": batch, "calls": calls,
            "threads": {"intra_op": 1, "inter_op": 1},
            "onnxruntime": {"p50_us": float(np.percentile(samples, 50)),
                            "p99_us": float(np.percentile(samples, 99)),
                            "decisions_per_s": throughput(many, batches, repeats, min_s),
                            "max_rel_err": err}}
