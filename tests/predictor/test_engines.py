"""Every engine computes the reference network: logits within 1e-5 relative and
the same decisions, batch-1 and batched, dense and pruned."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mittd.predictor.engines import ENGINES, make_engine
from mittd.predictor.formats import (
    KIND_BLOCK,
    KIND_CSC,
    KIND_CSR,
    KIND_DCOL,
    KIND_DENSE,
    KIND_SELL,
    decode,
    encode,
)
from mittd.predictor.graph import GraphBuilder, decision_margin, forward, init_params
from mittd.predictor.models import build_model
from mittd.predictor.plan import compact_nodes
from mittd.predictor.synthetic import magnitude_prune, node_prune_to, simd_prune

RTOL = 1e-5


def close(got: np.ndarray, ref: np.ndarray) -> bool:
    scale = np.maximum(1.0, np.abs(ref))
    return bool((np.abs(got - ref) <= RTOL * scale).all())


def inputs(dim: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, dim)) < 0.35).astype(np.float32)


CASES = [
    ("precise_linear", "magnitude", 0.98),
    ("precise_linear", "simd", 0.95),
    ("precise_linear", "node", 0.98),
    ("precise_linear_hist", "node", 0.95),
    ("good_custom", "magnitude", 0.0),
    ("good_custom", "magnitude", 0.9),
    ("good_custom", "node", 0.95),
    ("linnos", "magnitude", 0.5),
    ("heimdall", "magnitude", 0.0),
]


def _params(model: str, method: str, sparsity: float):  # type: ignore[no-untyped-def]
    g = build_model(model)
    p = init_params(g, seed=7)
    if sparsity:
        p = {"magnitude": lambda: magnitude_prune(g, p, sparsity),
             "simd": lambda: simd_prune(g, p, sparsity),
             "node": lambda: node_prune_to(g, p, sparsity)}[method]()
    return g, p


@pytest.mark.parametrize(("model", "method", "sparsity"), CASES)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_engine_matches_reference(model: str, method: str, sparsity: float,
                                  engine: str) -> None:
    g, p = _params(model, method, sparsity)
    x = inputs(g.input_dim, 64, seed=1)
    ref = forward(g, p, x)
    e = make_engine(engine, g, p, sample=x[:16])
    batched = e.logits(x)
    assert close(batched, ref)
    one = np.stack([e.logits1(v) for v in x])
    assert close(one, ref)
    # the decision at P(slow) > 0.5 is the same everywhere
    assert ((decision_margin(g, batched) > 0) == (decision_margin(g, ref) > 0)).all()
    e.input[:] = x[3]
    assert e.margin1() == pytest.approx(float(decision_margin(g, ref[3:4])[0]), abs=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    n_in=st.integers(1, 40), hidden=st.integers(1, 40), n_out=st.integers(1, 3),
    density=st.floats(0.0, 1.0), seed=st.integers(0, 2**16),
    engine=st.sampled_from(sorted(ENGINES)),
)
def test_random_networks(n_in: int, hidden: int, n_out: int, density: float, seed: int,
                         engine: str) -> None:
    b = GraphBuilder("random", n_in)
    h1 = b.dense("input", hidden, name="h1")
    h2 = b.dense("input", hidden, name="h2")
    j = b.relu(b.subtract(b.add(h1, h2), b.relu(h2)))
    g = b.build(b.dense(b.concat(j, "input"), n_out, name="out"), head="sigmoid")
    rng = np.random.default_rng(seed)
    p = init_params(g, seed)
    p = {k: (np.where(rng.random(w.shape) < density, w, 0).astype(np.float32), bb)
         for k, (w, bb) in p.items()}
    x = (rng.standard_normal((9, n_in)) * (rng.random((9, n_in)) < 0.5)).astype(np.float32)
    e = make_engine(engine, g, p, sample=x)
    ref = forward(g, p, x)
    assert close(e.logits(x), ref)
    assert close(np.stack([e.logits1(v) for v in x]), ref)


@pytest.mark.parametrize("kind", [KIND_DENSE, KIND_CSR, KIND_BLOCK, KIND_CSC, KIND_SELL,
                                  KIND_DCOL])
@pytest.mark.parametrize("group", [8, 16])
def test_formats_are_lossless(kind: int, group: int) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((13, 37)).astype(np.float32)
    w[rng.random(w.shape) < 0.8] = 0
    w[4] = 0  # an empty row
    w[:, 5] = 0  # an empty column
    enc = encode(kind, w, group)
    assert np.array_equal(decode(enc, 13, 37, group), w)


def test_block_format_keeps_aligned_groups() -> None:
    w = np.zeros((2, 20), np.float32)
    w[0, 9] = 1.0  # group [8, 16)
    w[1, 17] = 2.0  # group [16, 24), past the end of the row: padded
    enc = encode(KIND_BLOCK, w, 8)
    assert enc.indices.tolist() == [0, 1, 2, 8, 16]  # row pointers, then group starts
    assert enc.stored == 16


def test_sell_format_sorts_rows_and_pads_chunks() -> None:
    """Rows sorted by their non-zeros (perm keeps where each belongs), chunks of 8
    padded to their longest row with zero weights on the row's last column, lanes
    past the last row marked -1."""
    w = np.zeros((10, 6), np.float32)
    w[7, [0, 2, 5]] = [1, 2, 3]  # the longest row: first in the first chunk
    w[3, 4] = 4.0
    enc = encode(KIND_SELL, w)
    ptr, perm = enc.indices[:3], enc.indices[3:19]
    cols = enc.indices[19:].view(np.uint16).reshape(-1, 8)  # 16-bit ids, two per int32
    vals = enc.values.reshape(-1, 8)
    assert ptr.tolist() == [0, 3, 3]  # chunk 0: 3 slices; chunk 1 (rows without weights): 0
    assert perm[:2].tolist() == [7, 3] and sorted(perm[:10].tolist()) == list(range(10))
    assert perm[10:].tolist() == [-1] * 6
    assert cols[:, 0].tolist() == [0, 2, 5] and vals[:, 0].tolist() == [1, 2, 3]
    assert cols[:, 1].tolist() == [4, 4, 4] and vals[:, 1].tolist() == [4, 0, 0]
    assert enc.stored == 24


def test_sell_refuses_layers_too_wide_for_16_bit_ids_and_auto_skips_it() -> None:
    from mittd.predictor.engines import choose_kinds
    from mittd.predictor.formats import SELL_MAX_INPUTS

    n_in = SELL_MAX_INPUTS + 1
    with pytest.raises(ValueError, match="65,537 inputs does not fit 16-bit column ids"):
        encode(KIND_SELL, np.zeros((2, n_in), np.float32))
    encode(KIND_SELL, np.zeros((2, SELL_MAX_INPUTS), np.float32))  # the widest that fits
    b = GraphBuilder("wide", n_in)
    g = b.build(b.dense("input", 2, name="l"), head="sigmoid")
    w = np.zeros((n_in, 2), np.float32)
    w[[0, n_in - 1], [0, 1]] = 1.0
    kinds, timings = choose_kinds(g, {"l": (w, np.zeros(2, np.float32))}, repeats=2)
    assert "sell" not in timings["l"] and kinds["l"] != KIND_SELL


def test_sell_scalar_path_matches_the_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel built for a CPU without AVX2 gathers (scalar loads) gives the
    same sums as the one this CPU runs."""
    import numba

    from mittd.predictor import kernels as K

    def build():  # type: ignore[no-untyped-def]
        @numba.njit(cache=False)
        def chunk(vals, cols, x, start, count):  # type: ignore[no-untyped-def]
            return K._sell_chunk(vals, cols, x, start, count)
        return chunk

    rng = np.random.default_rng(3)
    w = rng.standard_normal((20, 50)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0
    enc = encode(KIND_SELL, w)
    cols = enc.indices[4 + 24:]
    x = rng.standard_normal(50).astype(np.float32)
    def run():  # type: ignore[no-untyped-def]
        f = build()
        sums = [f(enc.values, cols, x, int(enc.indices[c]),
                  int(enc.indices[c + 1] - enc.indices[c])) for c in range(3)]
        return sums, "vgatherdps" in f.inspect_asm(f.signatures[0])

    here, gathers = run()
    assert gathers == K.HAVE_AVX2
    monkeypatch.setattr(K, "HAVE_AVX2", False)
    scalar, gathers = run()
    assert not gathers
    assert np.allclose(np.array(here), np.array(scalar), rtol=1e-6, atol=1e-6)
    perm = enc.indices[4:4 + 24]
    ref = w @ x
    for c in range(3):
        for lane in range(8):
            r = perm[c * 8 + lane]
            if r >= 0:
                assert here[c][lane] == pytest.approx(ref[r], rel=1e-5, abs=1e-5)


def test_node_compaction_removes_dead_nodes_exactly() -> None:
    g = build_model("precise_linear")
    p = node_prune_to(g, init_params(g, 1), 0.98)
    small_g, small_p, removed = compact_nodes(g, p)
    assert removed["fc1"] > 300
    assert small_g.kernel_shapes()["fc2"][0] == 352 - removed["fc1"]
    x = inputs(352, 32)
    assert np.allclose(forward(small_g, small_p, x), forward(g, p, x), rtol=0, atol=1e-9)


def _chain(kernels: list[np.ndarray]):  # type: ignore[no-untyped-def]
    """A ReLU chain with these kernels (in, out) and random biases."""
    b = GraphBuilder("chain", kernels[0].shape[0])
    x = "input"
    for i, k in enumerate(kernels[:-1]):
        x = b.relu(b.dense(x, k.shape[1], name=f"h{i}"))
    g = b.build(b.dense(x, kernels[-1].shape[1], name="out"), head="sigmoid")
    rng = np.random.default_rng(3)
    names = [d.name for d in g.dense_nodes()]
    return g, {n: (k.astype(np.float32), rng.uniform(-0.5, 0.5, k.shape[1]).astype(np.float32))
               for n, k in zip(names, kernels, strict=True)}


def test_compaction_follows_dead_units_back_to_the_input() -> None:
    """The output reads one unit of h1, which reads one unit of h0: every other unit
    of both is dead, though h1's dead units read all of h0 (one pass keeps them)."""
    rng = np.random.default_rng(0)
    k0 = rng.normal(size=(6, 5))
    k1 = rng.normal(size=(5, 4))
    k1[:, 2] = 0.0
    k1[3, 2] = 1.5  # h1 unit 2 reads h0 unit 3 only
    k2 = np.zeros((4, 2))
    k2[2] = [0.7, -0.4]  # the output reads h1 unit 2 only
    g, p = _chain([k0, k1, k2])
    small_g, small_p, removed = compact_nodes(g, p)
    assert removed == {"h0": 4, "h1": 3, "out": 0}
    assert small_g.kernel_shapes() == {"h0": (6, 1), "h1": (1, 1), "out": (1, 2)}
    x = inputs(6, 64)
    assert np.array_equal(forward(small_g, small_p, x), forward(g, p, x))


def test_compaction_of_a_network_cut_in_two_leaves_its_constant() -> None:
    """No weight of the output layer reads anything: the output is its bias whatever
    the input, and compaction leaves one unit, weightless, in every layer."""
    rng = np.random.default_rng(1)
    g, p = _chain([rng.normal(size=(6, 5)), rng.normal(size=(5, 4)), np.zeros((4, 2))])
    small_g, small_p, _ = compact_nodes(g, p)
    assert small_g.kernel_shapes() == {"h0": (6, 1), "h1": (1, 1), "out": (1, 2)}
    assert not any(k.any() for k, _ in small_p.values())
    x = inputs(6, 64)
    assert np.array_equal(forward(small_g, small_p, x), forward(g, p, x))
    for name in ("csr", "sell", "dcol", "auto"):
        assert close(make_engine(name, g, p).logits(x), forward(g, p, x))


def test_auto_keeps_dense_layers_dense_and_sparse_ones_sparse() -> None:
    g, p = _params("precise_linear", "magnitude", 0.98)
    dense_g, dense_p = _params("good_custom", "magnitude", 0.0)
    sparse = make_engine("auto", g, p)
    dense = make_engine("auto", dense_g, dense_p)
    assert sparse.describe()["layers"]["fc1"]["format"] not in ("dense", "dcol")
    layer = dense.describe()["layers"]["die_load"]
    assert layer["format"] in ("dense", "dcol")  # dense storage: every weight, rows or columns
    assert layer["stored_weights"] == dense_g.kernel_shapes()["die_load"][0] * 128


def test_dcol_skips_zero_inputs_and_keeps_its_padding_zero() -> None:
    """A dcol layer of 13 outputs stores whole passes of 32 sums: the 19 past its
    last output stay zero (whatever the inputs), so the next layer, reading 8 at a
    time, sees none of them; an input slice narrower than its region reads no
    neighbour's values."""
    b = GraphBuilder("slices", 12)
    a = b.dense(b.slice("input", 0, 5), 13, name="a")
    c = b.dense(b.relu(a), 3, name="c")
    g = b.build(c, head="sigmoid")
    p = init_params(g, 4)
    e = make_engine("dcol", g, p)
    assert set(e.plan.kinds.values()) == {"dcol"}
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 12)).astype(np.float32) * (rng.random((20, 12)) < 0.5)
    assert close(np.stack([e.logits1(v) for v in x]), forward(g, p, x))
    plan = e.plan
    out_a = plan.act_base + int(plan.ints[4 + 1])  # record 0: layer a, its out offset
    assert not plan.arena[out_a + 13:out_a + 32].any()


def test_compiled_engine_does_not_allocate_per_call() -> None:
    g, p = _params("precise_linear", "magnitude", 0.95)
    e = make_engine("csr", g, p)
    out1 = e.run1()
    out2 = e.run1()
    assert out1.base is out2.base  # the same arena view every call
    assert np.shares_memory(e.input, e.plan.arena)


def test_relabel_units_is_exact_and_puts_sell_rows_in_order() -> None:
    """Hidden units renumbered by their non-zeros: the same network (outputs within
    rounding), SELL layers then store 8 rows at once (record field 11); a space a
    concatenation reads keeps its order."""
    from mittd.predictor import kernels as K
    from mittd.predictor.engines import CompiledEngine
    from mittd.predictor.plan import relabel_units

    g, p = _params("precise_linear", "magnitude", 0.95)
    q = relabel_units(g, p)
    x = inputs(g.input_dim, 32)
    assert close(forward(g, q, x), forward(g, p, x))
    nnz = (q["fc2"][0] != 0).sum(axis=0)
    assert (np.diff(nnz) <= 0).all()  # most non-zeros first
    assert not np.array_equal(q["fc2"][0], p["fc2"][0])
    def in_order(params):  # type: ignore[no-untyped-def]
        ints = CompiledEngine(g, params, {d.name: KIND_SELL for d in g.dense_nodes()}
                              ).plan.ints
        return [int(ints[K.HEADER + r * K.RECORD + 11]) for r in range(ints[0])]

    assert in_order(q) == [1] * len(g.dense_nodes())
    assert sum(in_order(p)[:-1]) == 0  # unsorted hidden rows go through perm
    b = GraphBuilder("cat", 6)
    h = b.dense("input", 5, name="h")
    cat = b.build(b.dense(b.concat(h, "input"), 1, name="out"), head="sigmoid")
    cp = init_params(cat, 1)
    assert np.array_equal(relabel_units(cat, cp)["h"][0], cp["h"][0])
