"""``mittd fleet bench`` with 2 tiny devices and 1 epoch: it runs both settings (1 and 2
workers, fresh local Ray clusters) and reports each; no timing is asserted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("ray")
pytest.importorskip("tensorflow")

from mittd.daemon.cli import main
from mittd.fleet.bench import make_traces, parse_workers


def test_traces_are_slices_of_the_sample(tmp_path: Path) -> None:
    jobs = make_traces(tmp_path, 3, 1500)
    assert [j.device for j in jobs] == ["bench00", "bench01", "bench02"]
    firsts = [pq.read_table(j.traces[0]).column("ts_issue_us")[0].as_py() for j in jobs]
    assert all(pq.ParquetFile(j.traces[0]).metadata.num_rows == 1500 for j in jobs)
    assert firsts == sorted(set(firsts))  # distinct slices, in order


def test_worker_list() -> None:
    assert parse_workers("1,2,4") == [1, 2, 4]
    for bad in ("", "0,1", "1,1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_workers(bad)


@pytest.mark.slow
def test_bench_runs_both_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    if ray.is_initialized():  # the bench starts its own clusters
        ray.shutdown()
    out = tmp_path / "bench.json"
    assert main(["fleet", "bench", "--devices", "2", "--epochs", "1", "--ios", "2000",
                 "--no-replay", "--no-progress", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [s["workers"] for s in res["settings"]] == [1, 2]
    assert all(s["ok"] == 2 and s["wall_s"] > 0 for s in res["settings"])
    assert res["settings"][0]["speedup"] == 1.0
    assert res["probe"]["env"]["TF_NUM_INTRAOP_THREADS"] == "1"  # the workers do not fight
    text = capsys.readouterr().out
    assert "| 1 |" in text and "| 2 |" in text and "2 workers over 1:" in text
