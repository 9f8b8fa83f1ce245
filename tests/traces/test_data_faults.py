"""Damaged and hostile trace data (issue 15, data part): every case below was read as
if it were fine, or died in a traceback, before; now each is a counted malformed
line/row or one ``mittd: error:`` line, exit 2, and no partial output.

- flipped bytes in a Parquet data page (read back as latencies of ±4e303),
- canonical Parquet rows that break the value rules the text readers apply,
- out-of-range integers in text traces (OverflowError),
- format detection quoting a valid line when the rest is garbage,
- a full disk or ``kill -9`` during ``trace convert``,
- ``mittd collect`` numbers fio would refuse late or silently change.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mittd.daemon.cli import main
from mittd.traces.errors import BadLines, TraceError
from mittd.traces.formats.base import ReadOptions
from mittd.traces.records import iter_records
from mittd.traces.registry import open_trace
from mittd.traces.schema import (
    SCHEMA,
    build_metadata,
    make_batch,
    read_trace,
    write_trace,
)

REPO = Path(__file__).resolve().parents[2]


def _trace(n: int = 20000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.Table.from_batches([make_batch(
        np.arange(n) * 10, rng.uniform(20, 900, n), rng.integers(0, 2, n),
        rng.integers(0, 1 << 30, n) * 4096, np.full(n, 4096), "nvme0")])


def _flip(src: Path, dst: Path, column: str = "latency_us", flips: int = 200,
          seed: int = 0) -> None:
    """Copy ``src`` with ``flips`` seeded bytes inverted inside one column chunk's pages."""
    md = pq.ParquetFile(src).metadata.row_group(0)
    cc = next(md.column(i) for i in range(md.num_columns)
              if md.column(i).path_in_schema == column)
    # Inside the page holding the values (the dictionary page when there is one), past
    # its header: zstd stores random floats as raw blocks, so without page checksums
    # the flipped bytes read back as other, absurd floats rather than as an error.
    start = cc.dictionary_page_offset or cc.data_page_offset
    end = cc.data_page_offset if cc.dictionary_page_offset else start + cc.total_compressed_size
    data = bytearray(src.read_bytes())
    lo, hi = start + 64, min(end - 16, start + 64 + 100_000)
    for p in np.random.default_rng(seed).choice(np.arange(lo, hi), min(flips, hi - lo),
                                                replace=False):
        data[p] ^= 0xFF
    dst.write_bytes(bytes(data))


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse refuses with exit 2
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc: int, err: str, says: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if lines[0].startswith("usage: "):  # argparse: its usage, then the one error line
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("mittd") and ": error: " in lines[0], err
    assert says in lines[0], lines[0]


# -- 1. page checksums -------------------------------------------------------------------

def test_flipped_bytes_in_a_trace_are_refused_not_read_as_huge_latencies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    write_trace(good, _trace(), build_metadata("test", None))
    _flip(good, bad)
    with pytest.raises(TraceError, match=r"bad\.parquet: corrupted Parquet \("):
        open_trace(bad).table()
    with pytest.raises(TraceError, match=r"bad\.parquet: corrupted Parquet \("):
        read_trace(bad)
    rc, _, err = _cli(["trace", "info", str(bad)], capsys)
    _one_line_error(rc, err, "bad.parquet: corrupted Parquet (")
    assert read_trace(good).num_rows == 20000  # the undamaged copy reads


def test_a_recorder_segment_is_checksummed_too(tmp_path: Path) -> None:
    from mittd.daemon.embedded import Embedded
    from mittd.predictor.shipped import shipped_bundle

    emb = Embedded.from_bundles({"d": shipped_bundle("heimdall")}, records=tmp_path / "rec")
    rng = np.random.default_rng(1)
    for _ in range(4000):
        t = emb.admit("d", 0, int(rng.integers(0, 1 << 18)) * 4096, 4096, 0)
        if t:
            emb.complete("d", t, float(rng.lognormal(5, 0.5)))
    emb.close()
    seg = sorted((tmp_path / "rec" / "d").glob("*.parquet"))[0]
    bad = tmp_path / "bad.parquet"
    _flip(seg, bad)
    with pytest.raises(TraceError, match=r"bad\.parquet: corrupted Parquet"):
        open_trace(bad).table()
    with pytest.raises(TraceError, match=r"bad\.parquet: corrupted Parquet"):
        list(iter_records([bad]))


def test_a_trace_written_without_checksums_still_reads(tmp_path: Path) -> None:
    old = tmp_path / "old.parquet"
    pq.write_table(_trace(500), old)  # as mittd wrote them before checksums
    assert open_trace(old).table().num_rows == 500
    assert read_trace(old).num_rows == 500


# -- 2. value rules on Parquet rows ------------------------------------------------------

def _hostile(path: Path) -> None:
    """Six rows: one valid, one NaN latency (valid: none recorded), four broken."""
    pq.write_table(pa.table({
        "ts_issue_us": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
        "latency_us": [10.0, float("nan"), -5.0, float("inf"), 10.0, 10.0],
        "op": ["read", "write", "read", "read", "flush", "read"],
        "offset": pa.array([0, 4096, 0, 0, 0, -4096], pa.int64()),
        "size": pa.array([4096, 4096, 4096, 4096, 4096, 4096], pa.int64()),
        "device": ["d"] * 6,
    }), path)


def test_parquet_rows_that_break_a_value_rule_are_counted_and_skipped(tmp_path: Path) -> None:
    p = tmp_path / "t.parquet"
    _hostile(p)
    stream = open_trace(p)
    table = stream.table()
    assert table.num_rows == 2 and table.column("ts_issue_us").to_pylist() == [1, 2]
    assert table.column("op").to_pylist() == ["read", "write"]
    assert table.column("op").chunk(0).indices.to_pylist() == [0, 1]  # canonical codes
    assert stream.bad.count == 4
    reasons = [r for _, _, r in stream.bad.samples]
    assert reasons == ["latency_us must be >= 0 and finite (NaN: none recorded)"] * 2 + [
        "op must be read, write or other", "offset must be >= 0"]
    assert "skipped 4 malformed row(s)" in stream.bad.summary()
    assert "row 3:" in stream.bad.summary()


def test_size_zero_and_a_foreign_op_dictionary(tmp_path: Path) -> None:
    p = tmp_path / "t.parquet"
    op = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int8()),
                                        pa.array(["write", "read"]))  # codes swapped
    pq.write_table(pa.table({
        "ts_issue_us": pa.array([1, 2, 3], pa.int64()), "latency_us": [1.0, 2.0, 3.0],
        "op": op, "offset": pa.array([0, 0, 0], pa.int64()),
        "size": pa.array([4096, 0, 4096], pa.int64()), "device": ["d"] * 3}), p)
    stream = open_trace(p)
    table = stream.table()
    assert stream.bad.count == 1 and stream.bad.samples[0][2] == "size must be > 0"
    assert table.column("op").to_pylist() == ["write", "write"]
    assert table.column("op").chunk(0).indices.to_pylist() == [1, 1]


def test_strict_stops_at_the_first_bad_row_naming_it(tmp_path: Path) -> None:
    p = tmp_path / "t.parquet"
    _hostile(p)
    with pytest.raises(TraceError, match=r"t\.parquet: row 3: latency_us must be >= 0"):
        open_trace(p, options=ReadOptions(strict=True)).table()
    with pytest.raises(TraceError, match=r"row 3"):
        read_trace(p)  # the library reader has no tally to report to: strict


def test_record_segments_are_validated_too(tmp_path: Path) -> None:
    from tests.traces.test_records_read import write_segment

    seg = tmp_path / "r" / "s.parquet"
    table = write_segment(seg, np.zeros(8, np.int8))
    size = table.column("size").to_numpy().copy()
    size[2] = -1
    pq.write_table(table.set_column(4, "size", pa.array(size)), seg)
    bad = BadLines(str(seg), unit="row")
    assert sum(b.num_rows for b in iter_records([seg], bad=bad)) == 7
    assert bad.count == 1 and bad.samples[0][0] == 3
    stream = open_trace(seg)
    assert stream.table().num_rows == 7 and stream.bad.count == 1


# -- 3. detection ---------------------------------------------------------------------

def test_detection_quotes_a_bad_line_not_the_one_valid_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "mostly-garbage.csv"
    valid = "128166372003061629,wdev,0,Write,3165184,4096,5459"
    p.write_text(valid + "\n" + "".join(f"garbage {i} %%\n" for i in range(20)))
    rc, _, err = _cli(["trace", "info", str(p)], capsys)
    _one_line_error(rc, err, "unrecognised trace format")
    assert valid not in err
    assert "line 2 fits none: 'garbage 0 %%'" in err and "msr 5%" in err


# -- 4. out-of-range integers in text traces --------------------------------------------

HUGE = "99999999999999999999999"
OVERFLOW_CASES = {
    "msr": ("128166372003061629,wdev,0,Write,{},4096,5459", "128166372003061629,wdev,0,"
            "Write,3165184,4096,5459"),
    "systor17": ("1487194614.164466,0.000442,R,2,{},4096",
                 "1487194614.164466,0.000442,R,2,3565547520,4096"),
    "alibaba": ("0,R,{},4096,1577808000000147", "0,R,126703644672,4096,1577808000000147"),
    "tencent": ("1538323200,{},8,1,1283", "1538323200,12854624,8,1,1283"),
    "tencent-scaled": ("1538323200,40000000000000000,8,1,1283",  # offset * 512 > int64
                       "1538323200,12854624,8,1,1283"),
    "fio": ("12, 435048, 0, 4096, {}, 0", "12, 435048, 0, 4096, 4046848, 0"),
    "fio-time": ("9999999999999999, 435048, 0, 4096, 0, 0", "12, 435048, 0, 4096, 0, 0"),
    "linnos-in": ("0.5 0 {} 4096 1", "0.5 0 4096 4096 1"),
    "linnos-out": ("0.026,171,1,4096,{},0.031,4096", "0.026,171,1,4096,1064960,0.031,4096"),
    "systor17-inf": ("1487194614.164466,inf,R,2,0,4096",
                     "1487194614.164466,0.000442,R,2,3565547520,4096"),
}


@pytest.mark.parametrize("case", sorted(OVERFLOW_CASES))
def test_an_out_of_range_number_is_a_malformed_line(case: str, tmp_path: Path) -> None:
    bad, good = OVERFLOW_CASES[case]
    fmt = case.split("-")[0] if not case.startswith("linnos") else "-".join(
        case.split("-")[:2])
    name = "t_lat.1.log" if fmt == "fio" else "t.txt"
    p = tmp_path / name
    p.write_text(good + "\n" + bad.format(HUGE) + "\n" + good + "\n")
    stream = open_trace(p, fmt)
    assert stream.table().num_rows == 2
    assert stream.bad.count == 1 and stream.bad.samples[0][0] == 2
    with pytest.raises(TraceError, match=rf"{name}:2: "):
        open_trace(p, fmt, ReadOptions(strict=True)).table()


def test_an_out_of_range_blkparse_sector_is_a_malformed_line(tmp_path: Path) -> None:
    p = tmp_path / "blk.txt"
    ev = "  8,0    0    {seq}     0.{t:09d}   697  {a}  W {sec} + 8 [fio]\n"
    p.write_text(ev.format(seq=1, t=0, a="D", sec=HUGE) + ev.format(seq=2, t=10, a="D", sec=8)
                 + ev.format(seq=3, t=100, a="C", sec=8))
    stream = open_trace(p, "blkparse")
    assert stream.table().num_rows == 1
    assert stream.bad.count == 1 and "out of range" in stream.bad.samples[0][2]


# -- 5. full disk, kill -9 ---------------------------------------------------------------

def _msr_file(path: Path, n: int) -> None:
    rng = np.random.default_rng(3)
    ts = 128166372003061629 + np.arange(n) * 1000
    off = rng.integers(0, 1 << 30, n) * 512
    lines = [f"{t},wdev,0,{'Read' if i % 3 else 'Write'},{o},4096,{100 + i % 977}"
             for i, (t, o) in enumerate(zip(ts, off, strict=True))]
    path.write_text("\n".join(lines) + "\n")


_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.RLIM_INFINITY))
    from mittd.daemon.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_full_disk_during_convert_leaves_the_old_output_and_no_partial(
        tmp_path: Path) -> None:
    src, out = tmp_path / "src.csv", tmp_path / "out.parquet"
    _msr_file(src, 60000)
    write_trace(out, _trace(100), build_metadata("old", None))
    before = out.read_bytes()
    r = subprocess.run([sys.executable, "-c", _FULL_DISK, "trace", "convert", str(src),
                        str(out), "--force", "--no-progress"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()
    assert last == [f"mittd: error: cannot write {out}: File too large"], r.stderr
    assert out.read_bytes() == before and read_trace(out).num_rows == 100
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out.parquet", "src.csv"]


_SLOW_CONVERT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mittd.traces.formats.parquet import ParquetFormat
    real = ParquetFormat.read
    def slow(self, *a, **k):  # a big trace: the writer is mid-file when the kill comes
        for i, batch in enumerate(real(self, *a, **k)):
            yield batch
            if i == 1:
                Path(sys.argv[-1]).touch()
                time.sleep(60)
    ParquetFormat.read = slow
    from mittd.daemon.cli import main
    sys.exit(main(sys.argv[1:-1]))
""")


def test_kill_9_mid_convert_keeps_the_old_output_whole(tmp_path: Path) -> None:
    from mittd.traces.formats import parquet as parquet_format

    src, out, mark = tmp_path / "src.parquet", tmp_path / "out.parquet", tmp_path / "mark"
    n = parquet_format.BATCH_ROWS * 3
    write_trace(src, _trace(n), build_metadata("big", None))
    write_trace(out, _trace(100), build_metadata("old", None))
    before = out.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CONVERT, "trace", "convert", str(src),
                             str(out), "--force", "--no-progress", str(mark)],
                            cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists(), "the convert never got going"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert out.read_bytes() == before and read_trace(out).num_rows == 100
    # the next run replaces the partial the kill left, and leaves none
    assert main(["trace", "convert", str(src), str(out), "--force", "--no-progress"]) == 0
    assert read_trace(out).num_rows == n
    assert not list(tmp_path.glob("*.partial"))


def test_enospc_mid_stream_is_one_output_error_and_removes_the_partial(
        tmp_path: Path) -> None:
    from mittd.traces.atomic import OutputError
    from mittd.traces.schema import TraceWriter

    class FullDisk:
        def __init__(self, real: pq.ParquetWriter) -> None:
            self.real = real

        def write_batch(self, *_: object, **__: object) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self) -> None:
            self.real.close()

    out = tmp_path / "t.parquet"
    with pytest.raises(OutputError, match=r"cannot write .*t\.parquet: No space left"), \
            TraceWriter(out, build_metadata("x", None)) as w:
        w._writer = FullDisk(w._writer)  # type: ignore[assignment]
        w.write(_trace(10).to_batches()[0])
    assert not list(tmp_path.iterdir())


# -- 6. collect arguments ---------------------------------------------------------------

COLLECT_CASES = [
    (["--bs", "0"], "--bs"),
    (["--bs", "4k,0"], "--bs"),
    (["--rwmixread", "200"], "--rwmixread: must be an integer in [0, 100]"),
    (["--job", "rwmixread=200"], "rwmixread must be an integer from 0 to 100"),
    (["--rwmixread", "-1"], "--rwmixread"),
    (["--runtime", "0s"], "--runtime must be > 0"),
    (["--keep-logs", "{file}"], "is a file, expected a directory"),
    (["--size", "0"], "--size must be > 0"),
    (["--size=-1G"], "--size"),
    (["--iodepth", "0"], "--iodepth"),
    (["--job", "nonsense"], "--job 'nonsense'"),
    (["--job", "bs=0"], "bs"),
    (["--job", "iodepth=0"], "iodepth"),
    (["--job", "rwmixread=abc"], "rwmixread"),
    (["--replay-speed", "nan"], "--replay-speed"),
    (["-o", "{tmp}"], "is a directory"),
    (["-o", "{tmp}/no/such/x.parquet"], "does not exist"),
]


@pytest.mark.parametrize(("extra", "says"), COLLECT_CASES,
                         ids=[" ".join(c[0]) for c in COLLECT_CASES])
def test_bad_collect_arguments_are_refused_before_fio(
        extra: list[str], says: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    extra = [a.format(tmp=tmp_path, file=f) for a in extra]
    argv = ["collect", str(tmp_path / "t.img"), "--size", "1M", "-o",
            str(tmp_path / "o.parquet"), "--fio", str(tmp_path / "no-fio"), *extra]
    rc, _, err = _cli(argv, capsys)
    _one_line_error(rc, err, says)
    assert "fio not found" not in err


# -- 7. probes: bad inputs to every trace subcommand ------------------------------------

def _probe_files(tmp: Path) -> dict[str, Path]:
    good = tmp / "good.parquet"
    write_trace(good, _trace(2000), build_metadata("x", None))
    files = {"missing": tmp / "missing.csv", "directory": tmp / "adir",
             "empty": tmp / "empty.csv", "garbage": tmp / "garbage.bin",
             "truncated": tmp / "half.parquet", "wrong-schema": tmp / "ab.parquet",
             "wrong-types": tmp / "types.parquet"}
    files["directory"].mkdir()
    files["empty"].write_bytes(b"")
    files["garbage"].write_bytes(bytes(range(256)) * 8)
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    pq.write_table(pa.table({"a": [1], "b": [2]}), files["wrong-schema"])
    pq.write_table(pa.table({c: ["x"] for c in SCHEMA.names}), files["wrong-types"])
    return files


PROBE_SAYS = {"missing": "no such file", "directory": "is a directory",
              "empty": "file is empty", "garbage": "binary file of unknown format",
              "truncated": "corrupted Parquet", "wrong-schema": "missing columns: ts_issue_us",
              "wrong-types": "latency_us is string, expected double"}


@pytest.mark.parametrize("command", ["info", "convert"])
def test_every_bad_input_is_one_line(command: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    for what, path in _probe_files(tmp_path).items():
        argv = ["trace", command, str(path)]
        if command == "convert":
            argv.append(str(tmp_path / "out.parquet"))
        rc, _, err = _cli(argv, capsys)
        _one_line_error(rc, err, PROBE_SAYS[what])
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize(("out", "says"), [
    ("{tmp}/no/such/x.parquet", "does not exist"), ("{tmp}/adir", "is a directory"),
    ("{tmp}/good.parquet", "overwrite the input"),
])
def test_bad_convert_outputs_are_one_line(out: str, says: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _probe_files(tmp_path)
    good = tmp_path / "good.parquet"
    before = good.read_bytes()
    rc, _, err = _cli(["trace", "convert", str(good), out.format(tmp=tmp_path), "--force"],
                      capsys)
    _one_line_error(rc, err, says)
    assert good.read_bytes() == before


def test_an_absurd_but_valid_latency_keeps_the_summary_table_aligned(tmp_path: Path) -> None:
    from mittd.traces.stats import render, summarise

    t = _trace(100)
    lat = t.column("latency_us").to_numpy().copy()
    lat[5] = 1.7e308
    t = t.set_column(1, "latency_us", pa.array(lat))
    info = summarise(t.to_batches()).to_dict()
    table = [ln for ln in render(info, "t").splitlines() if ln.startswith(("  all", "  read"))]
    assert table and all(len(ln) <= 2 + 10 + 1 + 11 * 8 for ln in table), table
    assert "1.7e+308" in table[0]
