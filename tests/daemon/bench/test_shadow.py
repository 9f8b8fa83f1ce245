"""``mittd bench shadow`` end to end on a tiny replica: records written and readable,
the JSON's fields, live and offline ROC-AUC on the same IOs, the one-line errors, and
nothing left behind after Ctrl-C.

Latencies are measurements and never asserted; the live/offline agreement is
asserted only when the scored IOs hold enough of both classes.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mittd.daemon.bench import shadow
from mittd.daemon.cli import main
from mittd.predictor.shipped import shipped_bundle
from mittd.traces.records import RECORD_SCHEMA, read_records
from mittd.traces.registry import open_trace
from tests.conftest import needs_fio, run_cli
from tests.daemon.bench.test_live import _left_behind

HEIMDALL = str(shipped_bundle("heimdall"))
# with fio: writes half of every second, so both classes show up; without: no writer
LOAD = (("--busy", "0.5", "--period", "1", "--write-qd", "1") if shutil.which("fio")
        else ("--busy", "0"))
MIN_CLASS = 20  # labelled IOs of each class before the two ROC-AUCs are compared


def _fio_left(marker: Path) -> list[str]:
    """Command lines of processes that mention ``marker`` (the fio writer's job file)."""
    return _left_behind(marker, runner="bench shadow")


def _old_segment(records: Path) -> Path:
    """An empty segment of an 'earlier session': the run must leave it out."""
    d = records / shadow.ALIAS
    d.mkdir(parents=True)
    p = d / "20000101T000000000000Z-000001.parquet"
    pq.write_table(pa.Table.from_pylist([], schema=RECORD_SCHEMA), p)
    return p


def test_shadow_session_records_and_agrees_with_offline(tmp_path: Path) -> None:
    work, records, out = tmp_path / "dir", tmp_path / "rec", tmp_path / "shadow.json"
    work.mkdir()
    old = _old_segment(records)
    r = run_cli("bench", "shadow", "--dir", str(work), "--bundle", HEIMDALL, "--seconds",
                "2.5", "--records", str(records), "--size", "16m", "--window", "2000",
                *LOAD, "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "live ROC-AUC" in r.stderr  # the progress line
    assert "|live - offline| ROC-AUC" in r.stdout and "bytes" not in r.stderr
    res = json.loads(out.read_text())
    for key in ("ios_decided", "records_written", "records_dropped", "records", "latency",
                "live", "offline", "served", "live_vs_offline"):
        assert key in res, key
    for key in ("p50_us", "p99_us", "p999_us"):
        assert res["latency"][key] > 0
    for key in ("roc_auc", "precision", "recall", "would_reject_share",
                "validation_roc_auc", "drift"):
        assert key in res["live"], key
    assert res["mode"] == "shadow" and res["rejected"] == 0
    assert res["ios_decided"] > 0 and res["records_dropped"] == 0
    assert res["records_written"] == res["ios_decided"]
    # the records: this session's segments only, readable as a trace and as records
    segs = sorted(p for p in (records / shadow.ALIAS).glob("*.parquet") if p != old)
    assert len(segs) == res["records"]["segments"] >= 1
    assert res["records"]["bytes"] == sum(p.stat().st_size for p in segs)
    assert res["records"]["out_of_order"] == 0 and res["records"]["no_latency"] == 0
    assert read_records(segs).num_rows == res["records_written"]
    assert res["offline"]["ios_read_back"] == res["records_written"]
    assert open_trace(records / shadow.ALIAS).table().num_rows == res["records_written"]
    # live and offline on the same IOs: the last --window decided
    live, off = res["live"], res["offline"]
    assert off["scored"] == live["labelled"] == min(2000, res["ios_decided"])
    if min(live["slow"], live["labelled"] - live["slow"]) >= MIN_CLASS:
        assert math.isfinite(live["roc_auc"]) and math.isfinite(off["roc_auc"])
        assert abs(live["roc_auc"] - off["roc_auc"]) <= 0.02
        assert res["live_vs_offline"]["abs_diff"] <= 0.02
        assert abs(res["served"]["roc_auc"] - live["roc_auc"]) <= 0.02
    assert list(work.iterdir()) == []  # the replica file is gone


@pytest.mark.parametrize(("args", "msg"), [
    (("--seconds", "0"), "argument --seconds: must be a number in (0,"),
    (("--seconds", "-1"), "argument --seconds: must be a number in (0,"),
    (("--bundle", "/nonexistent/b.mittd"), "no such bundle file"),
    (("--dir", "/nonexistent/dir"), "not a directory"),
    (("--busy", "2"), "--busy must be a fraction"),
    (("--read-size", "5k"), "--read-size must be a multiple of 4 KiB"),
    (("--size", "lots"), "--size: 'lots' is not a size"),
    (("--window", "5"), "--window must be in [100,"),
    (("--clients", "0"), "argument --clients: must be an integer >= 1"),
])
def test_bad_arguments_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    args: tuple[str, ...], msg: str) -> None:
    base = {"--dir": str(tmp_path), "--bundle": HEIMDALL, "--seconds": "1",
            "--records": str(tmp_path / "rec"), "--busy": "0"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    try:
        rc = main(["bench", "shadow", *(x for kv in base.items() for x in kv)])
    except SystemExit as e:  # refused by argparse (usage, then the error line)
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("mittd") and ": error: " in last, err
    assert msg in last
    assert list(tmp_path.glob("mittd-shadow-*")) == []


def test_records_dir_not_writable_is_one_line(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    rc = main(["bench", "shadow", "--dir", str(tmp_path), "--bundle", HEIMDALL, "--seconds",
               "1", "--records", str(a_file / "rec")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"--records {a_file / 'rec'}: cannot create it" in err


def test_fio_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shadow.shutil, "which", lambda _name: None)
    rc = main(["bench", "shadow", "--dir", str(tmp_path), "--bundle", HEIMDALL, "--seconds",
               "1", "--records", str(tmp_path / "rec"), "--busy", "0.5"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "fio not found on PATH" in err and "--busy 0" in err


def test_help_explains(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["bench", "shadow", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("shadow mode", "--records", "--window", "offline", "Ctrl-C"):
        assert word in out


@needs_fio
def test_ctrl_c_stops_fio_and_keeps_the_records(tmp_path: Path) -> None:
    work, records = tmp_path / "dir", tmp_path / "rec"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mittd.daemon.cli", "bench", "shadow", "--dir", str(work),
         "--bundle", HEIMDALL, "--seconds", "60", "--records", str(records), "--size", "16m",
         "--busy", "0.5", "--period", "1", "--write-qd", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the clients read and fio runs
            if "live ROC-AUC" in line:
                break
        else:
            pytest.fail(f"no progress line; exit {proc.wait()}")
        assert len(_fio_left(work)) == 1
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait(60) == 130, err
        assert "mittd: interrupted" in err
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while _fio_left(work) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _fio_left(work) == []
    assert list(work.iterdir()) == []
    segs = list((records / shadow.ALIAS).glob("*.parquet"))
    assert segs and read_records(segs).num_rows > 0  # what was decided is written
