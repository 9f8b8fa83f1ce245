"""``mittd model describe`` and ``mittd bench predictor`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from mittd.predictor.bundle import save_bundle
from mittd.predictor.synthetic import synthetic_bundle
from tests.conftest import run_cli


def test_describe_model_prints_table1_next_to_the_paper() -> None:
    r = run_cli("model", "describe", "precise_linear")
    assert r.returncode == 0, r.stderr
    assert "583,906" in r.stdout and "583,520" in r.stdout and "352x352" in r.stdout


def test_describe_bundle_shows_layer_sparsity(tmp_path: Path) -> None:
    path = tmp_path / "g.mittd"
    save_bundle(synthetic_bundle("good_custom", 0.9, "magnitude"), path)
    r = run_cli("model", "describe", "--json", str(path))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["table1"]["layers"] == 12
    assert abs(info["bundle"]["kernel_sparsity"] - 0.9) < 0.01
    assert {row["layer"] for row in info["bundle"]["layers"]} >= {"die_load", "logits"}


def test_describe_refuses_a_corrupt_bundle_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "x.mittd"
    path.write_bytes(b"PK\x03\x04 not really")
    r = run_cli("model", "describe", str(path))
    assert r.returncode == 2
    assert "corrupted or truncated" in r.stderr and "Traceback" not in r.stderr


def test_bench_predictor_smoke(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    r = run_cli("bench", "predictor", "--models", "good_custom", "--sparsity", "0.9",
                "--methods", "node", "--engines", "csr", "auto", "--calls", "300",
                "--no-tf", "--quiet", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "| auto |" in r.stdout
    res = json.loads(out.read_text())
    (cfg,) = res["configs"]
    for name in ("csr", "auto"):
        row = cfg["engines"][name]
        assert 0 < row["engine"]["p50_us"] <= row["engine"]["p99_us"]
        assert row["batch_per_s"] > 0
    fl = cfg["floor"]  # the floor on this CPU, and each engine's ratio to it
    assert 0 < fl["macs"] <= fl["nonzeros"] and fl["floor_us"] > 0
    assert "floor on this CPU" in r.stdout and "× floor" in r.stdout
    assert set(res["rates"]) == {"ns_per_mac", "ns_per_byte", "call_ns", "ns_per_dense_mac"}


def test_bench_predictor_gives_tf_the_compacted_shapes(tmp_path: Path) -> None:
    """Node pruning's gain is the compaction: TF Lite runs the compacted network too,
    never the padded original (the docs once compared against that)."""
    import importlib.util

    import pytest

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("needs the train extra")
    out = tmp_path / "b.json"
    r = run_cli("bench", "predictor", "--models", "precise_linear", "--sparsity", "0.95",
                "--methods", "node", "--engines", "auto", "--calls", "200", "--quiet",
                "--json", str(out))
    assert r.returncode == 0, r.stderr
    (cfg,) = json.loads(out.read_text())["configs"]
    assert cfg["tf"]["units_removed"] > 1000 and cfg["tf"]["tflite"]["p50_us"] > 0
    assert cfg["onnx"]["units_removed"] == cfg["tf"]["units_removed"]
    assert cfg["onnx"]["onnxruntime"]["p50_us"] > 0
    assert "compacted (" in r.stdout and "| onnxruntime |" in r.stdout
    assert "faster than ONNX Runtime" in r.stdout
    table = [ln for ln in r.stdout.splitlines() if ln.startswith("|")]
    assert len({ln.count("|") for ln in table}) == 1  # the peers' rows fill every column
    assert "fused p50" in table[0] and "model per call" in table[0]
    fused = cfg["engines"]["auto"]["fused"]  # featurise + predict in the fused kernel
    assert 0 < fused["p50_us"] <= fused["p99_us"] and cfg["engines"]["auto"]["engine_kernel_us"] > 0
    call = cfg["engines"]["auto"]["model_call"]  # its baseline, the model alone, same clock
    assert 0 < call["p50_us"] <= call["p99_us"]
