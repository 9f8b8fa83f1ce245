"""Pruned bundles from random weights, for tests and benchmarks.

Speed and exactness do not depend on what the weights learned, only on their
shape and sparsity pattern, so engines are tested and benchmarked on random
(Glorot) weights pruned the three ways mittd prunes trained models:

- ``magnitude``: the smallest weights of each layer set to zero (TF-MOT's
  magnitude pruning, unstructured — what seed 000 did);
- ``simd``: Scalpel's SIMD-aware pruning — groups of G contiguous weights of a
  row, ranked by their RMS, removed whole (seed 003 §3.3);
- ``node``: Scalpel's node pruning — whole hidden nodes removed (seed 003 §3.4),
  as many as it takes to reach the same weight count.

The first two prune output layer first and keep only weights on a path to the
output, as training does (pruned layer by layer at random, deep sparse networks
compute a constant: see ``_prune_connected``).

Trained bundles come from ``training/``; these never leave tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from mittd.predictor.bundle import Bundle
from mittd.predictor.graph import Graph, Params, init_params
from mittd.predictor.models import MODEL_FEATURISER, build_model
from mittd.predictor.plan import _index_spaces

METHODS = ("magnitude", "simd", "node")


def _readers(graph: Graph) -> dict[str, list[str]]:
    """The dense layers that read each prunable layer's output space (layers whose
    outputs are the network's, or are read by slices or concatenations, are absent:
    all their units count as read)."""
    return {p: r for producers, r in _spaces(graph).values() for p in producers}


def _prune_connected(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]],
                     sparsity: float, scores: Callable[[np.ndarray], np.ndarray],
                     expand: Callable[[np.ndarray, tuple[int, int]], np.ndarray]) -> Params:
    """Prune every layer to ``sparsity``, output layer first, keeping the units of
    highest ``scores`` among those whose output a later layer still reads.

    Why connected: a weight off every path to the output cannot change the loss, so
    pruning during training drops it first, and seed 000 stopped at 98 % because more
    "caused the model to become disconnected". Pruned layer by layer at random, 97 %
    and 98 % precise_linear (and 90 % SIMD-aware) compute a constant: the benchmark
    would time work that :func:`~mittd.predictor.plan.compact_nodes` rightly deletes.
    Every layer keeps at least one unit of pruning (a layer pruned to nothing cuts the
    model in two)."""
    out: Params = {n: (np.array(k, np.float32), np.array(b, np.float32))
                   for n, (k, b) in params.items()}
    readers = _readers(graph)
    for d in reversed(graph.dense_nodes()):  # readers come after their inputs
        k, b = out[d.name]
        score = scores(k)  # (out, units): one score per unit of pruning
        if d.name in readers:  # only the outputs a kept weight reads
            live = np.logical_or.reduce([(out[r][0] != 0).any(axis=1)
                                         for r in readers[d.name]])
            score = np.where(live[:, None], score, -np.inf)
        n_keep = max(1, score.size - round(sparsity * score.size))
        order = np.argsort(-score.ravel(), kind="stable")[:n_keep]
        keep = np.zeros(score.size, bool)
        keep[order] = True
        keep &= np.isfinite(score.ravel())
        mask = expand(keep.reshape(score.shape), k.shape)
        out[d.name] = (np.where(mask, k, 0).astype(np.float32), b)
    return out


def magnitude_prune(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]],
                    sparsity: float) -> Params:
    """The smallest weights of each layer set to zero (TF-MOT's magnitude pruning),
    connected (:func:`_prune_connected`)."""
    return _prune_connected(graph, params, sparsity, lambda k: np.abs(k).T,
                            lambda keep, shape: keep.T)


def simd_prune(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]],
               sparsity: float, group: int = 8) -> Params:
    """Remove whole groups of ``group`` contiguous weights of an output row (the
    block-sparse kernel's layout), lowest RMS first, connected
    (:func:`_prune_connected`)."""
    def rms(k: np.ndarray) -> np.ndarray:
        kt = k.T  # (out, in): rows as the kernels read them
        n_out, n_in = kt.shape
        padded = np.zeros((n_out, -(-n_in // group) * group), np.float32)
        padded[:, :n_in] = kt
        return np.sqrt((padded.reshape(n_out, -1, group) ** 2).mean(axis=2))

    def expand(keep: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return np.repeat(keep, group, axis=1)[:, :shape[0]].T

    return _prune_connected(graph, params, sparsity, rms, expand)


def _spaces(graph: Graph) -> dict[str, tuple[list[str], list[str]]]:
    """For every prunable hidden index space: (dense layers producing it, dense
    layers reading it)."""
    space = _index_spaces(graph)
    out: dict[str, tuple[list[str], list[str]]] = {}
    members: dict[str, list[str]] = {}
    for name, root in space.items():
        members.setdefault(root, []).append(name)
    for root, names in members.items():
        nodes = [graph.node(n) for n in names]
        if root == space[graph.output] or not all(
            n.op in ("dense", "add", "subtract", "relu") for n in nodes
        ):
            continue
        readers = [n for n in graph.nodes if any(i in names for i in n.inputs)
                   and n.op not in ("add", "subtract", "relu")]
        if any(r.op != "dense" for r in readers):
            continue
        out[root] = ([n.name for n in nodes if n.op == "dense"], [r.name for r in readers])
    return out


def node_prune(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]],
               keep_fraction: float) -> Params:
    """Keep the ``keep_fraction`` of each hidden space's nodes with the largest
    outgoing weights; zero the rest in producers and readers."""
    out: Params = {n: (np.array(k, np.float32), np.array(b, np.float32))
                   for n, (k, b) in params.items()}
    for producers, readers in _spaces(graph).values():
        width = out[readers[0]][0].shape[0]
        norm = sum(np.linalg.norm(out[r][0], axis=1) for r in readers)
        n_keep = max(1, round(keep_fraction * width))
        dead = np.argsort(norm, kind="stable")[: width - n_keep]
        for p in producers:
            out[p][0][:, dead] = 0.0
            out[p][1][dead] = 0.0
        for r in readers:
            out[r][0][dead, :] = 0.0
    return out


def node_prune_to(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  sparsity: float) -> Params:
    """Node pruning with the keep fraction found (bisection) to reach ``sparsity``."""
    total = sum(k.size for k, _ in params.values())
    lo, hi = 0.0, 1.0
    best = dict(params)
    for _ in range(30):
        mid = (lo + hi) / 2
        p = node_prune(graph, params, mid)
        s = 1.0 - sum(int(np.count_nonzero(k)) for k, _ in p.values()) / total
        best = p
        if s > sparsity:
            lo = mid
        else:
            hi = mid
    return best


def synthetic_bundle(model: str, sparsity: float = 0.0, method: str = "magnitude",
                     seed: int = 0, group: int = 8) -> Bundle:
    """A bundle of ``model`` with random weights pruned to ``sparsity``."""
    from mittd.predictor.features import FEATURISERS, MinMaxFeaturiser

    if method not in METHODS:
        raise ValueError(f"pruning method must be one of {METHODS}, not {method!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), not {sparsity}")
    graph = build_model(model)
    params = init_params(graph, seed)
    if sparsity > 0:
        if method == "magnitude":
            params = magnitude_prune(graph, params, sparsity)
        elif method == "simd":
            params = simd_prune(graph, params, sparsity, group)
        else:
            params = node_prune_to(graph, params, sparsity)
    featuriser = FEATURISERS[MODEL_FEATURISER[model]]()
    if isinstance(featuriser, MinMaxFeaturiser):  # a fitted range: usable end to end
        n = featuriser.fit_dim
        featuriser.fit_raw(np.vstack([np.zeros(n), np.ones(n)]))
    config = featuriser.config()
    return Bundle(
        graph, params, config,
        thresholds={"latency_us": [500.0], "p_slow": [0.5] * (
            graph.output_dim if graph.head == "sigmoid" else 1)},
        provenance={"synthetic": True, "pruning": method, "sparsity": sparsity,
                    "seed": seed},
    )
