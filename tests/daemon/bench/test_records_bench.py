"""``mittd bench records``: it measures the three variants and the segments it wrote,
and refuses bad arguments in one line (timings are never asserted)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mittd.daemon.bench.records import RecordsBenchError, render, run_records
from mittd.daemon.cli import main
from mittd.predictor.shipped import shipped_bundle
from mittd.traces.shipped import shipped_trace


def test_it_measures_every_variant_and_the_bytes_per_io(tmp_path: Path) -> None:
    r = run_records(shipped_bundle("heimdall"), ios=2000, rounds=2, directory=tmp_path,
                    latencies=str(shipped_trace()))
    assert set(r["variants"]) == {"off", "ring", "records"}
    assert r["variants"]["off"]["wall_extra_us"] == 0.0
    for v in r["variants"].values():
        assert v["wall_us"] > 0 and v["cpu_us"] > 0
    assert r["records_written"] == 2000 + 2 * 2000  # the warm-up round and two rounds
    assert r["records_dropped"] == 0 and r["segments"] >= 1
    assert 0 < r["bytes_per_io"] < 100 and not math.isnan(r["mb_per_million"])
    assert list(tmp_path.iterdir()) == []  # its segments are removed afterwards
    text = render(r)
    assert "records (ring + Parquet writer)" in text and "MB per 1M IOs" in text


@pytest.mark.parametrize(("kw", "msg"), [
    ({"ios": 10}, "--ios must be an int >= 1000"),
    ({"rounds": 0}, "--rounds must be an int >= 1"),
    ({"directory": "/nonexistent/x"}, "--dir /nonexistent/x: no such directory"),
])
def test_bad_arguments_are_one_line(kw: dict, msg: str) -> None:
    with pytest.raises(RecordsBenchError, match=msg):
        run_records(shipped_bundle("heimdall"), **kw)


def test_cli_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["bench", "records", "--bundle", str(tmp_path / "no.mittd"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mittd: error: ") and "\n" not in err and "no such bundle" in err
