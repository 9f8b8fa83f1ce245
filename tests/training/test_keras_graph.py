"""Keras models built from graphs compute the reference forward pass, weights
round-trip, pruning wrappers are stripped, and the TF timing paths agree."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_model_optimization")

import tensorflow_model_optimization as tfmot
import tf_keras as keras

from mittd.predictor.graph import forward, init_params
from mittd.predictor.models import MODELS, build_model
from mittd.predictor.synthetic import synthetic_bundle
from mittd.training import tf_bench
from mittd.training.keras_graph import params_from_keras, to_keras
from mittd.training.tf_bench import PATHS, tf_latency


def _inputs(d: int, n: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, d)) < 0.3).astype(np.float32) if d == 352 else \
        rng.normal(size=(n, d)).astype(np.float32)


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref))))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k][0].dtype == b[k][0].dtype == np.float32 and np.array_equal(a[k][0], b[k][0])
        and np.array_equal(a[k][1], b[k][1]) for k in a)


@pytest.mark.parametrize("name", list(MODELS))
def test_keras_matches_forward_and_round_trips(name: str) -> None:
    graph = build_model(name)
    params = init_params(graph, seed=3)
    model = to_keras(graph, params)
    assert {layer.name for layer in model.layers} >= {n.name for n in graph.dense_nodes()}
    x = _inputs(graph.input_dim)
    assert _rel_err(model(x, training=False).numpy(), forward(graph, params, x)) < 1e-5
    assert _same(params_from_keras(model, graph), params)


@pytest.mark.parametrize("name", ["precise_linear", "good_custom"])
def test_pruned_weights(name: str) -> None:
    b = synthetic_bundle(name, 0.9, "magnitude")
    model = to_keras(b.graph, b.params)
    x = _inputs(b.graph.input_dim)
    assert _rel_err(model(x, training=False).numpy(), forward(b.graph, b.params, x)) < 1e-5
    assert _same(params_from_keras(model, b.graph), b.params)


def test_config_round_trip() -> None:
    """The slice layers serialise, so the model clones (strip_pruning clones)."""
    b = synthetic_bundle("good_custom")
    model = to_keras(b.graph, b.params)
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    x = _inputs(b.graph.input_dim)
    np.testing.assert_array_equal(clone(x).numpy(), model(x).numpy())


def test_strip_pruning_wrappers() -> None:
    graph = build_model("good_custom")
    params = init_params(graph, seed=1)
    sched = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(to_keras(graph, params),
                                                       pruning_schedule=sched)
    wrapped.compile(optimizer=keras.optimizers.SGD(0.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = _inputs(graph.input_dim, 32)
    wrapped.fit(x, np.zeros(len(x), np.int64), epochs=1, batch_size=32, verbose=0,
                callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    got = params_from_keras(wrapped, graph)
    for name, (k, b) in got.items():
        assert abs(float((k == 0).mean()) - 0.5) < 0.01, name
        kept = k != 0
        np.testing.assert_array_equal(k[kept], params[name][0][kept])  # lr 0: only masked
        np.testing.assert_array_equal(b, params[name][1])
    ref = forward(graph, got, x)
    assert _rel_err(wrapped(x, training=False).numpy(), ref) < 1e-5


def test_tf_latency_linnos() -> None:
    b = synthetic_bundle("linnos", 0.5, "magnitude")
    x = _inputs(b.graph.input_dim, 100)
    r = tf_latency(b.graph, b.params, x, batch=64, repeats=2, calls=200, warmup=20,
                   min_s=0.02)
    assert r["tf_version"] and r["tflite_version"]
    for path in PATHS:
        v = r[path]
        assert len(v["samples_us"]) == 200
        assert 0 < v["p50_us"] <= v["p99_us"], path
        assert v["decisions_per_s"] > 0, path
        assert v["max_rel_err"] <= 1e-4, path


def test_tf_latency_refuses_wrong_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    b = synthetic_bundle("heimdall")
    monkeypatch.setattr(tf_bench, "forward", lambda g, p, x: forward(g, p, x) + 1.0)
    with pytest.raises(tf_bench.OutputMismatch, match=r"differ from predictor\.graph\.forward"):
        tf_latency(b.graph, b.params, _inputs(b.graph.input_dim, 8), batch=8, calls=10)
