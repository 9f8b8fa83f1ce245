"""EIE performance model: storage work, analytic scaling, cycle simulation, report."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from mittd.predictor import eie_perf as ep
from mittd.predictor.bundle import BundleError
from mittd.predictor.eie_report import add_commands, parse_pes
from mittd.predictor.graph import GraphBuilder


def kernel_from_rows(rows_by_col: dict[int, list[int]], n_out: int, n_in: int) -> np.ndarray:
    """Keras kernel (in, out) with non-zeros at W[row, col] (W = kernelᵀ)."""
    k = np.zeros((n_in, n_out), np.float32)
    for c, rows in rows_by_col.items():
        k[c, rows] = 1.0
    return k


@pytest.mark.parametrize(("zeros", "pad"), [(0, 0), (15, 0), (16, 1), (31, 1), (32, 2),
                                            (47, 2), (48, 3)])
def test_padding_first_entry(zeros: int, pad: int) -> None:
    k = kernel_from_rows({0: [zeros]}, 64, 2)
    assert ep.pe_column_work(k, 1).tolist() == [[1 + pad, 0]]


@pytest.mark.parametrize(("gap", "pad"), [(15, 0), (16, 1), (31, 1), (32, 2)])
def test_padding_between_entries(gap: int, pad: int) -> None:
    k = kernel_from_rows({1: [3, 3 + gap + 1]}, 80, 3)  # `gap` zeros between
    assert ep.pe_column_work(k, 1).tolist() == [[0, 2 + pad, 0]]


def test_padding_uses_local_rows() -> None:
    # with 2 PEs, rows 0 and 34 both sit on PE 0 at local rows 0 and 17: 16 zeros
    k = kernel_from_rows({0: [0, 34], 1: [1, 33]}, 40, 2)
    w = ep.pe_column_work(k, 2)
    assert w[0].tolist() == [3, 0]
    assert w[1].tolist() == [0, 2]  # local rows 0 and 16: 15 zeros, no padding
    # N larger than the rows: PEs beyond the last row hold nothing
    w8 = ep.pe_column_work(kernel_from_rows({0: [0, 1, 2]}, 3, 1), 8)
    assert w8[:, 0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        ep.pe_column_work(k, 0)


def test_work_equals_nonzeros_when_dense() -> None:
    rng = np.random.default_rng(0)
    k = rng.normal(size=(30, 50)).astype(np.float32)
    for n in (1, 3, 8, 64):
        assert ep.pe_column_work(k, n).sum() == k.size
        assert ep.pe_nonzeros(k, n).sum() == k.size


def _one_dense(n_in: int, n_out: int, kernel: np.ndarray):
    g = GraphBuilder("toy", n_in)
    graph = g.build(g.dense("input", n_out, name="d"))
    return graph, {"d": (kernel, np.zeros(n_out, np.float32))}


def test_analytic_linear_and_no_scaling() -> None:
    k = np.ones((16, 64), np.float32)  # 64 rows: uniform over 1..64 PEs
    graph, params = _one_dense(16, 64, k)
    us = ep.analytic_us(graph, params, [1, 2, 4, 8, 16, 32, 64])
    assert us[1] == pytest.approx(2 * 1024 / 1600)  # 2 ops/weight at 1.6 GOPS, µs
    for n, v in us.items():
        assert v == pytest.approx(us[1] / n)
    skew = np.zeros((16, 64), np.float32)
    skew[:, ::8] = 1.0  # every non-zero in rows 0, 8, 16 …: all on PE 0 for N | 8
    graph, params = _one_dense(16, 64, skew)
    us = ep.analytic_us(graph, params, [1, 2, 4, 8])
    assert len({round(v, 9) for v in us.values()}) == 1


def test_table5_linear_and_scaling() -> None:
    t = ep.table5([1, 2, 64])
    assert t[64]["gops"] == pytest.approx(64 * t[1]["gops"])
    assert t[2]["area_mm2"] == pytest.approx(2 * 0.638)
    assert t[64]["power_w"] == pytest.approx(ep.PAPER_TABLE5[64][2], rel=0.01)
    t7 = ep.table5([64], 7)
    assert t7[64]["power_w"] == pytest.approx(0.0916, rel=0.01)  # the seed's ~0.1 W
    assert t7[64]["area_mm2"] == pytest.approx(40.832 * (7 / 45) ** 2)


def literal_cycles(work: np.ndarray, active: np.ndarray, depth: int = 8) -> int:
    """The cycle rules stepped one cycle at a time (reference for the event form)."""
    n_pe = work.shape[0]
    cols = list(np.nonzero(active)[0])
    fifo: list[list[int]] = [[] for _ in range(n_pe)]
    busy = [0] * n_pe
    t = 0
    while cols or any(fifo) or any(busy):
        if cols and all(len(f) < depth for f in fifo):
            c = cols.pop(0)
            for f in fifo:
                f.append(c)
        for p in range(n_pe):
            if busy[p] == 0 and fifo[p]:
                busy[p] = max(int(work[p, fifo[p].pop(0)]), 1)
            if busy[p]:
                busy[p] -= 1
        t += 1
    return t


def test_sim_single_pe_dense_is_total_work() -> None:
    rng = np.random.default_rng(1)
    work = rng.integers(0, 5, (1, 40))
    active = np.ones(40, bool)
    expect = int(np.maximum(work, 1).sum())  # + 1 pop cycle for each 0-work column
    assert ep.layer_cycles(work, active)[0] == expect == literal_cycles(work[0:1], active)


def test_sim_fifo_stall_hand_case() -> None:
    # PE 0 has all the work (10 cycles) of columns 0..9, PE 1 all of columns 10..19
    work = np.zeros((2, 20), np.int64)
    work[0, :10] = 10
    work[1, 10:] = 10
    active = np.ones(20, bool)
    # unbounded FIFOs: both PEs finish at 10·10 + 10 pops = 110 cycles
    assert int(ep.layer_cycles(work, active, depth=1000)[0]) == 110
    # 8-deep FIFOs: column 10 cannot be broadcast before PE 0 pops column 2 (cycle
    # 20), so PE 1 starts its work late and the layer takes 121 cycles
    got = int(ep.layer_cycles(work, active)[0])
    assert got == 121 == literal_cycles(work, active)


def test_sim_matches_literal_random() -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        n_pe, n_in = int(rng.integers(1, 6)), int(rng.integers(1, 40))
        work = rng.integers(0, 12, (n_pe, n_in)) * (rng.random((n_pe, n_in)) < 0.6)
        active = rng.random(n_in) < 0.7
        depth = int(rng.integers(1, 9))
        assert int(ep.layer_cycles(work, active, depth)[0]) == literal_cycles(
            work, active, depth)


def test_sim_skips_zero_activations() -> None:
    work = np.array([[5, 7, 3, 2]])
    assert int(ep.layer_cycles(work, np.array([0, 1, 0, 1], bool))[0]) == 9
    assert int(ep.layer_cycles(work, np.zeros(4, bool))[0]) == 0


def test_simulate_us_single_pe_dense_inputs() -> None:
    rng = np.random.default_rng(3)
    k = (rng.random((20, 10)) < 0.5).astype(np.float32)
    graph, params = _one_dense(20, 10, k)
    x = np.ones((4, 20))
    r = ep.simulate_us(graph, params, x, [1])[1]
    cycles = np.maximum(ep.pe_column_work(k, 1), 1).sum()
    assert r.mean_us == pytest.approx(cycles / 800.0) == r.p99_us


def test_paper_comparison() -> None:
    pct, row = ep.paper_row("precise_linear", 0.979)  # type: ignore[misc]
    assert pct == 98 and row[32] == 2.01
    cmp = ep.compare_with_paper("good_custom", 0.91, {1: 51.0, 32: 1.0})
    assert cmp["paper_sparsity_pct"] == 90
    assert cmp["rows"] == [{"pes": 1, "ours_us": 51.0, "paper_us": 25.5, "ratio": 2.0}]


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mittd")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_report_writes_png_and_json(tmp_path, capsys) -> None:
    from mittd.predictor.bundle import save_bundle
    from mittd.predictor.synthetic import synthetic_bundle

    path = tmp_path / "gc.mittd"
    save_bundle(synthetic_bundle("good_custom", 0.9), path)
    png, js = tmp_path / "l.png", tmp_path / "r.json"
    assert _cli(["eie", "report", str(path), "--pes", "1,4,16", "--samples", "20",
                 "--png", str(png), "--json", str(js)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(js.read_text())
    assert doc["results"][0]["paper_analytic"]["paper_sparsity_pct"] == 90
    out = capsys.readouterr().out
    assert "Table 5" in out and "good_custom" in out


def test_report_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="--pes"):
        parse_pes("1,x")
    with pytest.raises(ValueError, match="--pes"):
        parse_pes("0,2")
    with pytest.raises(BundleError, match="no such bundle"):
        _cli(["eie", "report", str(tmp_path / "missing.mittd")])
    bad = tmp_path / "bad.mittd"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BundleError):
        _cli(["eie", "report", str(bad)])


def test_performance_model_counts_the_functional_engines_entries() -> None:
    """The work the simulator charges is the storage the functional engine builds."""
    from mittd.predictor.eie import encode_layer
    from mittd.predictor.eie_perf import pe_column_work

    rng = np.random.default_rng(11)
    for n_pe in (1, 3, 8, 64):
        k = rng.standard_normal((40, 70)).astype(np.float32)
        k[rng.random(k.shape) < 0.93] = 0.0
        assert np.array_equal(encode_layer(k, n_pe).work, pe_column_work(k, n_pe))
