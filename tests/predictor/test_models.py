"""The seed's models as graphs: Table 1's shapes, valid graphs, the reference pass."""

from __future__ import annotations

import numpy as np
import pytest

from mittd.predictor.graph import (
    Graph,
    GraphBuilder,
    GraphError,
    forward,
    init_params,
    p_slow,
)
from mittd.predictor.models import PAPER_TABLE1, build_model


@pytest.mark.parametrize("name", ["precise_linear", "good_custom"])
def test_table1_rows_within_two_percent(name: str) -> None:
    layers, kernel, weights, _ops = PAPER_TABLE1[name]
    d = build_model(name).describe()
    assert d["layers"] == layers
    assert d["max_kernel"] == kernel
    assert abs(d["weights"] - weights) / weights <= 0.02
    assert d["input_dim"] == 352


def test_good_custom_is_storage_aware() -> None:
    g = build_model("good_custom")
    ops = {n.op for n in g.nodes}
    assert {"add", "subtract", "relu", "dense"} <= ops
    # dense layers are linear; non-linearity only through explicit relu joins
    users = {n.name: [u.op for u in g.nodes if n.name in u.inputs] for n in g.nodes}
    assert any("subtract" in users[d.name] for d in g.dense_nodes())


def test_baselines_shapes() -> None:
    assert build_model("linnos").kernel_shapes() == {"fc1": (31, 256), "logits": (256, 2)}
    assert build_model("heimdall").kernel_shapes() == {
        "fc1": (11, 128), "fc2": (128, 16), "logits": (16, 1)}


def test_precise_linear_hist_is_precise_linear_on_a_wider_input() -> None:
    from mittd.predictor.features import make_featuriser
    from mittd.predictor.models import MODEL_FEATURISER

    pl, plh = build_model("precise_linear"), build_model("precise_linear_hist")
    feat = make_featuriser({"name": MODEL_FEATURISER["precise_linear_hist"]})
    assert plh.input_dim == feat.dim == 394
    assert plh.kernel_shapes() == {**pl.kernel_shapes(), "fc1": (394, 352)}
    assert [n.op for n in plh.nodes] == [n.op for n in pl.nodes]
    d = plh.describe()
    assert (d["layers"], d["max_kernel"]) == (8, "394x352")
    assert d["weights"] == plh.count_weights() == 583_906 + 42 * 352 == 598_690


def test_graph_round_trips_through_json() -> None:
    g = build_model("good_custom")
    assert Graph.from_dict(g.to_dict()) == g


def test_invalid_graphs_are_refused() -> None:
    b = GraphBuilder("bad", 8)
    x = b.dense("input", 4)
    y = b.dense("input", 5)
    with pytest.raises(GraphError, match="equal width"):
        b.build(b.add(x, y))
    with pytest.raises(GraphError, match="not defined"):
        Graph.from_dict({"name": "g", "input_dim": 4, "output": "d", "nodes": [
            {"name": "input", "op": "input"},
            {"name": "d", "op": "dense", "inputs": ["nope"], "attrs": {"units": 2}}]})
    with pytest.raises(GraphError, match="unknown op"):
        Graph.from_dict({"name": "g", "input_dim": 4, "output": "x", "nodes": [
            {"name": "input", "op": "input"}, {"name": "x", "op": "conv", "inputs": ["input"]}]})


def test_reference_forward_by_hand() -> None:
    b = GraphBuilder("tiny", 4)
    s = b.sum_slices("input", 0, 2, 2)
    c = b.slice("input", 0, 2)
    h = b.relu(b.subtract(b.dense(s, 2, name="a"), b.dense(c, 2, name="b")))
    g = b.build(b.dense(b.concat(h, s), 2, name="out"))
    eye = np.eye(2, dtype=np.float32)
    params = {"a": (2 * eye, np.zeros(2, np.float32)), "b": (eye, np.ones(2, np.float32)),
              "out": (np.ones((4, 2), np.float32), np.array([0.0, 1.0], np.float32))}
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    # s = [4, 6]; a = [8, 12]; b = [2, 3]; h = relu([6, 9]); concat = [6, 9, 4, 6]
    out = forward(g, params, x)
    assert out.tolist() == [[25.0, 26.0]]
    assert p_slow(g, out)[0] == pytest.approx(1 / (1 + np.exp(-1.0)))


def test_init_params_match_the_graph() -> None:
    g = build_model("precise_linear")
    p = init_params(g, seed=3)
    assert {k: v[0].shape for k, v in p.items()} == g.kernel_shapes()
    assert sum(k.size + b.size for k, b in p.values()) == g.count_weights()
