"""Synthetic bundles are networks worth timing: pruned as training prunes, every
kept weight on a path to the output, the output depending on the input."""

from __future__ import annotations

import numpy as np
import pytest

from mittd.predictor.graph import forward, init_params, input_reach
from mittd.predictor.models import build_model
from mittd.predictor.plan import compact_nodes
from mittd.predictor.synthetic import magnitude_prune, simd_prune, synthetic_bundle


def _nonzeros(params) -> int:  # type: ignore[no-untyped-def]
    return sum(int(np.count_nonzero(k)) for k, _ in params.values())


def _binary(dim: int, n: int = 512, density: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((n, dim)) < density).astype(np.float32)


@pytest.mark.parametrize("method", ["magnitude", "simd"])
@pytest.mark.parametrize(("model", "sparsity"), [("precise_linear", 0.9),
                                                 ("precise_linear", 0.98),
                                                 ("good_custom", 0.95)])
def test_pruned_networks_stay_connected(model: str, method: str, sparsity: float) -> None:
    b = synthetic_bundle(model, sparsity, method)
    p = compact_nodes(b.graph, b.params)[1]
    assert _nonzeros(p) == _nonzeros(b.params)  # no kept weight is dead
    assert input_reach(b.graph, b.params)[b.graph.output].any()
    out = forward(b.graph, b.params, _binary(b.graph.input_dim))
    assert len(np.unique(out.round(9), axis=0)) > 1  # not a constant


def test_layer_by_layer_pruning_would_time_a_constant() -> None:
    """What the connected pruning avoids: each layer pruned to 98 % on its own, as
    the synthetic bundles once were, leaves precise_linear computing a constant."""
    g = build_model("precise_linear")
    p = init_params(g, 0)
    alone = {}
    for name, (k, bias) in p.items():
        cut = np.sort(np.abs(k).ravel())[round(0.98 * k.size) - 1]
        alone[name] = (np.where(np.abs(k) > cut, k, 0).astype(np.float32), bias)
    out = forward(g, alone, _binary(g.input_dim))
    assert len(np.unique(out.round(9), axis=0)) == 1
    assert not input_reach(g, alone)[g.output].any()  # cut, though no layer is empty
    assert all(np.any(k) for k, _ in alone.values())
    assert _nonzeros(compact_nodes(g, alone)[1]) <= 2


def test_every_layer_keeps_its_share_and_at_least_one() -> None:
    g = build_model("precise_linear")
    p = init_params(g, 0)
    pruned = magnitude_prune(g, p, 0.98)
    for name, (k, _) in pruned.items():
        kept = np.count_nonzero(k)
        assert 1 <= kept <= max(1, k.size - round(0.98 * k.size)), name
    assert np.count_nonzero(pruned["fc1"][0]) == 352 * 352 - round(0.98 * 352 * 352)
    groups = simd_prune(g, p, 0.98)
    logits = groups["logits"][0]  # 16 x 2 weights, 4 groups of 8: 98 % would keep none
    assert np.count_nonzero(logits) == 8
