"""The ONNX form of every model computes ``predictor.graph.forward`` (the peer is
checked before it is timed), and is timed through IO binding."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from mittd.predictor.graph import forward, init_params
from mittd.predictor.models import build_model
from mittd.predictor.synthetic import node_prune_to
from mittd.training.onnx_bench import _session, onnx_latency, to_onnx


@pytest.mark.parametrize("model", ["precise_linear", "precise_linear_hist", "good_custom",
                                   "linnos", "heimdall"])
def test_onnx_form_is_the_network(model: str) -> None:
    g = build_model(model)
    p = init_params(g, seed=3)
    x = (np.random.default_rng(1).random((16, g.input_dim)) < 0.3).astype(np.float32)
    got = _session(to_onnx(g, p)).run(["logits"], {"input": x})[0]
    assert np.allclose(got, forward(g, p, x), rtol=1e-5, atol=1e-5)


def test_latency_on_a_node_pruned_network() -> None:
    from mittd.predictor.plan import compact_nodes

    g = build_model("precise_linear")
    small_g, small_p, _ = compact_nodes(g, node_prune_to(g, init_params(g, 1), 0.95))
    x = (np.random.default_rng(2).random((64, 352)) < 0.1).astype(np.float32)
    r = onnx_latency(small_g, small_p, x, batch=32, calls=200, warmup=20, min_s=0.01)
    o = r["onnxruntime"]
    assert 0 < o["p50_us"] <= o["p99_us"] and o["decisions_per_s"] > 0
    assert o["max_rel_err"] <= 1e-4
