"""The ``mittd`` command as a user meets it: help, output, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mittd.traces.schema import read_trace, trace_metadata
from tests.conftest import run_cli


@pytest.mark.parametrize("args", [
    ["--help"], ["trace", "--help"], ["trace", "info", "--help"], ["trace", "convert", "--help"],
    ["collect", "--help"],
])
def test_help_is_available(args: list[str]) -> None:
    r = run_cli(*args)
    assert r.returncode == 0
    assert "usage: mittd" in r.stdout


def test_info_prints_the_summary(data: Path) -> None:
    r = run_cli("trace", "info", str(data / "systor_sample.csv"))
    assert r.returncode == 0, r.stderr
    assert "IOs        3" in r.stdout
    assert "R:W 67:33" in r.stdout
    assert "p99.9" in r.stdout


def test_info_json(data: Path) -> None:
    r = run_cli("trace", "info", "--json", str(data / "msr_sample.csv"))
    info = json.loads(r.stdout)
    assert info["ios"] == 4 and info["format"] == "msr"
    assert info["latency_us"]["all"]["max"] == pytest.approx(1201.1)


def test_convert_round_trip(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "msr.parquet"
    r = run_cli("trace", "convert", str(data / "msr_sample.csv"), str(out))
    assert r.returncode == 0, r.stderr
    assert read_trace(out).num_rows == 4
    meta = trace_metadata(out)
    assert meta["source_format"] == "msr"
    assert meta["source_file"].endswith("msr_sample.csv")
    # info on the converted file tells the same story as on the source
    a = json.loads(run_cli("trace", "info", "--json", str(out)).stdout)
    b = json.loads(run_cli("trace", "info", "--json", str(data / "msr_sample.csv")).stdout)
    assert a["latency_us"] == b["latency_us"] and a["ios"] == b["ios"]


def test_convert_refuses_to_overwrite(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    out.write_bytes(b"precious")
    r = run_cli("trace", "convert", str(data / "msr_sample.csv"), str(out))
    assert r.returncode == 2
    assert "already exists" in r.stderr
    assert out.read_bytes() == b"precious"


def test_convert_sort(tmp_path: Path) -> None:
    log = tmp_path / "j_lat.1.log"
    # completion order: the second IO was issued first
    log.write_text("10, 5000000, 0, 4096, 0, 0\n11, 9000000, 0, 4096, 4096, 0\n")
    out = tmp_path / "s.parquet"
    assert run_cli("trace", "convert", "--sort", str(log), str(out)).returncode == 0
    ts = read_trace(out).column("ts_issue_us").to_pylist()
    assert ts == sorted(ts) == [2000, 5000]


def test_malformed_lines_reported_on_stderr(data: Path) -> None:
    r = run_cli("trace", "info", str(data / "msr_malformed.csv"))
    assert r.returncode == 0
    assert "skipped 3 malformed line(s)" in r.stderr
    assert "line 2:" in r.stderr and "line 4:" in r.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["trace", "info", "/nonexistent/trace.csv"], "no such file"),
    (["trace", "info", "--strict", "{data}/msr_malformed.csv"], "msr_malformed.csv:2:"),
    (["trace", "info", "--format", "tencent", "{data}/msr_sample.csv"], "not a Tencent"),
    (["trace", "convert", "{data}/msr_sample.csv", "out.csv"], "must be a .parquet"),
])
def test_user_errors_are_one_line_without_traceback(
    data: Path, args: list[str], message: str
) -> None:
    r = run_cli(*[a.format(data=data) for a in args])
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unknown_option_is_an_argparse_error() -> None:
    r = run_cli("trace", "info", "--bogus", "x")
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr
