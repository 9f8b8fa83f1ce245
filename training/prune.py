"""Pruning a trained model the four ways mittd serves: magnitude, SIMD-aware, node, Scalpel.

- ``prune_magnitude``: TF-MOT's ``prune_low_magnitude`` on every Dense layer
  (logits included, as seed 000 pruned the whole network) with a
  ``PolynomialDecay`` schedule, ``UpdatePruningStep`` and ``strip_pruning`` —
  unstructured sparsity, the sparse (CSR/CSC/EIE) engines' input.
- ``prune_simd``: Scalpel's SIMD-aware weight pruning (seed 003 §3.3): whole
  aligned groups of ``group`` weights along the input dimension of one output
  (the block-sparse kernel's layout) removed, lowest RMS first, over several
  prune/retrain rounds.
- ``prune_node``: Scalpel's node pruning (§3.4): a mask layer (β per node, L1
  penalty) learns which hidden nodes matter; the rest are zeroed in the layers
  that produce them and the layers that read them, and the network is retrained.
  The engines then compact the zeroed nodes away (``predictor.plan.compact_nodes``).
- ``prune_scalpel``: node pruning, then SIMD-aware pruning of what remains (§3.5).

Every function takes a (compiled or not) Keras model from ``to_keras``, the
graph and numpy training data, copies the model (the caller's is left as it
was), fine-tunes, and returns float32 ``Params`` in the graph's layout.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from mittd.predictor.graph import Graph, Params
from mittd.predictor.graph import sparsity as _graph_sparsity
from mittd.predictor.synthetic import _spaces as hidden_spaces
from mittd.training.keras_graph import params_from_keras, to_keras
from mittd.training.objective import ClassWeight, loss_for, sample_weights

__all__ = [
    "NodeMask",
    "default_loss",
    "layer_sparsity",
    "prune_magnitude",
    "prune_magnitude_model",
    "prune_node",
    "prune_scalpel",
    "prune_simd",
    "sample_weight",
    "simd_keep_mask",
]


Masks = dict[str, tuple[np.ndarray, np.ndarray]]  # layer -> (kernel keep, bias keep), bool


def layer_sparsity(params: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Fraction of zero kernel weights per dense layer (what the targets are held to)."""
    return _graph_sparsity(params)


# -- shared plumbing ------------------------------------------------------------------

default_loss = loss_for  # the names the pruning API has always exported
sample_weight = sample_weights


def _copy(model: keras.Model, graph: Graph) -> keras.Model:
    """A fresh model with the caller's weights: pruning never mutates the input."""
    return to_keras(graph, params_from_keras(model, graph))


def _dense(model: keras.Model, graph: Graph) -> dict[str, keras.layers.Dense]:
    return {n.name: model.get_layer(n.name) for n in graph.dense_nodes()}


def _steps(n: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(n / batch_size)


def _fit(model: keras.Model, graph: Graph, x: np.ndarray, y: np.ndarray, *, epochs: int,
         batch_size: int, loss: keras.losses.Loss | None, class_weight: ClassWeight,
         learning_rate: float, verbose: int,
         callbacks: Sequence[keras.callbacks.Callback] = ()) -> None:
    """Compile with a fresh Adam and fit (shuffled; the seed is set by the caller)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=loss if loss is not None else default_loss(graph))
    if epochs <= 0:
        return
    model.fit(x, y, sample_weight=sample_weight(y, class_weight), epochs=epochs,
              batch_size=batch_size, shuffle=True, verbose=verbose,
              callbacks=list(callbacks))


def _check_sparsity(s: float, what: str = "sparsity") -> float:
    if not 0.0 <= s < 1.0:
        raise ValueError(f"{what} must be in [0, 1), not {s}")
    return float(s)


class _HoldMasks(keras.callbacks.Callback):
    """Zeros held at zero while the rest trains: after every batch (and at the
    start and end) each masked variable is reset to ``where(keep, w, 0)``.

    Subclasses may replace ``self.masks`` between batches (iterative pruning)."""

    def __init__(self, layers: Mapping[str, keras.layers.Dense], masks: Masks) -> None:
        super().__init__()
        self.layers = dict(layers)
        self.masks: Masks = {}
        # one traced function re-zeroes everything: per-variable eager ops cost more
        # than a small model's whole training step
        self._held: list[tuple[tf.Variable, tf.Variable]] = []
        self._mask_vars: dict[str, tuple[tf.Variable, tf.Variable]] = {}
        for name, (kmask, bmask) in masks.items():
            layer = self.layers[name]
            kv = tf.Variable(np.ones(kmask.shape, np.float32), trainable=False)
            bv = tf.Variable(np.ones(bmask.shape, np.float32), trainable=False)
            self._mask_vars[name] = (kv, bv)
            self._held += [(layer.kernel, kv), (layer.bias, bv)]
            self.set_mask(name, kmask, bmask)
        self._apply = tf.function(self._zero)

    def set_mask(self, name: str, kmask: np.ndarray, bmask: np.ndarray) -> None:
        self.masks[name] = (np.asarray(kmask, bool), np.asarray(bmask, bool))
        kv, bv = self._mask_vars[name]
        kv.assign(self.masks[name][0].astype(np.float32))
        bv.assign(self.masks[name][1].astype(np.float32))

    def _zero(self) -> None:
        for var, m in self._held:
            var.assign(tf.where(m > 0, var, tf.zeros_like(var)))

    def apply(self) -> None:
        self._apply()

    def on_train_begin(self, logs: Any = None) -> None:
        self.apply()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.apply()

    def on_train_end(self, logs: Any = None) -> None:
        self.apply()


def _apply_masks(params: Params, masks: Masks) -> Params:
    out: Params = {}
    for name, (k, b) in params.items():
        km, bm = masks.get(name, (np.ones(k.shape, bool), np.ones(b.shape, bool)))
        out[name] = (np.where(km, k, 0).astype(np.float32), np.where(bm, b, 0).astype(np.float32))
    return out


def _all_kept(params: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Masks:
    return {n: (np.ones(k.shape, bool), np.ones(b.shape, bool)) for n, (k, b) in params.items()}


# -- magnitude (TF-MOT) ------------------------------------------------------------------

def prune_magnitude_model(model: keras.Model, graph: Graph, x: np.ndarray, y: np.ndarray, *,
                          sparsity: float, epochs: int = 3, batch_size: int = 256,
                          loss: keras.losses.Loss | None = None,
                          class_weight: ClassWeight = None, learning_rate: float = 1e-3,
                          end_fraction: float = 0.7, seed: int = 0,
                          verbose: int = 0) -> keras.Model:
    """``prune_magnitude``'s stripped Keras model (for timing it through TF or TF Lite).

    The polynomial schedule reaches ``sparsity`` at ``end_fraction`` of the
    fine-tuning steps; the rest recovers with the mask fixed. TF-MOT only moves
    the mask every ``frequency`` steps and never past ``end_step``, so ``end_step``
    is made a multiple of the frequency or the final target would be skipped."""
    sparsity = _check_sparsity(sparsity)
    keras.utils.set_random_seed(seed)
    total = _steps(len(x), batch_size, epochs)
    if total < 2:
        raise ValueError(f"magnitude pruning needs at least 2 training steps, got {total} "
                         f"({len(x)} rows, batch {batch_size}, {epochs} epochs)")
    end = min(max(1, int(end_fraction * total)), total)
    frequency = max(1, min(100, end // 10))
    end = max(frequency, end // frequency * frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end,
        frequency=frequency)

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.Dense):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    base = _copy(model, graph)
    wrapped = keras.models.clone_model(base, clone_function=wrap)
    _fit(wrapped, graph, x, y, epochs=epochs, batch_size=batch_size, loss=loss,
         class_weight=class_weight, learning_rate=learning_rate, verbose=verbose,
         callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return tfmot.sparsity.keras.strip_pruning(wrapped)


def prune_magnitude(model: keras.Model, graph: Graph, x: np.ndarray, y: np.ndarray, *,
                    sparsity: float, epochs: int = 3, batch_size: int = 256,
                    loss: keras.losses.Loss | None = None, class_weight: ClassWeight = None,
                    learning_rate: float = 1e-3, end_fraction: float = 0.7, seed: int = 0,
                    verbose: int = 0) -> Params:
    """Unstructured magnitude pruning to ``sparsity`` in every dense layer, fine-tuned
    (seed 000's method: TF-MOT's Keras pruning API, as it is meant to be used)."""
    stripped = prune_magnitude_model(
        model, graph, x, y, sparsity=sparsity, epochs=epochs, batch_size=batch_size,
        loss=loss, class_weight=class_weight, learning_rate=learning_rate,
        end_fraction=end_fraction, seed=seed, verbose=verbose)
    return params_from_keras(stripped, graph)


# -- SIMD-aware (Scalpel §3.3) --------------------------------------------------------------

def simd_keep_mask(kernel: np.ndarray, sparsity: float, group: int = 8, *,
                   fixed: np.ndarray | None = None, pruned: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Which weights of a (in, out) kernel survive SIMD-aware pruning to ``sparsity``.

    Groups are ``group`` consecutive inputs of one output (consecutive rows of a
    Keras kernel column; the last group of a column may be shorter), ranked by
    the RMS of their weights. ``fixed`` marks weights that must stay zero anyway
    (node pruning's) — they count towards the target and never come back;
    ``pruned`` (groups already removed, (out, n_groups)) makes rounds monotonic.
    The number of groups removed brings the layer's zero count closest to
    ``round(sparsity · size)``; at least one group with a live weight is kept so
    no layer is cut off. Returns (kernel keep mask (in, out), removed groups)."""
    k = np.asarray(kernel, np.float64)
    n_in, n_out = k.shape
    fix = np.ones(k.shape, bool) if fixed is None else np.asarray(fixed, bool)
    n_groups = -(-n_in // group)
    pad = n_groups * group - n_in
    kt = np.pad((k * fix).T, ((0, 0), (0, pad))).reshape(n_out, n_groups, group)
    live = np.pad(fix.T, ((0, 0), (0, pad))).reshape(n_out, n_groups, group).sum(axis=2)
    width = np.full(n_groups, group, np.float64)
    width[-1] = group - pad
    rms = np.sqrt((kt ** 2).sum(axis=2) / width)
    key = rms.copy()
    prev = np.zeros((n_out, n_groups), bool) if pruned is None else np.asarray(pruned, bool)
    key[prev] = -1.0  # groups already removed go first (rounds only ever add)
    key[live == 0] = -2.0  # nothing left to remove there: free
    order = np.argsort(key.ravel(), kind="stable")
    gained = live.ravel()[order]
    zeros = int((~fix).sum()) + np.concatenate([[0], np.cumsum(gained)])
    target = round(sparsity * k.size)
    n_cut = int(np.argmin(np.abs(zeros - target)))
    n_free = int((live == 0).sum())
    n_live = n_out * n_groups - n_free
    n_cut = max(n_cut, n_free + int((prev & (live > 0)).sum()))
    n_cut = min(n_cut, n_free + max(n_live - 1, 0))
    removed = np.zeros(n_out * n_groups, bool)
    removed[order[:n_cut]] = True
    removed = removed.reshape(n_out, n_groups)
    keep = np.repeat(~removed, group, axis=1)[:, :n_in].T & fix
    return keep, removed


class _GroupPruner(_HoldMasks):
    """Iterative SIMD-aware pruning inside one ``fit``: at the start of round r
    (step ⌊r·T/R⌋) every layer is pruned to the round's target from its current
    weights, and between rounds the removed groups are held at zero."""

    def __init__(self, layers: Mapping[str, keras.layers.Dense], fixed: Masks,
                 targets: Sequence[float], total_steps: int, group: int) -> None:
        super().__init__(layers, fixed)
        self.fixed = dict(fixed)
        self.targets = list(targets)
        rounds = len(self.targets)
        self.starts = [r * total_steps // rounds for r in range(rounds)]
        self.group = group
        self.step = 0
        self.round = 0
        self.pruned: dict[str, np.ndarray] = {}

    def prune_to(self, s: float) -> None:
        for name, layer in self.layers.items():
            kfix, bfix = self.fixed[name]
            keep, removed = simd_keep_mask(layer.kernel.numpy(), s, self.group, fixed=kfix,
                                           pruned=self.pruned.get(name))
            self.pruned[name] = removed
            self.set_mask(name, keep, bfix)
        self.apply()

    def on_train_begin(self, logs: Any = None) -> None:
        self.step = 0
        self.round = 0
        super().on_train_begin(logs)
        self.on_train_batch_begin(0)  # round 1 now, not inside the first batch's timing

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        while self.round < len(self.targets) and self.step >= self.starts[self.round]:
            self.prune_to(self.targets[self.round])
            self.round += 1

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.step += 1
        super().on_train_batch_end(batch, logs)

    def finish(self) -> None:
        """Rounds not reached (fewer steps than rounds) are applied at the end."""
        while self.round < len(self.targets):
            self.prune_to(self.targets[self.round])
            self.round += 1


def _round_targets(sparsity: float, rounds: int) -> list[float]:
    """Cubic ramp (Zhu & Gupta's, as TF-MOT's PolynomialDecay): most is cut early,
    while the network is most redundant; the last rounds cut little."""
    return [sparsity * (1.0 - (1.0 - r / rounds) ** 3) for r in range(1, rounds + 1)]


def _simd(base: keras.Model, graph: Graph, x: np.ndarray, y: np.ndarray, fixed: Masks, *,
          sparsity: float, group: int, rounds: int, epochs: int, batch_size: int,
          loss: keras.losses.Loss | None, class_weight: ClassWeight, learning_rate: float,
          verbose: int) -> Params:
    if group < 1 or rounds < 1:
        raise ValueError(f"group and rounds must be >= 1, got {group} and {rounds}")
    layers = _dense(base, graph)
    pruner = _GroupPruner(layers, fixed, _round_targets(sparsity, rounds),
                          _steps(len(x), batch_size, epochs), group)
    _fit(base, graph, x, y, epochs=epochs, batch_size=batch_size, loss=loss,
         class_weight=class_weight, learning_rate=learning_rate, verbose=verbose,
         callbacks=[pruner])
    pruner.finish()
    pruner.apply()
    return _apply_masks(params_from_keras(base, graph), pruner.masks)


def prune_simd(model: keras.Model, graph: Graph, x: np.ndarray, y: np.ndarray, *,
               sparsity: float, group: int = 8, rounds: int = 4, epochs: int = 3,
               batch_size: int = 256, loss: keras.losses.Loss | None = None,
               class_weight: ClassWeight = None, learning_rate: float = 1e-3, seed: int = 0,
               verbose: int = 0) -> Params:
    """Scalpel's SIMD-aware weight pruning: every dense layer ends with ``sparsity``
    of its weights zero, in whole aligned groups of ``group`` inputs per output
    (within half a group of the target), so the block-sparse kernel loads each
    surviving group with one index and one SIMD load.

    Iterative as in the paper (Fig. 7): ``rounds`` prune-and-retrain rounds spread
    over the ``epochs`` of fine-tuning, the groups removed in one round held at
    zero in the next."""
    sparsity = _check_sparsity(sparsity)
    keras.utils.set_random_seed(seed)
    base = _copy(model, graph)
    params = params_from_keras(base, graph)
    return _simd(base, graph, x, y, _all_kept(params), sparsity=sparsity, group=group,
                 rounds=rounds, epochs=epochs, batch_size=batch_size, loss=loss,
                 class_weight=class_weight, learning_rate=learning_rate, verbose=verbose)


# -- node pruning (Scalpel §3.4) --------------------------------------------------------------

class _Clip(keras.constraints.Constraint):
    def __init__(self, hi: float) -> None:
        self.hi = float(hi)

    def __call__(self, w: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(w, 0.0, self.hi)

    def get_config(self) -> dict[str, Any]:
        return {"hi": self.hi}


class NodeMask(keras.layers.Layer):
    """Scalpel's mask layer: ``y' = α · β · y`` per node (Fig. 12).

    β ∈ [0, 1] is trained under an L1 penalty λ·Σβ; α ∈ {0, 1} is a gate that a
    callback closes when β falls below the threshold T and reopens above T + ε
    (eq. 6). β is stored as ``θ = β / rate`` so that Adam, whose steps are about
    the learning rate whatever the gradient's scale, moves β ``rate`` times as
    fast as the weights — otherwise a mask needs ~1/lr steps to close at all."""

    def __init__(self, l1: float = 1e-3, rate: float = 10.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.l1 = float(l1)
        self.rate = float(rate)

    def build(self, input_shape: Any) -> None:
        n = int(input_shape[-1])
        self.theta = self.add_weight(
            name="theta", shape=(n,), initializer=keras.initializers.Constant(1.0 / self.rate),
            regularizer=keras.regularizers.L1(self.l1 * self.rate),
            constraint=_Clip(1.0 / self.rate), trainable=True)
        self.alpha = self.add_weight(name="alpha", shape=(n,), initializer="ones",
                                     trainable=False)
        super().build(input_shape)

    @property
    def beta(self) -> np.ndarray:
        return self.theta.numpy() * self.rate

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x * (self.alpha * self.theta * self.rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "l1": self.l1, "rate": self.rate}


class _Gate(keras.callbacks.Callback):
    """α update with hysteresis after every batch (Scalpel eq. 6)."""

    def __init__(self, masks: Sequence[NodeMask], threshold: float, epsilon: float) -> None:
        super().__init__()
        self.masks = list(masks)
        self.t = float(threshold)
        self.eps = float(epsilon)
        self._update = tf.function(self._gate)

    def _gate(self) -> None:
        for m in self.masks:
            beta = m.theta * m.rate
            m.alpha.assign(tf.where(beta >= self.t + self.eps, tf.ones_like(beta),
                                    tf.where(beta < self.t, tf.zeros_like(beta), m.alpha)))

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self._update()


def _masked_model(base: keras.Model, graph: Graph, spaces: Mapping[str, tuple[list[str],
                  list[str]]], l1: float, rate: float) -> tuple[keras.Model, dict[str, NodeMask]]:
    """The graph rebuilt from ``base``'s own layers (weights shared) with one mask
    layer per prunable index space, applied to each producer's output. Masking
    every producer alike masks the whole space: add/subtract are linear and
    relu(β·y) = β·relu(y) for β ≥ 0."""
    masks = {root: NodeMask(l1, rate, name=f"mask_{root}") for root in spaces}
    producer_of = {p: root for root, (prods, _) in spaces.items() for p in prods}
    inp = keras.Input(shape=(graph.input_dim,), dtype="float32", name=graph.nodes[0].name)
    t: dict[str, Any] = {graph.nodes[0].name: inp}
    for n in graph.nodes[1:]:
        a = [t[i] for i in n.inputs]
        out = base.get_layer(n.name)(a if n.op in ("add", "subtract", "concat") else a[0])
        if n.name in producer_of:
            out = masks[producer_of[n.name]](out)
        t[n.name] = out
    return keras.Model(inp, t[graph.output], name=f"{graph.name}_masked"), masks


def _node_masks(graph: Graph, spaces: Mapping[str, tuple[list[str], list[str]]],
                dead: Mapping[str, np.ndarray]) -> Masks:
    """Kernel/bias keep masks that remove the ``dead`` nodes of each space from its
    producers (columns and biases) and readers (rows)."""
    shapes = graph.kernel_shapes()
    masks: Masks = {n: (np.ones(s, bool), np.ones(s[1], bool)) for n, s in shapes.items()}
    for root, (prods, readers) in spaces.items():
        d = dead[root]
        for p in prods:
            masks[p][0][:, d] = False
            masks[p][1][d] = False
        for r in readers:
            masks[r][0][d, :] = False
    return masks


def _node_zeros(graph: Graph, spaces: Mapping[str, tuple[list[str], list[str]]],
                dead: Mapping[str, np.ndarray]) -> int:
    """Kernel weights zeroed by removing ``dead`` nodes (rows and columns counted once)."""
    shapes = graph.kernel_shapes()
    rows = {n: np.zeros(i, bool) for n, (i, _) in shapes.items()}
    cols = {n: np.zeros(o, bool) for n, (_, o) in shapes.items()}
    for root, (prods, readers) in spaces.items():
        for p in prods:
            cols[p] |= dead[root]
        for r in readers:
            rows[r] |= dead[root]
    total = 0
    for n, (i, o) in shapes.items():
        r, c = int(rows[n].sum()), int(cols[n].sum())
        total += r * o + c * i - r * c
    return total


def _choose_dead(graph: Graph, spaces: Mapping[str, tuple[list[str], list[str]]],
                 beta: Mapping[str, np.ndarray], alpha: Mapping[str, np.ndarray], *,
                 sparsity: float | None, keep_fraction: float | None) -> dict[str, np.ndarray]:
    """Which nodes go: the gate's verdict (β below T), or the lowest-β nodes needed
    to reach a weight ``sparsity`` (over all kernels) or a per-space ``keep_fraction``.
    Every space keeps at least one node."""
    dead = {root: np.zeros(len(beta[root]), bool) for root in spaces}
    if keep_fraction is not None:
        for root, b in beta.items():
            n_keep = min(len(b), max(1, round(keep_fraction * len(b))))
            dead[root][np.argsort(-b, kind="stable")[n_keep:]] = True
        return dead
    if sparsity is None:
        for root in spaces:
            d = alpha[root] == 0
            if d.all():
                d[int(np.argmax(beta[root]))] = False
            dead[root] = d
        return dead
    total = sum(i * o for i, o in graph.kernel_shapes().values())
    target = math.ceil(sparsity * total - 1e-9)
    order = sorted((float(alpha[r][j] * beta[r][j]), float(beta[r][j]), r, j)
                    for r in spaces for j in range(len(beta[r])))
    zeros = 0
    for _, _, root, j in order:
        if zeros >= target:
            break
        if dead[root].sum() + 1 >= len(dead[root]):
            continue
        dead[root][j] = True
        zeros = _node_zeros(graph, spaces, dead)
    if zeros < target:
        warnings.warn(f"{graph.name}: node pruning reaches only {zeros / total:.1%} weight "
                      f"sparsity (asked {sparsity:.1%}); the output layer and the layers "
                      "outside prunable spaces keep their weights", stacklevel=3)
    return dead


def _node(base: keras.Model, graph: Graph, x: np.ndarray, y: np.ndarray, *,
          sparsity: float | None, keep_fraction: float | None, l1: float, threshold: float,
          epsilon: float, rate: float, mask_epochs: int, epochs: int, batch_size: int,
          loss: keras.losses.Loss | None, class_weight: ClassWeight, learning_rate: float,
          verbose: int) -> tuple[Params, Masks]:
    """Node pruning on ``base`` (trained in place); returns params and keep masks."""
    if sparsity is not None and keep_fraction is not None:
        raise ValueError("give sparsity or keep_fraction, not both")
    if keep_fraction is not None and not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], not {keep_fraction}")
    spaces = hidden_spaces(graph)
    params = params_from_keras(base, graph)
    if not spaces:
        warnings.warn(f"{graph.name}: no hidden index space can lose nodes", stacklevel=3)
        _fit(base, graph, x, y, epochs=epochs, batch_size=batch_size, loss=loss,
             class_weight=class_weight, learning_rate=learning_rate, verbose=verbose)
        return params_from_keras(base, graph), _all_kept(params)
    # 1. train the mask layers (and the weights around them) under the L1 penalty
    masked, masks = _masked_model(base, graph, spaces, l1, rate)
    _fit(masked, graph, x, y, epochs=mask_epochs, batch_size=batch_size, loss=loss,
         class_weight=class_weight, learning_rate=learning_rate, verbose=verbose,
         callbacks=[_Gate(list(masks.values()), threshold, epsilon)])
    beta = {r: m.beta for r, m in masks.items()}
    alpha = {r: m.alpha.numpy() for r, m in masks.items()}
    dead = _choose_dead(graph, spaces, beta, alpha, sparsity=sparsity,
                        keep_fraction=keep_fraction)
    # 2. remove the masks: β folded into the producers (so the network starts its
    #    retraining as the masked one was), dead nodes zeroed in producers and readers
    params = params_from_keras(base, graph)
    for root, (prods, _) in spaces.items():
        for p in prods:
            k, b = params[p]
            params[p] = ((k * beta[root][None, :]).astype(np.float32),
                         (b * beta[root]).astype(np.float32))
    keep = _node_masks(graph, spaces, dead)
    params = _apply_masks(params, keep)
    for name, layer in _dense(base, graph).items():
        layer.set_weights(list(params[name]))
    # 3. retrain with the removed nodes held at zero
    _fit(base, graph, x, y, epochs=epochs, batch_size=batch_size, loss=loss,
         class_weight=class_weight, learning_rate=learning_rate, verbose=verbose,
         callbacks=[_HoldMasks(_dense(base, graph), keep)])
    return _apply_masks(params_from_keras(base, graph), keep), keep


def prune_node(model: keras.Model, graph: Graph, x: np.ndarray, y: np.ndarray, *,
               sparsity: float | None = None, keep_fraction: float | None = None,
               l1: float = 1e-3, threshold: float = 0.05, epsilon: float = 0.01,
               mask_rate: float = 10.0, mask_epochs: int | None = None, epochs: int = 3,
               batch_size: int = 256, loss: keras.losses.Loss | None = None,
               class_weight: ClassWeight = None, learning_rate: float = 1e-3, seed: int = 0,
               verbose: int = 0) -> Params:
    """Scalpel's node pruning: whole hidden nodes removed, the rest left dense.

    A mask layer per prunable index space (the nodes joined by add/subtract/relu;
    spaces read by slice/concat/sum_slices or holding the output are left alone)
    is trained for ``mask_epochs`` (default ``epochs``) under an L1 penalty ``l1``
    on β. Which nodes go: with ``sparsity``, the lowest-β nodes until that fraction
    of all kernel weights is zero (node granularity: it may overshoot a little);
    with ``keep_fraction``, the top-β fraction of each space stays; with neither,
    the nodes whose gate closed (β < ``threshold``). Removed nodes are zeroed in
    their producers' columns and biases and their readers' rows, and the network
    is retrained ``epochs`` with them held at zero; ``compact_nodes`` then drops them."""
    if sparsity is not None:
        sparsity = _check_sparsity(sparsity)
    keras.utils.set_random_seed(seed)
    params, _ = _node(_copy(model, graph), graph, x, y, sparsity=sparsity,
                      keep_fraction=keep_fraction, l1=l1, threshold=threshold,
                      epsilon=epsilon, rate=mask_rate,
                      mask_epochs=epochs if mask_epochs is None else mask_epochs,
                      epochs=epochs, batch_size=batch_size, loss=loss,
                      class_weight=class_weight, learning_rate=learning_rate, verbose=verbose)
    return params


# -- Scalpel (§3.5) ---------------------------------------------------------------------------

def prune_scalpel(model: keras.Model, graph: Graph, x: np.ndarray, y: np.ndarray, *,
                  sparsity: float, node_sparsity: float | None = None, group: int = 8,
                  rounds: int = 4, l1: float = 1e-3, threshold: float = 0.05,
                  epsilon: float = 0.01, mask_rate: float = 10.0,
                  mask_epochs: int | None = None, epochs: int = 3, batch_size: int = 256,
                  loss: keras.losses.Loss | None = None, class_weight: ClassWeight = None,
                  learning_rate: float = 1e-3, seed: int = 0, verbose: int = 0) -> Params:
    """Node pruning, then SIMD-aware pruning of the remaining weights (§3.5).

    The node stage removes nodes up to ``node_sparsity`` of all kernel weights
    (default half of ``sparsity``); the SIMD stage then removes whole groups
    until every layer has ``sparsity`` of its weights zero — node zeros count
    towards it and stay zero; a layer the node stage already took past the
    target keeps what it has. Training: ``mask_epochs`` + ``epochs`` for the node
    stage, ``epochs`` (over ``rounds`` rounds) for the SIMD stage."""
    sparsity = _check_sparsity(sparsity)
    node_sparsity = sparsity / 2 if node_sparsity is None else _check_sparsity(
        node_sparsity, "node_sparsity")
    keras.utils.set_random_seed(seed)
    base = _copy(model, graph)
    common = {"batch_size": batch_size, "loss": loss, "class_weight": class_weight,
              "learning_rate": learning_rate, "verbose": verbose}
    _, keep = _node(base, graph, x, y, sparsity=node_sparsity, keep_fraction=None, l1=l1,
                    threshold=threshold, epsilon=epsilon, rate=mask_rate,
                    mask_epochs=epochs if mask_epochs is None else mask_epochs,
                    epochs=epochs, **common)
    return _simd(base, graph, x, y, keep, sparsity=sparsity, group=group, rounds=rounds,
                 epochs=epochs, **common)
