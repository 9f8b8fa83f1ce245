"""Pruning (magnitude, SIMD-aware, node, Scalpel) and compression (4-bit shared
weights, float16) on a tiny graph with an add join and a learnable rule: each
method's structural promise holds and the pruned networks still predict."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_model_optimization")

import tf_keras as keras

from mittd.predictor.graph import Graph, GraphBuilder, Params, forward
from mittd.predictor.plan import compact_nodes
from mittd.training import compress as cz
from mittd.training import prune as pr
from mittd.training.keras_graph import params_from_keras, to_keras

G = 8  # SIMD group
FIT = {"epochs": 3, "batch_size": 128, "seed": 0}


def _graph() -> Graph:
    """16 → (a, b: 32 each, added: one index space) → relu → h 32 → relu → 2 logits."""
    g = GraphBuilder("tiny_join", 16)
    a = g.dense("input", 32, name="a")
    b = g.dense("input", 32, name="b")
    h = g.relu(g.add(a, b, name="join"), name="join_relu")
    h = g.relu(g.dense(h, 32, name="h"), name="h_relu")
    return g.build(g.dense(h, 2, name="logits"))


@pytest.fixture(scope="module")
def task() -> tuple[Graph, keras.Model, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 16)).astype(np.float32)
    y = ((x[:, 0] - x[:, 1] + 0.8 * x[:, 2] + 0.5 * x[:, 4] * x[:, 5]) > 0).astype(np.int64)
    graph = _graph()
    keras.utils.set_random_seed(0)
    model = to_keras(graph)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=5, batch_size=128, verbose=0)
    return graph, model, x, y


def _accuracy(graph: Graph, params: Params, x: np.ndarray, y: np.ndarray) -> float:
    return float((forward(graph, params, x).argmax(axis=1) == y).mean())


def _groups_whole(kernel: np.ndarray, allowed: np.ndarray | None = None) -> bool:
    """Every aligned group of G inputs of one output is all zero or all non-zero,
    ignoring positions in ``allowed`` (node pruning's zeros)."""
    n_in, n_out = kernel.shape
    z = (kernel == 0).T.reshape(n_out, n_in // G, G)
    free = np.zeros_like(z) if allowed is None else allowed.T.reshape(n_out, n_in // G, G)
    zero = (z | free).all(axis=2)
    live = (~z | free).all(axis=2)
    return bool((zero | live).all())


def _dead_nodes(params: Params) -> np.ndarray:
    """Nodes of the a/b join space removed by node pruning: zero in both producers
    (column and bias) and in the reader's row."""
    ka, ba = params["a"]
    kb, bb = params["b"]
    kh = params["h"][0]
    return ((ka == 0).all(axis=0) & (ba == 0) & (kb == 0).all(axis=0) & (bb == 0)
            & (kh == 0).all(axis=1))


def _compacts(graph: Graph, params: Params, x: np.ndarray) -> dict[str, int]:
    small_graph, small, removed = compact_nodes(graph, params)
    np.testing.assert_allclose(forward(small_graph, small, x), forward(graph, params, x),
                               rtol=1e-9, atol=1e-9)
    return removed


@pytest.fixture(scope="module")
def magnitude(task: tuple) -> tuple[keras.Model, Params]:
    graph, model, x, y = task
    before = params_from_keras(model, graph)
    stripped = pr.prune_magnitude_model(model, graph, x, y, sparsity=0.75, **FIT)
    after = params_from_keras(model, graph)
    assert all(np.array_equal(before[n][0], after[n][0]) for n in before), "input mutated"
    return stripped, params_from_keras(stripped, graph)


def test_magnitude(task: tuple, magnitude: tuple) -> None:
    graph, _, x, y = task
    stripped, params = magnitude
    for name, s in pr.layer_sparsity(params).items():
        assert abs(s - 0.75) <= 0.005, (name, s)
    ref = forward(graph, params, x[:256])
    got = stripped(x[:256], training=False).numpy()
    assert np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref))) < 1e-5
    assert _accuracy(graph, params, x, y) > 0.85


def test_simd(task: tuple) -> None:
    graph, model, x, y = task
    params = pr.prune_simd(model, graph, x, y, sparsity=0.75, group=G, rounds=3, **FIT)
    for name, s in pr.layer_sparsity(params).items():
        assert abs(s - 0.75) <= 0.005, (name, s)
        assert _groups_whole(params[name][0]), name
    assert _accuracy(graph, params, x, y) > 0.85


def test_simd_keep_mask() -> None:
    """Partial last groups, fixed zeros counted and kept, rounds only add."""
    rng = np.random.default_rng(1)
    k = rng.normal(size=(20, 6))  # 20 inputs: groups of 8, 8, 4
    fixed = np.ones(k.shape, bool)
    fixed[3, :] = False  # a removed input node
    keep1, cut1 = pr.simd_keep_mask(k, 0.3, G, fixed=fixed)
    keep2, cut2 = pr.simd_keep_mask(k * keep1, 0.6, G, fixed=fixed, pruned=cut1)
    assert not keep2[3].any() and (cut1 <= cut2).all()
    assert abs((~keep2).mean() - 0.6) <= G / 2 / k.size
    for keep, cut in ((keep1, cut1), (keep2, cut2)):
        blocks = np.pad(keep.T, ((0, 0), (0, 4))).reshape(6, 3, G)
        assert not (blocks[cut]).any()
    everything, _ = pr.simd_keep_mask(k, 0.99, G)
    assert everything.any()  # a layer is never cut off entirely


def test_node(task: tuple) -> None:
    graph, model, x, y = task
    params = pr.prune_node(model, graph, x, y, keep_fraction=0.5, **FIT)
    dead = _dead_nodes(params)
    assert dead.sum() == 16
    removed = _compacts(graph, params, x)
    assert removed["a"] == removed["b"] == 16 and removed["h"] == 16
    assert _accuracy(graph, params, x, y) > 0.85


def test_node_sparsity_target(task: tuple) -> None:
    graph, model, x, y = task
    params = pr.prune_node(model, graph, x, y, sparsity=0.4, l1=1e-2, **FIT)
    zeros = sum(int((k == 0).sum()) for k, _ in params.values())
    total = sum(k.size for k, _ in params.values())
    assert 0.4 <= zeros / total < 0.45
    assert sum(_compacts(graph, params, x).values()) > 0
    assert _accuracy(graph, params, x, y) > 0.85


def test_node_threshold(task: tuple) -> None:
    """No target: the nodes whose mask gate closed (β < T under the L1 penalty) go."""
    graph, model, x, y = task
    params = pr.prune_node(model, graph, x, y, l1=1e-2, threshold=0.05, **FIT)
    assert sum(_compacts(graph, params, x).values()) > 0
    assert _accuracy(graph, params, x, y) > 0.85


def test_scalpel(task: tuple) -> None:
    graph, model, x, y = task
    params = pr.prune_scalpel(model, graph, x, y, sparsity=0.75, node_sparsity=0.3,
                              group=G, rounds=2, **FIT)
    dead = _dead_nodes(params)
    assert dead.any()
    assert _compacts(graph, params, x)["a"] == dead.sum()
    h_dead = (params["h"][0] == 0).all(axis=0) & (params["h"][1] == 0)
    node_zero = {
        "a": np.zeros((16, 32), bool) | dead[None, :],
        "b": np.zeros((16, 32), bool) | dead[None, :],
        "h": dead[:, None] | h_dead[None, :],
        "logits": np.zeros((32, 2), bool) | h_dead[:, None],
    }
    for name, s in pr.layer_sparsity(params).items():
        # groups that hold node zeros are shorter: the target is met within half a group
        assert s >= 0.75 - max(0.005, G / 2 / params[name][0].size), (name, s)
        assert _groups_whole(params[name][0], node_zero[name]), name
    assert _accuracy(graph, params, x, y) > 0.85


def test_kmeans4(task: tuple, magnitude: tuple) -> None:
    graph, model, x, y = task
    params = magnitude[1]
    q, books = cz.kmeans4(params)
    for name, (k, b) in q.items():
        k0 = params[name][0]
        assert np.array_equal(k == 0, k0 == 0)
        assert len(np.unique(k[k != 0])) <= 16
        centroids, codes = books[name]
        assert centroids.shape == (16,) and centroids.dtype == np.float32
        assert codes.dtype == np.uint8 and len(codes) == np.count_nonzero(k0)
        np.testing.assert_array_equal(centroids[codes], k[k != 0])
        np.testing.assert_array_equal(b, params[name][1])
        assert np.abs(k - k0).max() <= 0.1 * np.abs(k0).max()
    assert _accuracy(graph, q, x, y) > 0.85
    tuned, tbooks = cz.finetune_centroids(model, graph, q, books, x, y, epochs=1,
                                          batch_size=128)
    for name, (k, _) in tuned.items():
        assert np.array_equal(k == 0, q[name][0] == 0)
        assert np.array_equal(tbooks[name][1], books[name][1])
        np.testing.assert_array_equal(tbooks[name][0][tbooks[name][1]], k[k != 0])
    assert _accuracy(graph, tuned, x, y) > 0.85


def test_kmeans_few_values() -> None:
    """Fewer distinct weights than codes: each keeps its exact value."""
    k = np.array([[0.0, 0.5, -0.25], [0.5, 0.0, 0.125]], np.float32)
    q, books = cz.kmeans4({"l": (k, np.zeros(3, np.float32))})
    np.testing.assert_array_equal(q["l"][0], k)
    assert len(books["l"][1]) == 4


def test_fp16(magnitude: tuple) -> None:
    params = magnitude[1]
    h = cz.fp16(params)
    for name, (k, b) in h.items():
        assert k.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(k.astype(np.float16).astype(np.float32), k)
        np.testing.assert_array_equal(b.astype(np.float16).astype(np.float32), b)
        np.testing.assert_allclose(k, params[name][0], rtol=1e-3, atol=1e-7)
    with pytest.raises(ValueError, match="float16"):
        cz.fp16({"l": (np.full((2, 2), 1e6, np.float32), np.zeros(2, np.float32))})
