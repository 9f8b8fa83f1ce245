"""What a graph's head implies for training: the loss, and per-row weights that
balance the rare slow class (shared by training, pruning and compression)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from collections.abc import Mapping, Sequence

import numpy as np
import tf_keras as keras

from mittd.predictor.graph import Graph

ClassWeight = Mapping[int, float] | Sequence[float] | None


def loss_for(graph: Graph) -> keras.losses.Loss:
    """Logits out of the model, the head in the loss."""
    if graph.head == "softmax":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.losses.BinaryCrossentropy(from_logits=True)


def sample_weights(y: np.ndarray, class_weight: ClassWeight) -> np.ndarray | None:
    """Per-row weights from a class weighting, so multi-threshold (2-D) labels work
    too (Keras' ``class_weight`` only handles one label per row). A dict weights
    each class; a list gives per-threshold positive weights."""
    if not class_weight:
        return None
    y = np.asarray(y)
    if y.ndim == 1 or isinstance(class_weight, Mapping):
        if not isinstance(class_weight, Mapping):
            raise ValueError("one label per row needs class_weight as {class: weight}")
        w = np.ones(len(y), np.float32)
        yy = y.reshape(len(y))
        for cls, weight in class_weight.items():
            w[yy == int(cls)] = float(weight)
        return w
    pos = np.asarray(class_weight, np.float32).reshape(1, -1)
    return (1.0 + (y * (pos - 1.0)).mean(axis=1)).astype(np.float32)
