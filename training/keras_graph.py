"""A ``predictor.graph.Graph`` as a tf-keras functional model, and back.

Training builds its Keras models from the same graph description the engines
run, so the exported weights fit by construction: every dense node becomes a
``Dense`` layer of the same name (linear, kernel in Keras' (in, out) layout,
which is also the graph's), every other node a layer of its name. The model
outputs logits; the softmax/sigmoid head lives in the loss, as in the engines.

The slice ops are small named layers with ``get_config`` (not ``Lambda``), so
models save, clone (``strip_pruning`` clones) and convert to TF Lite. They are
``PrunableLayer``s with nothing to prune, so ``prune_low_magnitude`` may wrap a
whole model (it refuses layers it does not know).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from mittd.predictor.graph import Graph, GraphError, Params, check_params

_PRUNE_WRAPPER = "PruneLowMagnitude"


@keras.utils.register_keras_serializable(package="mittd")
class GraphSlice(keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """``x[:, start:start+width]`` (graph op ``slice``)."""

    def __init__(self, start: int, width: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.start = int(start)
        self.width = int(width)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.slice(x, [0, self.start], [-1, self.width])

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape([input_shape[0], self.width])

    def get_prunable_weights(self) -> list[tf.Variable]:
        return []

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "start": self.start, "width": self.width}


@keras.utils.register_keras_serializable(package="mittd")
class SumSlices(keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """Sum of ``count`` consecutive ``width``-wide slices from ``start`` (graph op
    ``sum_slices``): one reshape and one reduction, both TF Lite builtins."""

    def __init__(self, start: int, width: int, count: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.start = int(start)
        self.width = int(width)
        self.count = int(count)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        s = tf.slice(x, [0, self.start], [-1, self.width * self.count])
        return tf.reduce_sum(tf.reshape(s, [-1, self.count, self.width]), axis=1)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape([input_shape[0], self.width])

    def get_prunable_weights(self) -> list[tf.Variable]:
        return []

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "start": self.start, "width": self.width,
                "count": self.count}


CUSTOM_OBJECTS: dict[str, type] = {"GraphSlice": GraphSlice, "SumSlices": SumSlices}


def to_keras(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
             ) -> keras.Model:
    """A functional model computing ``predictor.graph.forward`` (logits), float32.

    Layers carry the graph's node names; with ``params`` the dense kernels and
    biases are set from them (checked against the graph first)."""
    if params is not None:
        check_params(graph, params)
    inp = keras.Input(shape=(graph.input_dim,), dtype="float32", name=graph.nodes[0].name)
    t: dict[str, Any] = {graph.nodes[0].name: inp}
    dense: dict[str, keras.layers.Dense] = {}
    for n in graph.nodes[1:]:
        a = [t[i] for i in n.inputs]
        if n.op == "slice":
            t[n.name] = GraphSlice(n.attrs["start"], n.attrs["width"], name=n.name)(a[0])
        elif n.op == "sum_slices":
            t[n.name] = SumSlices(n.attrs["start"], n.attrs["width"], n.attrs["count"],
                                  name=n.name)(a[0])
        elif n.op == "dense":
            layer = keras.layers.Dense(int(n.attrs["units"]), name=n.name)
            t[n.name] = layer(a[0])
            dense[n.name] = layer
        elif n.op == "add":
            t[n.name] = keras.layers.Add(name=n.name)(a)
        elif n.op == "subtract":
            t[n.name] = keras.layers.Subtract(name=n.name)(a)
        elif n.op == "relu":
            t[n.name] = keras.layers.ReLU(name=n.name)(a[0])
        elif n.op == "concat":
            t[n.name] = keras.layers.Concatenate(axis=-1, name=n.name)(a)
        else:  # pragma: no cover - Graph.validate rejects unknown ops
            raise GraphError(f"{graph.name}/{n.name}: op {n.op!r} has no Keras layer")
    model = keras.Model(inp, t[graph.output], name=graph.name)
    if params is not None:
        for name, layer in dense.items():
            k, b = params[name]
            layer.set_weights([np.asarray(k, np.float32), np.asarray(b, np.float32)])
    return model


def _has_pruning_wrappers(model: keras.Model) -> bool:
    return any(type(layer).__name__ == _PRUNE_WRAPPER for layer in model.layers)


def params_from_keras(model: keras.Model, graph: Graph) -> Params:
    """The dense layers' weights as ``Params`` (float32, (in, out) kernels).

    A model still wrapped for pruning is stripped first: the wrapper keeps its
    mask apart from the kernel until ``strip_pruning`` folds them together."""
    if _has_pruning_wrappers(model):
        model = tfmot.sparsity.keras.strip_pruning(model)
    params: Params = {}
    for n in graph.dense_nodes():
        try:
            layer = model.get_layer(n.name)
        except ValueError:
            raise GraphError(f"{graph.name}/{n.name}: the Keras model has no layer of that "
                             "name") from None
        weights = layer.get_weights()
        if len(weights) != 2:
            raise GraphError(f"{graph.name}/{n.name}: expected kernel and bias, the layer "
                             f"has {len(weights)} weights")
        params[n.name] = (np.asarray(weights[0], np.float32),
                          np.asarray(weights[1], np.float32))
    check_params(graph, params)
    return params
