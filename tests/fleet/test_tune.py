"""``mittd fleet tune`` on a local 2-CPU Ray: per device (one ``mittd tune`` task each)
and per class (one Ray Tune + OptunaSearch run), a corrupt trace is an error row and
the run is "partial" (exit 3); a class mixing models is a one-line error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_model_optimization")
pytest.importorskip("optuna")

from mittd.daemon.cli import main
from mittd.fleet.tune import pareto_front, suggest
from tests.fleet import lba_trace as _trace

FAST = ["--trials", "2", "--epochs", "1", "--prune-epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local 2-CPU Ray for the module (run_fleet and Ray Tune use it as it is)."""
    import ray

    from mittd.fleet.cluster import ray_session

    if ray.is_initialized():
        ray.shutdown()
    with ray_session(2, object_store=256 << 20):
        yield


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fleet")
    _trace(d / "sda.parquet", seed=1)
    _trace(d / "sdb.parquet", seed=2)
    (d / "sdc.parquet").write_bytes(b"PAR1 this is not a Parquet file")
    return d


@pytest.mark.slow
def test_per_device_rows_and_a_corrupt_trace_is_an_error_row(
        local_ray: None, fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["fleet", "tune", str(fleet), "-o", str(out), "--json",
                 str(tmp_path / "t.json"), *FAST]) == 3  # partial
    doc = json.loads((out / "tune.json").read_text())
    assert doc == json.loads((tmp_path / "t.json").read_text())
    rows = {r["device"]: r for r in doc["rows"]}
    assert sorted(rows) == ["sda", "sdb", "sdc"]
    for name in ("sda", "sdb"):
        r = rows[name]
        assert r["status"] == "ok" and r["trials"] == 2, r
        assert r["pareto"] and {"method", "sparsity", "decision_us"} <= set(r["pareto"][0])
        assert r["dense"]["decision_us"] > 0
    assert rows["sdc"]["status"] == "error" and "sdc.parquet" in rows["sdc"]["error"]
    table = capsys.readouterr().out
    assert "| sda |" in table and "error:" in table and "2 ok, 1 failed" in table
    assert (out / "tune.md").read_text().count("| sd") == 3


@pytest.mark.slow
def test_per_class_one_ray_tune_run_per_class(local_ray: None, fleet: Path,
                                              tmp_path: Path) -> None:
    manifest = tmp_path / "fleet.csv"
    manifest.write_text("device,trace,class\n"
                        f"sda,{fleet / 'sda.parquet'},ssd-a\n"
                        f"sdb,{fleet / 'sdb.parquet'},ssd-a\n"
                        f"sdc,{fleet / 'sdc.parquet'},ssd-a\n")
    out = tmp_path / "out"
    assert main(["fleet", "tune", str(manifest), "--per", "class", "-o", str(out),
                 "--metric", "roc_auc", "--floor", "0.5", *FAST]) == 3
    rows = json.loads((out / "tune.json").read_text())["rows"]
    bad = [r for r in rows if r.get("device")]
    (cls,) = [r for r in rows if r.get("kind") == "tune-class"]
    assert [r["device"] for r in bad] == ["sdc"] and bad[0]["status"] == "error"
    assert cls["class"] == "ssd-a" and cls["devices"] == ["sda", "sdb"], cls
    assert cls["status"] == "ok" and cls["trials"] == 2 and cls["failed_trials"] == 0, cls
    assert cls["pareto"] and all("roc_auc" in t for t in cls["pareto"])
    if cls["best"] is not None:
        assert cls["best"]["roc_auc"] >= 0.5
    assert (out / "ray_tune" / "class-ssd-a").is_dir()  # Ray Tune's own results


def test_a_class_mixing_models_is_one_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _trace(tmp_path / "a.parquet"), _trace(tmp_path / "b.parquet")
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps([
        {"device": "a", "trace": str(a), "model": "precise_linear", "class": "x"},
        {"device": "b", "trace": str(b), "model": "good_custom", "class": "x"}]))
    assert main(["fleet", "tune", str(manifest), "--per", "class", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mittd: error: class 'x'")


def test_search_space_is_mittd_tunes() -> None:
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        t = study.ask()
        suggest(t)
        study.tell(t, 0.0)
    for t in study.trials:
        assert t.params["method"] in ("magnitude", "simd", "node", "scalpel")
        assert 0.5 <= t.params["sparsity"] <= 0.99
        assert ("group" in t.params) == (t.params["method"] in ("simd", "scalpel"))


def test_pareto_front() -> None:
    rows = [{"trial": 0, "decision_us": 2.0, "accuracy": 0.9},
            {"trial": 1, "decision_us": 1.0, "accuracy": 0.8},
            {"trial": 2, "decision_us": 3.0, "accuracy": 0.85},  # beaten by trial 0
            {"trial": 3, "decision_us": 1.0, "accuracy": 0.8}]  # a tie is not dominated
    assert [r["trial"] for r in pareto_front(rows, "accuracy")] == [1, 3, 0]
