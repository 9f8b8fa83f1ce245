"""Weight compression after pruning: 4-bit shared weights (k-means) and float16.

- ``kmeans4``: Deep Compression's weight sharing (Han et al.), the form EIE
  runs: per layer, the non-zero kernel weights are clustered into 2^bits
  centroids (linear initialisation between min and max, which Han et al. found
  keeps the rare large weights that matter most); every non-zero weight becomes
  its centroid and zeros stay zero, so the sparsity pattern and the sparse
  engines' indices are unchanged. Biases stay float32. The k-means itself is
  ``predictor.quantize.kmeans_codebook``, shared with the EIE engine.
- ``finetune_centroids``: Deep Compression's trained quantisation — the gradient
  of every weight is summed per centroid and the centroids (and biases) are
  trained with the codes fixed, so the weights stay quantised throughout.
- ``fp16``: weights and biases rounded to float16 and back, to measure how
  robust a model is to EIE's 16-bit arithmetic (seed 000's open question).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mittd.predictor.graph import Graph, Params
from mittd.predictor.quantize import kmeans_codebook

Codebooks = dict[str, tuple[np.ndarray, np.ndarray]]  # layer -> (centroids (2^bits,), codes)

__all__ = ["Codebooks", "decode", "finetune_centroids", "fp16", "kmeans4"]


def _nonzero_centroids(c: np.ndarray) -> np.ndarray:
    """Centroids in float32 with none exactly 0, so a non-zero weight never
    becomes a zero the sparse layout does not know about."""
    c32 = c.astype(np.float32)
    tiny = np.float32(np.finfo(np.float32).tiny)
    return np.where(c32 == 0, tiny, c32).astype(np.float32)


def decode(kernel_shape: tuple[int, int], nonzero: np.ndarray, centroids: np.ndarray,
           codes: np.ndarray) -> np.ndarray:
    """The kernel a codebook stands for: ``centroids[codes]`` at the non-zero
    positions (C order), zeros elsewhere."""
    k = np.zeros(kernel_shape, np.float32)
    k[nonzero] = np.asarray(centroids, np.float32)[np.asarray(codes, np.int64)]
    return k


def kmeans4(params: Mapping[str, tuple[np.ndarray, np.ndarray]], *, bits: int = 4,
            seed: int = 0, iters: int = 100) -> tuple[Params, Codebooks]:
    """Share each layer's non-zero kernel weights among 2^bits centroids.

    Returns the quantised params (at most 2^bits distinct non-zero values per
    layer, zeros where they were) and per layer (centroids float32 (2^bits,),
    codes uint8, one per non-zero weight in C order). Deterministic: the linear
    initialisation needs no randomness (``seed`` is accepted for a uniform API)."""
    del seed
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8 (codes are uint8), not {bits}")
    k = 2 ** bits
    out: Params = {}
    books: Codebooks = {}
    for name, (kernel, bias) in params.items():
        kernel = np.asarray(kernel, np.float32)
        nz = kernel != 0
        w = kernel[nz].astype(np.float64)
        if w.size == 0:
            centroids, codes = np.zeros(k, np.float32), np.zeros(0, np.uint8)
        else:
            c, idx = kmeans_codebook(w, k, iters)  # the one k-means (predictor.quantize)
            centroids, codes = _nonzero_centroids(c), idx.astype(np.uint8)
        out[name] = (decode(kernel.shape, nz, centroids, codes),
                     np.asarray(bias, np.float32).copy())
        books[name] = (centroids, codes)
    return out, books


def finetune_centroids(model: Any, graph: Graph,
                       params: Mapping[str, tuple[np.ndarray, np.ndarray]],
                       codebooks: Mapping[str, tuple[np.ndarray, np.ndarray]],
                       x: np.ndarray, y: np.ndarray, *, epochs: int = 2,
                       batch_size: int = 256, loss: Any = None,
                       class_weight: Mapping[int, float] | Sequence[float] | None = None,
                       learning_rate: float = 1e-4, seed: int = 0,
                       verbose: int = 0) -> tuple[Params, Codebooks]:
    """Deep Compression's trained quantisation: the codes stay fixed, the centroids
    learn. Each step sets every kernel to ``centroids[codes]``, takes the loss's
    gradient with respect to the kernels, sums it per centroid
    (``unsorted_segment_sum`` over the weights sharing it) and lets Adam update
    the centroids and the biases. ``model`` supplies the architecture (a model
    from ``to_keras``; it is copied, not changed); ``params`` and ``codebooks``
    come from ``kmeans4``."""
    import tensorflow as tf  # TensorFlow only when fine-tuning
    import tf_keras as keras

    from mittd.training import prune as pr
    from mittd.training.keras_graph import to_keras

    del model  # the architecture is the graph's; a fresh copy takes the quantised weights
    keras.utils.set_random_seed(seed)
    net = to_keras(graph, params)
    layers = {n.name: net.get_layer(n.name) for n in graph.dense_nodes()}
    pos: dict[str, tf.Tensor] = {}
    codes: dict[str, tf.Tensor] = {}
    cents: dict[str, tf.Variable] = {}
    for name, layer in layers.items():
        kernel = np.asarray(params[name][0])
        c, cd = codebooks[name]
        nz = np.argwhere(kernel != 0)
        if len(nz) != len(cd):
            raise ValueError(f"{graph.name}/{name}: {len(cd)} codes for {len(nz)} non-zero "
                             "weights; params and codebooks must come from the same kmeans4")
        pos[name] = tf.constant(nz, tf.int64)
        codes[name] = tf.constant(np.asarray(cd, np.int32))
        cents[name] = tf.Variable(np.asarray(c, np.float32), name=f"{name}_centroids")
        layer.kernel.assign(decode(kernel.shape, kernel != 0, c, cd))
    names = list(layers)
    n_cent = {name: int(cents[name].shape[0]) for name in names}
    loss_fn = loss if loss is not None else pr.default_loss(graph)
    opt = keras.optimizers.Adam(learning_rate)
    train_vars = [cents[n] for n in names] + [layers[n].bias for n in names]

    def set_kernels() -> None:
        for n in names:
            k = layers[n].kernel
            values = tf.gather(cents[n], codes[n])
            k.assign(tf.scatter_nd(pos[n], values, tf.shape(k, out_type=tf.int64)))

    @tf.function
    def step(xb: tf.Tensor, yb: tf.Tensor, wb: tf.Tensor) -> tf.Tensor:
        set_kernels()
        kernels = [layers[n].kernel for n in names]
        biases = [layers[n].bias for n in names]
        with tf.GradientTape() as tape:
            value = loss_fn(yb, net(xb, training=True), sample_weight=wb)
        gk, gb = tape.gradient(value, [kernels, biases])
        gc = [tf.math.unsorted_segment_sum(tf.gather_nd(g, pos[n]), codes[n], n_cent[n])
              for n, g in zip(names, gk, strict=True)]
        opt.apply_gradients(zip(gc + list(gb), train_vars, strict=True))
        return value

    sw = pr.sample_weight(y, class_weight)
    sw = np.ones(len(x), np.float32) if sw is None else sw
    rng = np.random.default_rng(seed)
    n_batches = math.ceil(len(x) / batch_size)
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for b in range(n_batches):
            i = order[b * batch_size:(b + 1) * batch_size]
            total += float(step(tf.constant(x[i], tf.float32), tf.constant(y[i]),
                                tf.constant(sw[i])))
        if verbose:
            print(f"centroid fine-tuning epoch {epoch + 1}/{epochs}: "
                  f"loss {total / max(n_batches, 1):.4f}")
    out: Params = {}
    books: Codebooks = {}
    for name in names:
        kernel = np.asarray(params[name][0])
        c = _nonzero_centroids(cents[name].numpy())
        cd = np.asarray(codebooks[name][1], np.uint8)
        out[name] = (decode(kernel.shape, kernel != 0, c, cd),
                     layers[name].bias.numpy().astype(np.float32))
        books[name] = (c, cd.copy())
    return out, books


def fp16(params: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Params:
    """Kernels and biases rounded to the nearest float16 (and stored as float32,
    the layout every engine reads). Values beyond float16's range are an error,
    not a silent infinity."""
    out: Params = {}
    for name, (k, b) in params.items():
        pair = []
        for a in (k, b):
            a = np.asarray(a, np.float32)
            with np.errstate(over="ignore"):
                h = a.astype(np.float16)
            if not np.isfinite(h).all() and np.isfinite(a).all():
                raise ValueError(f"{name}: weights beyond float16's range (±65504)")
            pair.append(h.astype(np.float32))
        out[name] = (pair[0], pair[1])
    return out
