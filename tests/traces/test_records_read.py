"""Reading the daemon's IO records as traces: a segment, a directory of segments or a
glob; rejected IOs left out of the trace view, kept by ``read_records``; the records
section of ``mittd trace info``; one-line errors for sets that hold no segment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mittd.traces.errors import TraceError
from mittd.traces.records import (
    D_ADMIT,
    D_REJECT,
    D_SHADOW_REJECT,
    DECISIONS,
    RECORD_KEY,
    RECORD_SCHEMA,
    is_segment_set,
    reached_device,
    read_records,
    record_metadata,
    segment_paths,
)
from mittd.traces.registry import open_trace
from mittd.traces.schema import (
    COLUMNS,
    METADATA_KEY,
    SCHEMA,
    build_metadata,
    make_batch,
    op_array,
    read_trace,
    write_trace,
)
from tests.conftest import run_cli

REASONS = ("predicted", "deadline-beyond-model", "overrun", "probe", "fail-open",
           "reject-cap", "shadow")
SHA_A = "a1" * 32
SHA_B = "b2" * 32
T0 = 1_796_134_000_000_000  # 2026-12-01, epoch µs


def _dict(codes: np.ndarray, names: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), pa.array(names))


def write_segment(path: Path, decision: np.ndarray, t0: int = T0, device: str = "nvme0",
                  sha: str = SHA_A, seed: int = 0) -> pa.Table:
    """One record segment as the recorder lays it out: RECORD_SCHEMA + both metadata keys.
    Rejected IOs have no latency; every fourth IO was not predicted (p_slow NaN)."""
    n = len(decision)
    rng = np.random.default_rng(seed)
    lat = rng.uniform(50.0, 500.0, n)
    lat[decision == D_REJECT] = np.nan
    predicted = np.arange(n) % 4 != 3
    p = np.where(predicted, rng.random(n), np.nan).astype(np.float32)
    reason = np.where(predicted, 0, 1).astype(np.int8)
    table = pa.Table.from_arrays(
        [pa.array(t0 + np.arange(n, dtype=np.int64) * 100), pa.array(lat),
         op_array((np.arange(n) % 5 == 4).astype(np.int8)),
         pa.array(rng.integers(0, 1 << 20, n) * 4096), pa.array(np.full(n, 4096)),
         pa.array([device] * n), pa.array(p), _dict(decision, DECISIONS),
         _dict(reason, REASONS), pa.array(np.where(predicted, 0, -1).astype(np.int8)),
         pa.array(np.full(n, 300.0)), pa.array([sha] * n)],
        schema=RECORD_SCHEMA.with_metadata({
            METADATA_KEY: json.dumps(build_metadata("mittd-records", None)),
            RECORD_KEY: json.dumps({"device": device}),
        }),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return table


def _decisions(n_admit: int, n_reject: int, n_shadow: int) -> np.ndarray:
    d = np.array([D_ADMIT] * n_admit + [D_REJECT] * n_reject + [D_SHADOW_REJECT] * n_shadow,
                 np.int8)
    return np.random.default_rng(len(d)).permutation(d)


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """DIR/nvme0 with two closed segments (written out of order), one still being
    written, a hidden file and a hidden directory; a README beside the device dirs."""
    root = tmp_path / "records"
    d = root / "nvme0"
    write_segment(d / "20261201T142600000000Z-000002.parquet", _decisions(40, 0, 10),
                  t0=T0 + 60_000_000, sha=SHA_B, seed=2)
    write_segment(d / "20261201T142500000000Z-000001.parquet", _decisions(70, 20, 10), seed=1)
    (d / "20261201T142700000000Z-000003.parquet.partial").write_bytes(b"PAR1 cut short")
    write_segment(d / ".20261201T142400000000Z-000000.parquet", _decisions(5, 0, 0))
    write_segment(root / ".trash" / "20261201T140000000000Z-000001.parquet", _decisions(5, 0, 0))
    (root / "README.txt").write_text("records of mittd\n")
    return root


def _segments(root: Path) -> list[Path]:
    d = root / "nvme0"
    return [d / "20261201T142500000000Z-000001.parquet",
            d / "20261201T142600000000Z-000002.parquet"]


# -- which files ------------------------------------------------------------------------------


def test_directory_is_its_segments_sorted_without_partial_or_hidden(records: Path) -> None:
    assert is_segment_set(records)
    assert segment_paths(records) == _segments(records)
    assert segment_paths(records / "nvme0") == _segments(records)


@pytest.mark.parametrize("pattern", ["nvme0/*.parquet", "**/*.parquet", "*/2026*",
                                     "nvme0/*"])
def test_glob_is_the_matching_segments(records: Path, pattern: str) -> None:
    spec = f"{records}/{pattern}"
    assert is_segment_set(spec)
    assert segment_paths(spec) == _segments(records)


def test_a_file_is_itself(records: Path) -> None:
    seg = _segments(records)[0]
    assert not is_segment_set(seg)
    assert segment_paths(seg) == [seg]


def test_empty_directory_and_unmatched_glob_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=rf"^{tmp_path}: is a directory, expected a trace "
                       r"file \(no \*\.parquet segment beneath it\)$"):
        segment_paths(tmp_path)
    with pytest.raises(TraceError, match="is a directory"):
        open_trace(tmp_path)  # the message check_readable gave before directories were read
    (tmp_path / "a.parquet.partial").write_bytes(b"PAR1")
    with pytest.raises(TraceError, match=r"1 still being written \(\*\.partial\)"):
        open_trace(tmp_path)
    with pytest.raises(TraceError, match=r"nope/\*\.parquet: no trace segment matches"):
        open_trace(f"{tmp_path}/nope/*.parquet")
    with pytest.raises(TraceError, match="no such file"):
        open_trace(tmp_path / "missing.parquet")


def test_a_set_of_non_parquet_files_names_the_file(records: Path) -> None:
    bad = records / "nvme0" / "notes.csv"
    bad.write_text("1,2,3\n")
    with pytest.raises(TraceError, match=rf"^{bad}: not a Parquet file"):
        open_trace(f"{records}/nvme0/*")
    fake = records / "nvme0" / "fake.parquet"
    fake.write_text("not parquet\n")
    with pytest.raises(TraceError, match=rf"^{fake}: not a Parquet file"):
        open_trace(records)
    fake.write_bytes(b"")
    with pytest.raises(TraceError, match=rf"^{fake}: file is empty"):
        open_trace(records)


def test_a_set_is_read_as_parquet_only(records: Path) -> None:
    with pytest.raises(TraceError, match="--format msr does not apply"):
        open_trace(records, "msr")
    assert open_trace(records, "parquet").table().num_rows == 130


# -- the trace view ---------------------------------------------------------------------------


def test_directory_reads_as_one_trace_of_the_ios_that_reached_the_device(records: Path
                                                                          ) -> None:
    stream = open_trace(records)
    assert stream.is_set and stream.is_records and stream.format.name == "parquet"
    assert stream.paths == tuple(_segments(records))
    assert stream.record_paths == stream.paths
    seen: list[int] = []
    table = stream.batches(seen.append)
    got = pa.Table.from_batches(list(table), schema=SCHEMA)
    assert sum(seen) == stream.size_bytes == sum(p.stat().st_size for p in stream.paths)
    full = pa.concat_tables([pq.read_table(p) for p in _segments(records)])
    want = reached_device(full)
    assert got.num_rows == stream.rows == 130  # 200 decided, 20 rejected, 50 of the 2nd
    assert got.schema.names == list(COLUMNS)
    assert got.column("ts_issue_us").equals(want.column("ts_issue_us"))
    assert np.isfinite(got.column("latency_us").to_numpy()).all()  # rejected: never issued
    assert stream.table().equals(got)


def test_source_metadata_of_a_set_and_of_a_segment(records: Path) -> None:
    meta = open_trace(records).source_metadata()
    assert meta["source_format"] == "mittd-records"
    assert meta["source_file"] == str(records) and meta["segments"] == 2
    seg = _segments(records)[0]
    assert "segments" not in open_trace(seg).source_metadata()
    assert record_metadata(seg) == {"device": "nvme0"}


def test_one_segment_file_reads_as_the_ios_that_reached_the_device(records: Path) -> None:
    stream = open_trace(_segments(records)[0])
    assert not stream.is_set and stream.is_records
    table = stream.table()
    assert table.num_rows == 80 and table.schema.names == list(COLUMNS)


def test_plain_parquet_trace_is_read_as_before(tmp_path: Path, records: Path) -> None:
    n = 30
    batch = make_batch(T0 + np.arange(n), np.full(n, 80.0), np.zeros(n, np.int8),
                       np.arange(n) * 4096, np.full(n, 4096), "sda")
    plain = tmp_path / "plain.parquet"
    write_trace(plain, pa.Table.from_batches([batch]), build_metadata("test", None))
    stream = open_trace(plain)
    assert not stream.is_set and not stream.is_records and stream.record_paths == ()
    assert stream.table().equals(read_trace(plain))
    # a set may mix plain traces and record segments: each is read as it is
    mixed = open_trace(f"{records}/**/*.parquet")
    assert mixed.table().num_rows == 130
    (records / "nvme0" / "zz.parquet").write_bytes(plain.read_bytes())
    mixed = open_trace(records)
    assert mixed.table().num_rows == 130 + n
    assert len(mixed.record_paths) == 2 and len(mixed.paths) == 3


def test_read_records_keeps_every_row_and_the_decisions(records: Path) -> None:
    table = read_records(records)
    assert table.schema.names == list(RECORD_SCHEMA.names)
    assert table.num_rows == 150
    counts = dict(zip(*np.unique(table.column("decision").to_pylist(), return_counts=True),
                      strict=True))
    assert counts == {"admit": 110, "reject": 20, "shadow-reject": 20}
    same = ["ts_issue_us", "decision", "model_sha", "threshold_index"]  # no NaN in these
    assert read_records(f"{records}/nvme0/*.parquet").select(same).equals(table.select(same))
    assert read_records(_segments(records)).select(same).equals(table.select(same))


def test_read_records_refuses_a_plain_trace(tmp_path: Path) -> None:
    n = 10
    plain = tmp_path / "plain.parquet"
    write_trace(plain, pa.Table.from_batches([make_batch(
        np.arange(n), np.full(n, 80.0), np.zeros(n, np.int8), np.arange(n), np.full(n, 512),
        "sda")]), build_metadata("test", None))
    with pytest.raises(TraceError, match=r"plain\.parquet: not an IO record segment"):
        read_records(plain)


def test_replay_reads_a_records_directory(records: Path) -> None:
    from mittd.daemon.replay.traces import load_trace

    tr = load_trace(records / "nvme0")
    view = reached_device(read_records(records))
    reads = np.asarray(view.column("op").to_pylist()) == "read"
    assert tr.n == 130 and int(tr.known_reads.sum()) == int(reads.sum())


# -- mittd trace info / convert ---------------------------------------------------------------


def test_trace_info_on_records_prints_the_records_section(records: Path) -> None:
    r = run_cli("trace", "info", str(records))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"{records}  (mittd IO records, 2 files)  from mittd-records" in out
    assert "IOs        130 " in out
    assert "records    2 segment(s) · 150 IOs decided · 130 reached the device" in out
    assert "decisions  admit 110 (73.3%) · reject 20 (13.3%) · shadow-reject 20 (13.3%)" in out
    assert f"models     {SHA_A[:12]} 100 · {SHA_B[:12]} 50" in out
    assert "reasons    predicted 113 · deadline-beyond-model 37" in out
    assert "predicted  75.3% of the IOs decided (113 with a P(slow))" in out
    assert "span       2026-12-01 " in out and " UTC (" in out


def test_trace_info_json_on_a_glob(records: Path) -> None:
    r = run_cli("trace", "info", "--json", f"{records}/**/*.parquet")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["ios"] == 130 and info["files"] == 2
    rec = info["records"]
    assert rec["segments"] == 2 and rec["rows"] == 150 and rec["reached_device"] == 130
    assert rec["decisions"]["reject"] == {"count": 20, "share": pytest.approx(20 / 150)}
    assert rec["models"] == {SHA_A[:12]: 100, SHA_B[:12]: 50}
    assert rec["predicted"] == 113
    assert rec["first_issue_us"] == T0
    assert rec["last_issue_us"] == T0 + 60_000_000 + 49 * 100
    assert rec["span_s"] == pytest.approx(60.0049)


def test_trace_info_on_an_ordinary_trace_has_no_records_section(data: Path) -> None:
    r = run_cli("trace", "info", str(data / "msr_sample.csv"))
    assert r.returncode == 0 and "records" not in r.stdout and "files)" not in r.stdout
    info = json.loads(run_cli("trace", "info", "--json", str(data / "msr_sample.csv")).stdout)
    assert "records" not in info and "files" not in info


@pytest.mark.parametrize("make", ["empty_dir", "no_match", "not_parquet"])
def test_trace_info_user_errors_are_one_line_exit_2(tmp_path: Path, make: str) -> None:
    if make == "empty_dir":
        arg = str(tmp_path)
    elif make == "no_match":
        arg = f"{tmp_path}/*.parquet"
    else:
        write_segment(tmp_path / "a.parquet", _decisions(5, 0, 0))
        (tmp_path / "b.parquet").write_text("x\n")
        arg = str(tmp_path)
    r = run_cli("trace", "info", arg)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mittd: error: ")


def test_convert_a_records_directory_to_one_canonical_trace(records: Path, tmp_path: Path
                                                            ) -> None:
    out = tmp_path / "merged.parquet"
    r = run_cli("trace", "convert", str(records), str(out))
    assert r.returncode == 0, r.stderr
    table = read_trace(out)
    assert table.num_rows == 130
    info = json.loads(run_cli("trace", "info", "--json", str(out)).stdout)
    assert "records" not in info
    assert info["source"] == {"source_format": "mittd-records", "source_file": str(records)}
