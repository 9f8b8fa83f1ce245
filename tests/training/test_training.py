"""End to end: train → prune → compress on a small synthetic labelled trace whose
slow IOs are predictable from their LBAs; exported bundles decide exactly as the
Keras models do."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_model_optimization")

from mittd.predictor.bundle import load_bundle
from mittd.predictor.engines import make_engine
from mittd.predictor.graph import decision_margin
from mittd.traces.schema import build_metadata, make_batch, read_trace, write_trace
from tests.conftest import run_cli


def _trace(path: Path, n: int = 3000, seed: int = 0, spread: float = 0.0) -> Path:
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(20, 80, n))
    offset = rng.integers(0, 1 << 18, n) * 4096
    hot = offset < (1 << 28)  # the first 256 MiB is "busy": slow
    lat = np.where(hot, 2500.0, 90.0) * rng.uniform(0.8, 1.2, n)
    lat *= np.exp(rng.normal(0.0, spread, n))  # a long tail, for threshold ladders
    ops = (rng.random(n) < 0.2).astype(np.int8)
    batch = make_batch(ts, lat, ops, offset, np.full(n, 4096), "synthetic")
    write_trace(path, pa.Table.from_batches([batch]), build_metadata("test", None))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from mittd.training.pipeline import train_flow

    d = tmp_path_factory.mktemp("train")
    trace = _trace(d / "t.parquet")
    out = d / "m.mittd"
    result = train_flow([str(trace)], "precise_linear", "1000us", out, epochs=3,
                        batch_size=128, learning_rate=1e-3, seed=0, test_fraction=0.3,
                        ladder_k=None, reads_only=False, report_dir=d / "report",
                        sweep=False, say=lambda _: None, verbose=0)
    assert result["agreement"] == 1.0
    assert result["metrics"]["roc_auc"] > 0.9  # the rule is learnable from LBA bits
    return trace, out


def _agreement(bundle_path: Path, x: np.ndarray) -> float:
    from mittd.training.keras_graph import to_keras

    b = load_bundle(bundle_path)
    keras_logits = to_keras(b.graph, b.params).predict(x, verbose=0)
    eng = make_engine("auto", b.graph, b.params).logits(x)
    return float(((decision_margin(b.graph, keras_logits) > 0)
                  == (decision_margin(b.graph, eng) > 0)).mean())


def test_train_writes_a_loadable_bundle_and_reports(trained: tuple[Path, Path]) -> None:
    trace, out = trained
    b = load_bundle(out)
    assert b.featuriser["name"] == "lba"
    assert b.latency_thresholds_us() == [1000.0]
    assert b.provenance["data"]["sources"] == [str(trace.resolve())]
    report = out.parent / "report"
    assert (report / "precise_linear_dense.json").exists()
    assert (report / "precise_linear_dense_confusion.png").stat().st_size > 1000


def test_train_chooses_the_policy_on_the_validation_window(trained: tuple[Path, Path]) -> None:
    from mittd.predictor.policy import DecisionPolicy

    _, out = trained
    b = load_bundle(out)
    data = b.provenance["data"]["traces"][0]
    spec = b.provenance["policy_selection"]
    # the window lies between the training and the test part, never inside the test part
    assert data["train_ts_us"][1] < spec["window_ts_us"][0] <= spec["window_ts_us"][1]
    assert spec["window_ts_us"][1] == data["split_ts_us"] <= data["test_ts_us"][0]
    assert spec["reject_budget"] == 0.05 and spec["replica"] is None
    p = DecisionPolicy.from_dict(b.policy)
    assert p.reason and 0 < p.validation["reads"] <= data["n_validation"]
    assert p.max_reject_share <= 0.05
    cut = b.decision_thresholds()[0]
    assert (cut == 1.0) if p.mode == "hedge" else (0.0 < cut < 1.0)
    assert b.provenance["validation_metrics"]["roc_auc"] > 0.5


@pytest.mark.parametrize(("method", "sparsity"), [("magnitude", 0.9), ("simd", 0.9),
                                                  ("node", 0.9)])
def test_prune_hits_the_sparsity_and_keeps_decisions(trained: tuple[Path, Path],
                                                     method: str, sparsity: float) -> None:
    from mittd.training.pipeline import prune_flow

    _, out = trained
    pruned = out.with_name(f"p_{method}.mittd")
    r = prune_flow(out, method, sparsity, pruned, group=8, epochs=1, traces=None, seed=0,
                   report_dir=None, say=lambda _: None)
    b = load_bundle(pruned)
    total = sum(k.size for k, _ in b.params.values())
    zeros = sum(int((k == 0).sum()) for k, _ in b.params.values())
    assert zeros / total >= sparsity - 0.01
    assert b.provenance["pruning"] == method
    assert r["decision_us"] > 0
    x = (np.random.default_rng(1).random((500, 352)) < 0.1).astype(np.float32)
    assert _agreement(pruned, x) == 1.0


def test_compress_kmeans4_leaves_16_values_per_layer(trained: tuple[Path, Path]) -> None:
    from mittd.training.pipeline import compress_flow

    _, out = trained
    small = out.with_name("k4.mittd")
    compress_flow(out, "kmeans4", small, finetune=False, traces=None, seed=0,
                  say=lambda _: None)
    b = load_bundle(small)
    for k, _ in b.params.values():
        assert len(np.unique(k[k != 0])) <= 16
    assert "codebooks" in b.hints


def test_train_cli_refuses_a_trace_without_latency(tmp_path: Path, data: Path) -> None:
    r = run_cli("train", str(data / "alibaba_sample.csv"), "-o", str(tmp_path / "m.mittd"),
                "--quiet")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_training_is_repeatable_with_a_seed(tmp_path: Path) -> None:
    from mittd.training.dataset import load_dataset
    from mittd.training.train import train

    trace = _trace(tmp_path / "t.parquet", n=1500, seed=3)
    ds = load_dataset([str(trace)], "lba", slo="1000us")
    a = train("precise_linear", ds, epochs=1, batch_size=128, seed=5, verbose=0)
    b = train("precise_linear", ds, epochs=1, batch_size=128, seed=5, verbose=0)
    for name, (k, bias) in a.params.items():
        assert np.array_equal(k, b.params[name][0]) and np.array_equal(bias, b.params[name][1])


def test_multi_threshold_head(tmp_path: Path) -> None:
    from mittd.training.pipeline import train_flow

    trace = _trace(tmp_path / "t.parquet", n=2000, seed=4, spread=0.6)
    out = tmp_path / "ladder.mittd"
    train_flow([str(trace)], "precise_linear", "auto", out, epochs=1, batch_size=128,
               learning_rate=1e-3, seed=0, test_fraction=0.3, ladder_k=3, reads_only=False,
               report_dir=None, sweep=False, say=lambda _: None, verbose=0)
    b = load_bundle(out)
    assert b.graph.head == "sigmoid" and b.graph.output_dim == len(b.latency_thresholds_us())
    assert b.latency_thresholds_us() == sorted(b.latency_thresholds_us())


def test_tune_reports_a_pareto_front(tmp_path: Path) -> None:
    from mittd.training.tune import render, tune

    trace = _trace(tmp_path / "t.parquet", n=2000, seed=6)
    result = tune([str(trace)], "good_custom", floor=0.5, trials=3, slo="1000us", epochs=1,
                  prune_epochs=1, say=lambda _: None)
    assert result["trials"] == 3
    assert result["pareto"], "a non-empty Pareto front"
    lat = [r["decision_us"] for r in result["pareto"]]
    acc = [r["accuracy"] for r in result["pareto"]]
    assert lat == sorted(lat)
    # on a Pareto front, a slower configuration must be more accurate
    assert all(a2 >= a1 for a1, a2 in pairwise(acc))
    assert result["best"] is not None
    assert "Pareto front" in render(result, "accuracy")


def test_heimdall_single_sigmoid_output(tmp_path: Path) -> None:
    from mittd.training.pipeline import train_flow

    trace = _trace(tmp_path / "t.parquet", n=2000, seed=8)
    out = tmp_path / "h.mittd"
    r = train_flow([str(trace)], "heimdall", "1000us", out, epochs=1, batch_size=128,
                   learning_rate=1e-3, seed=0, test_fraction=0.3, ladder_k=None,
                   reads_only=False, report_dir=None, sweep=False, say=lambda _: None,
                   verbose=0)
    assert r["agreement"] == 1.0
    assert load_bundle(out).featuriser["name"] == "heimdall"


def test_precise_linear_hist_trains_prunes_and_matches_keras(tmp_path: Path) -> None:
    from mittd.predictor.features import make_featuriser
    from mittd.training.pipeline import prune_flow, train_flow

    trace = _trace(tmp_path / "t.parquet", n=2000, seed=9)
    out = tmp_path / "plh.mittd"
    r = train_flow([str(trace)], "precise_linear_hist", "1000us", out, epochs=2,
                   batch_size=128, learning_rate=1e-3, seed=0, test_fraction=0.3,
                   ladder_k=None, reads_only=False, report_dir=None, sweep=False,
                   say=lambda _: None, verbose=0)
    assert r["agreement"] == 1.0
    b = load_bundle(out)
    assert b.graph.name == "precise_linear_hist" and b.graph.input_dim == 394
    assert b.featuriser["name"] == "lba_hist" and len(b.featuriser["min"]) == 11
    x = make_featuriser(b.featuriser).encode_trace(read_trace(trace))  # fitted bounds kept
    assert x.shape == (2000, 394)
    pruned = tmp_path / "plh_node.mittd"
    prune_flow(out, "node", 0.9, pruned, group=8, epochs=1, traces=None, seed=0,
               report_dir=None, say=lambda _: None)
    p = load_bundle(pruned)
    assert p.featuriser == b.featuriser and p.provenance["sparsity"] >= 0.89
    assert _agreement(out, x) == 1.0
    assert _agreement(pruned, x) == 1.0
