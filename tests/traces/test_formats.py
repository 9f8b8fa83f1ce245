"""Each reader on a realistic sample: detection, exact values, malformed lines."""

from __future__ import annotations

import bz2
import gzip
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mittd.traces.errors import MalformedLineError, TraceError
from mittd.traces.formats.base import ReadOptions
from mittd.traces.registry import detect_format, open_trace

SAMPLES = {
    "msr_sample.csv": "msr",
    "systor_sample.csv": "systor17",
    "alibaba_sample.csv": "alibaba",
    "tencent_sample.csv": "tencent",
    "linnos_in_sample.trace": "linnos-in",
    "linnos_out_sample.csv": "linnos-out",
    "fio_real_lat.1.log": "fio",
}


def rows(path: Path, **kw: object) -> list[dict[str, object]]:
    stream = open_trace(path, options=ReadOptions(**kw))  # type: ignore[arg-type]
    return stream.table().to_pylist()


@pytest.mark.parametrize(("name", "fmt"), SAMPLES.items())
def test_detects_each_format_by_content(data: Path, name: str, fmt: str) -> None:
    assert detect_format(data / name).name == fmt


@pytest.mark.parametrize(("name", "fmt"), SAMPLES.items())
def test_detection_ignores_the_file_name(data: Path, tmp_path: Path, name: str, fmt: str) -> None:
    renamed = tmp_path / "trace.txt"
    renamed.write_bytes((data / name).read_bytes())
    assert detect_format(renamed).name == fmt


def test_msr_values(data: Path) -> None:
    r = rows(data / "msr_sample.csv")
    assert len(r) == 4
    # FILETIME 128166372003061629 = 1172163600306162 µs after the Unix epoch
    assert r[0]["ts_issue_us"] == (128166372003061629 - 116444736000000000) // 10
    assert r[0]["latency_us"] == pytest.approx(545.9)
    assert r[0]["op"] == "write" and r[2]["op"] == "read"
    assert (r[2]["offset"], r[2]["size"]) == (1048576, 65536)
    assert r[0]["device"] == "wdev_0" and r[3]["device"] == "hm_1"


def test_msr_device_override(data: Path) -> None:
    assert {r["device"] for r in rows(data / "msr_sample.csv", device="ssd0")} == {"ssd0"}


def test_systor_values(data: Path) -> None:
    r = rows(data / "systor_sample.csv")
    assert len(r) == 3  # header skipped
    assert r[0]["ts_issue_us"] == 1487194614164466
    assert r[0]["latency_us"] == pytest.approx(442.0)
    assert [x["op"] for x in r] == ["read", "write", "read"]
    assert r[1]["offset"] == 1073741824 and r[1]["size"] == 16384
    assert r[2]["device"] == "lun3"


def test_alibaba_has_no_latency(data: Path) -> None:
    r = rows(data / "alibaba_sample.csv")
    assert [x["op"] for x in r] == ["read", "write", "read"]
    assert r[0]["ts_issue_us"] == 1577808000000147
    assert r[0]["offset"] == 126703644672 and r[1]["size"] == 8192
    assert r[2]["device"] == "17"
    assert all(math.isnan(x["latency_us"]) for x in r)


def test_tencent_sectors_and_seconds(data: Path) -> None:
    r = rows(data / "tencent_sample.csv")
    assert r[0]["ts_issue_us"] == 1538323200_000000
    assert r[0]["offset"] == 12854624 * 512 and r[0]["size"] == 8 * 512
    assert [x["op"] for x in r] == ["write", "read", "read"]
    assert r[0]["device"] == "vol1283"
    assert all(math.isnan(x["latency_us"]) for x in r)


def test_linnos_input(data: Path) -> None:
    r = rows(data / "linnos_in_sample.trace")
    assert [x["ts_issue_us"] for x in r] == [26, 251, 1500]
    assert [x["op"] for x in r] == ["read", "write", "read"]  # 1 = read in LinnOS
    assert r[1]["offset"] == 8192 and r[1]["size"] == 8192
    assert r[2]["device"] == "dev1"


def test_linnos_output(data: Path) -> None:
    r = rows(data / "linnos_out_sample.csv")
    assert [x["ts_issue_us"] for x in r] == [31, 260, 1502]  # submission time
    assert [x["latency_us"] for x in r] == [171.0, 1503.0, 88.0]
    assert [x["op"] for x in r] == ["read", "write", "other"]  # ret < 0: failed IO


def test_fio_real_log(data: Path) -> None:
    path = data / "fio_real_lat.1.log"
    r = rows(path)
    assert len(r) == 300
    first = path.read_text().splitlines()[0].split(", ")
    t_ms, lat_ns, ddir, bs, off = (int(x) for x in first[:5])
    assert r[0]["latency_us"] == pytest.approx(lat_ns / 1000)
    assert r[0]["ts_issue_us"] == t_ms * 1000 - round(lat_ns / 1000)
    assert r[0]["op"] == ("read" if ddir == 0 else "write")
    assert (r[0]["offset"], r[0]["size"]) == (off, bs)
    assert r[0]["device"] == "fio_real"  # prefix of <prefix>_lat.N.log


def test_fio_issue_time_column(tmp_path: Path) -> None:
    p = tmp_path / "x_clat.2.log"
    p.write_text("5, 200000, 1, 4096, 8192, 0, 4800000\n")
    (r,) = rows(p)
    assert r["ts_issue_us"] == 4800 and r["latency_us"] == 200.0 and r["op"] == "write"
    assert r["device"] == "x"


def test_fio_log_without_offsets_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "a_lat.1.log"
    p.write_text("0, 1000, 0, 4096\n1, 1000, 0, 4096\n")
    with pytest.raises(TraceError, match="log_offset=1"):
        open_trace(p, "fio").table()


def test_fio_bandwidth_log_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "a_bw.1.log"
    p.write_text("0, 1000, 0, 4096, 0, 0\n")
    with pytest.raises(TraceError, match="bw log"):
        open_trace(p, "fio").table()


def test_malformed_lines_counted_with_numbers(data: Path) -> None:
    stream = open_trace(data / "msr_malformed.csv")
    table = stream.table()
    assert table.num_rows == 2
    assert stream.bad.count == 3
    assert sorted(n for n, _, _ in stream.bad.samples) == [2, 3, 4]
    reasons = {n: reason for n, _, reason in stream.bad.samples}
    assert "Type" in reasons[2]
    assert "fields" in reasons[3]
    assert "size" in reasons[4]
    assert "line 2" in stream.bad.summary()


def test_strict_stops_at_first_malformed_line(data: Path) -> None:
    stream = open_trace(data / "msr_malformed.csv", options=ReadOptions(strict=True))
    with pytest.raises(MalformedLineError, match=r"msr_malformed.csv:2: Type"):
        stream.table()


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(TraceError, match="empty"):
        open_trace(p)


def test_unknown_format_names_the_first_line(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello world\nthis is not a trace\n")
    with pytest.raises(TraceError, match=r"unrecognised trace format.*hello world"):
        open_trace(p)


def test_forced_wrong_format_is_one_clear_error(data: Path) -> None:
    with pytest.raises(TraceError, match="not a SNIA SYSTOR"):
        open_trace(data / "msr_sample.csv", "systor17").table()


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        open_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match="directory"):
        open_trace(tmp_path)


@pytest.mark.parametrize("opener", [gzip.open, bz2.open])
def test_compressed_input(data: Path, tmp_path: Path, opener: object) -> None:
    p = tmp_path / "msr.csv.z"
    with opener(p, "wb") as f:  # type: ignore[operator]
        f.write((data / "msr_sample.csv").read_bytes())
    assert detect_format(p).name == "msr"
    assert rows(p) == rows(data / "msr_sample.csv")


def _msr_lines(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ts = 128166372003061629 + np.cumsum(rng.integers(1, 10_000, n))
    types = np.where(rng.random(n) < 0.7, "Read", "Write")
    off = rng.integers(0, 1 << 30, n) // 512 * 512
    size = rng.choice([512, 4096, 65536], n)
    resp = rng.integers(100, 100_000, n)
    return [
        f"{t},host,{d},{ty},{o},{s},{r}"
        for t, d, ty, o, s, r in zip(ts, rng.integers(0, 3, n), types, off, size, resp,
                                     strict=True)
    ]


def test_slow_path_equals_fast_path(tmp_path: Path) -> None:
    """A block with a bad line is re-parsed line by line; valid lines must come out
    exactly as the fast path gives them."""
    lines = _msr_lines(2000, seed=1)
    clean = tmp_path / "clean.csv"
    clean.write_text("\n".join(lines) + "\n")
    dirty_lines = list(lines)
    for i in range(0, len(lines), 97):
        dirty_lines.insert(i, "garbage,line")
    dirty = tmp_path / "dirty.csv"
    dirty.write_text("\n".join(dirty_lines) + "\n")
    fast = open_trace(clean, "msr").table()
    stream = open_trace(dirty, "msr", ReadOptions(block_bytes=4096))
    slow = stream.table()
    assert stream.bad.count == len(dirty_lines) - len(lines)
    assert slow.equals(fast)


@pytest.mark.parametrize("block_bytes", [64, 1000, 1 << 20])
def test_block_size_does_not_change_the_result(tmp_path: Path, block_bytes: int) -> None:
    p = tmp_path / "t.csv"
    p.write_text("\n".join(_msr_lines(500, seed=2)) + "\n")
    ref = open_trace(p, "msr").table()
    got = open_trace(p, "msr", ReadOptions(block_bytes=block_bytes)).table()
    assert got.equals(ref)


def test_last_line_without_newline(tmp_path: Path, data: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text((data / "msr_sample.csv").read_text().rstrip("\n"))
    assert len(rows(p)) == 4


def test_batches_are_canonical(data: Path) -> None:
    from mittd.traces.schema import SCHEMA

    for name in SAMPLES:
        for batch in open_trace(data / name).batches():
            assert isinstance(batch, pa.RecordBatch)
            assert batch.schema.equals(SCHEMA)


@pytest.mark.parametrize(("name", "fmt"), SAMPLES.items())
@pytest.mark.parametrize("garbage", ["x,y,z", "1, 2, 3, 4, 5, 6, 7, 8, 9", "\x00\x01\x02"])
def test_every_reader_skips_and_numbers_a_malformed_line(
    data: Path, tmp_path: Path, name: str, fmt: str, garbage: str
) -> None:
    lines = (data / name).read_text().splitlines()
    at = 3 if fmt == "systor17" else 2  # after the header line where there is one
    lines.insert(at - 1, garbage)
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    stream = open_trace(p, fmt)
    assert stream.table().num_rows == open_trace(data / name, fmt).table().num_rows
    assert stream.bad.count == 1
    assert stream.bad.samples[0][0] == at
