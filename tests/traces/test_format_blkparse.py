"""blkparse text reader: detection, Q/D/C pairing, skipped and malformed lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mittd.traces.errors import BadLines, MalformedLineError
from mittd.traces.formats.base import ReadOptions
from mittd.traces.formats.blkparse import BlkparseFormat, _Pairer, op_code
from mittd.traces.registry import FORMATS, open_trace
from tests.conftest import DATA

SAMPLE = DATA / "blkparse_sample.txt"
S = 512  # bytes per sector


def ev(t_us: float, act: str, rwbs: str, rest: str, dev: str = "8,0", cpu: int = 0,
       seq: int = 1, pid: int = 2301) -> str:
    """One event line in blkparse's default format (time given in µs)."""
    ns = round(t_us * 1000)
    maj, mn = dev.split(",")
    secs, nanos = divmod(ns, 10**9)
    head = f"{maj:>3},{mn:<3} {cpu:2d} {seq:8d} {secs:5d}.{nanos:09d} {pid:5d}"
    return f"{head} {act:>2} {rwbs:>3} {rest}"


def write(tmp_path: Path, lines: list[str], name: str = "trace.txt") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def read(path: Path, **opts):
    stream = open_trace(path, "blkparse", ReadOptions(**opts))
    return stream.table().to_pylist(), stream.bad


# -- the hand-written sample ---------------------------------------------------

def test_sample_is_auto_detected_and_read_without_bad_lines():
    stream = open_trace(SAMPLE)
    assert stream.format.name == "blkparse"
    rows = stream.table().to_pylist()
    assert stream.bad.count == 0  # Input-file lines, P/U/UT/G/I/A/X/m, trailer: all quiet
    assert len(rows) == 12


@pytest.mark.parametrize(
    ("device", "offset", "ts", "latency", "op", "size"),
    [
        # back merge: one row for the merged request, timed from its D (8 µs)
        ("8,0", 223490 * S, 8, 142.0, "write", 16 * S),
        ("8,0", 1052672 * S, 210, 200.0, "read", 8 * S),
        # dm device: Q and C only, so timed from Q
        ("253,0", 2048 * S, 500, 806.0, "read", 256 * S),
        ("8,0", 264192 * S, 505, 800.0, "read", 256 * S),
        ("8,0", 4096 * S, 702, 2000.0, "other", 2048 * S),  # discard
        ("8,0", 5000 * S, 804, 100.0, "write", 16 * S),  # front merge
        ("8,0", 7000 * S, 1010, 100.0, "read", 8 * S),  # requeued: timed from the last D
        ("8,0", 8192 * S, 1502, 50.0, "write", 8 * S),  # WFS (FUA write)
        ("8,0", 300256 * S, 1704, 250.0, "read", 256 * S),  # second half of a split
    ],
)
def test_sample_values(device, offset, ts, latency, op, size):
    rows, _ = read(SAMPLE)
    match = [r for r in rows if r["device"] == device and r["offset"] == offset]
    assert len(match) == 1
    r = match[0]
    assert (r["ts_issue_us"], r["op"], r["size"]) == (ts, op, size)
    assert r["latency_us"] == pytest.approx(latency, abs=1e-9)


def test_sample_repeated_key_pairs_fifo_and_drops_unpaired():
    rows, _ = read(SAMPLE)
    same = [(r["ts_issue_us"], r["latency_us"]) for r in rows if r["offset"] == 9000 * S]
    assert same == [(1201, pytest.approx(100.0)), (1203, pytest.approx(200.0))]
    offsets = {r["offset"] for r in rows}
    assert 777 * S not in offsets  # completed, but issued before the trace began
    assert 12000 * S not in offsets  # still outstanding at the end of the file
    assert min(r["size"] for r in rows) > 0  # the data-less flush is not a row


# -- pairing rules ----------------------------------------------------------------

def test_d_preferred_over_q(tmp_path):
    p = write(tmp_path, [
        ev(10, "Q", "R", "100 + 8 [fio]"),
        ev(12, "G", "R", "100 + 8 [fio]"),
        ev(50.5, "D", "R", "100 + 8 [fio]"),
        ev(150.5, "C", "R", "100 + 8 [0]", pid=0),
    ])
    (row,), bad = read(p)
    assert row["ts_issue_us"] == 50
    assert row["latency_us"] == pytest.approx(100.0)
    assert (row["offset"], row["size"], row["op"], row["device"]) == (100 * S, 8 * S, "read", "8,0")
    assert bad.count == 0


def test_q_only_fallback(tmp_path):
    p = write(tmp_path, [
        ev(10, "Q", "W", "100 + 8 [fio]", dev="253,1"),
        ev(20, "Q", "R", "900 + 16 [fio]", dev="253,1"),
        ev(110, "C", "W", "100 + 8 [0]", dev="253,1"),
        ev(1020, "C", "R", "900 + 16 [0]", dev="253,1"),
    ])
    rows, _ = read(p)
    assert [(r["ts_issue_us"], r["latency_us"], r["op"], r["size"]) for r in rows] == [
        (10, pytest.approx(100.0), "write", 8 * S),
        (20, pytest.approx(1000.0), "read", 16 * S),
    ]
    assert {r["device"] for r in rows} == {"253,1"}


def test_devices_are_paired_separately(tmp_path):
    p = write(tmp_path, [
        ev(10, "D", "R", "100 + 8 [fio]", dev="8,0"),
        ev(20, "D", "R", "100 + 8 [fio]", dev="8,16"),
        ev(30, "C", "R", "100 + 8 [0]", dev="8,16"),
        ev(100, "C", "R", "100 + 8 [0]", dev="8,0"),
    ])
    rows, _ = read(p)
    assert {(r["device"], r["latency_us"]) for r in rows} == {("8,0", 90.0), ("8,16", 10.0)}


def test_merged_bios_are_dropped(tmp_path):
    p = write(tmp_path, [
        # back merge, with D
        ev(10, "Q", "W", "100 + 8 [fio]"),
        ev(11, "I", "W", "100 + 8 [fio]"),
        ev(12, "Q", "W", "108 + 8 [fio]"),
        ev(13, "M", "W", "108 + 8 [fio]"),
        ev(20, "D", "W", "100 + 16 [fio]"),
        ev(120, "C", "W", "100 + 16 [0]"),
        # back merge, no D (Q-only capture): timed from the first bio's Q
        ev(200, "Q", "W", "500 + 8 [fio]"),
        ev(202, "Q", "W", "508 + 8 [fio]"),
        ev(203, "M", "W", "508 + 8 [fio]"),
        ev(300, "C", "W", "500 + 16 [0]"),
        # front merge, no D: the request now starts at the merged bio's sector
        ev(400, "Q", "R", "708 + 8 [fio]"),
        ev(402, "Q", "R", "700 + 8 [fio]"),
        ev(403, "F", "R", "700 + 8 [fio]"),
        ev(500, "C", "R", "700 + 16 [0]"),
    ])
    rows, bad = read(p)
    assert [(r["ts_issue_us"], r["latency_us"], r["offset"], r["size"]) for r in rows] == [
        (20, pytest.approx(100.0), 100 * S, 16 * S),
        (200, pytest.approx(100.0), 500 * S, 16 * S),
        (400, pytest.approx(100.0), 700 * S, 16 * S),
    ]
    assert bad.count == 0


def test_memory_holds_only_outstanding_requests():
    # Merges, splits and requeues must leave nothing behind once all requests complete.
    lines = []
    for i in range(200):
        t, s = 1000 * i, 10_000 * i
        lines += [
            ev(t, "Q", "W", f"{s} + 8 [fio]"),
            ev(t + 1, "Q", "W", f"{s + 8} + 8 [fio]"),
            ev(t + 2, "M", "W", f"{s + 8} + 8 [fio]"),
            ev(t + 3, "Q", "W", f"{s + 24} + 8 [fio]"),
            ev(t + 4, "Q", "W", f"{s + 16} + 8 [fio]"),
            ev(t + 5, "F", "W", f"{s + 16} + 8 [fio]"),
            ev(t + 6, "D", "W", f"{s} + 16 [fio]"),
            ev(t + 7, "D", "W", f"{s + 16} + 16 [fio]"),
            ev(t + 8, "R", "W", f"{s + 16} + 16 [0]"),
            ev(t + 9, "D", "W", f"{s + 16} + 16 [fio]"),
            ev(t + 50, "C", "W", f"{s} + 16 [0]"),
            ev(t + 60, "C", "W", f"{s + 16} + 16 [0]"),
        ]
    pairer = _Pairer()
    cols = pairer.feed("\n".join(lines) + "\n", 1, BadLines("x"))
    assert len(cols[0]) == 400
    assert pairer.outstanding == 0
    pairer.feed(ev(10**6, "D", "R", "5 + 8 [fio]") + "\n", 1, BadLines("x"))
    assert pairer.outstanding == 1


def test_completion_with_elapsed_time_still_pairs(tmp_path):
    # blkparse -t appends "(elapsed ns)" before the error field.
    p = write(tmp_path, [
        ev(10, "D", "R", "100 + 8 [fio]"),
        ev(60, "C", "R", "100 + 8 (   50000) [0]"),
    ])
    (row,), bad = read(p)
    assert row["latency_us"] == pytest.approx(50.0)
    assert bad.count == 0


@pytest.mark.parametrize(
    ("rwbs", "op"),
    [("R", 0), ("RA", 0), ("RM", 0), ("RS", 0), ("W", 1), ("WS", 1), ("WFS", 1), ("FWS", 1),
     ("FWFS", 1), ("WBS", 1), ("ZA", 1), ("D", 2), ("DS", 2), ("FN", 2), ("N", 2), ("ZR", 2),
     ("ZRA", 2), ("F", 2)],
)
def test_op_from_rwbs(rwbs, op):
    assert op_code(rwbs) == op


def test_op_is_taken_from_rwbs_when_reading(tmp_path):
    p = write(tmp_path, [
        ev(1, "D", "RA", "100 + 8 [fio]"),
        ev(2, "D", "WFS", "200 + 8 [fio]"),
        ev(3, "D", "DS", "300 + 8 [fio]"),
        ev(4, "C", "RA", "100 + 8 [0]"),
        ev(5, "C", "WFS", "200 + 8 [0]"),
        ev(6, "C", "DS", "300 + 8 [0]"),
    ])
    rows, _ = read(p)
    assert [r["op"] for r in rows] == ["read", "write", "other"]


# -- lines that are skipped, and lines that are malformed -------------------------

def test_non_io_lines_and_trailer_are_ignored_not_counted(tmp_path):
    p = write(tmp_path, [
        "Input file sda.blktrace.0 added",
        ev(1, "A", "W", "100 + 8 <- (8,1) 36"),
        ev(2, "Q", "W", "100 + 8 [fio]"),
        ev(3, "G", "W", "100 + 8 [fio]"),
        ev(3.5, "S", "W", "100 + 8 [fio]"),
        ev(4, "P", "N", "[fio]"),
        ev(5, "I", "W", "100 + 8 [fio]"),
        ev(6, "U", "N", "[fio] 1"),
        ev(6.5, "UT", "N", "[kworker/0:1] 1"),
        ev(7, "X", "W", "100 / 104 [fio]"),
        ev(7.5, "B", "W", "100 + 8 [fio]"),
        ev(8, "m", "N", "cfq2301S / insert_request"),
        ev(9, "Q", "FWS", "[jbd2/sda1-8]"),  # flush without data
        ev(9.5, "D", "FN", "[kworker/0:1H]"),
        ev(9.7, "C", "FN", "0 [0]"),
        ev(10, "D", "R", "36 (12 01 00 00 fe 00 ..) [sg_inq]"),  # SCSI pass-through
        ev(10.5, "C", "R", "(12 01 00 00 fe 00 ..) [0]"),
        ev(11, "D", "N", "0 [scsi_id]"),
        ev(12, "D", "W", "100 + 8 [fio]"),
        ev(40, "C", "W", "100 + 8 [0]"),
        "",
        "CPU0 (8,0):",
        " Reads Queued:           0,        0KiB\t Writes Queued:           1,        4KiB",
        " Read depth:             0        \t Write depth:             1",
        " IO unplugs:             1        \t Timer unplugs:           1",
        "",
        "Total (8,0):",
        " Reads Completed:        0,        0KiB\t Writes Completed:        1,        4KiB",
        "",
        "Throughput (R/W): 0KiB/s / 100KiB/s",
        "Events (8,0): 20 entries",
        "Skips: 0 forward (0 -   0.0%)",
    ])
    rows, bad = read(p)
    assert bad.count == 0, bad.summary()
    assert [(r["ts_issue_us"], r["latency_us"]) for r in rows] == [(12, pytest.approx(28.0))]


MALFORMED = [
    ev(1, "Q", "R", "100 + 8 [fio]"),  # 1
    ev(2, "D", "R", "100 + 8 [fio]").replace("0.000002000", "0.0000x2000"),  # 2 bad timestamp
    ev(3, "D", "R", "+ 8 [fio]"),  # 3 missing sector
    ev(4, "C", "R", "100 + eight [0]"),  # 4 non-numeric size
    "  8,0    0       17",  # 5 truncated event line
    ev(5, "D", "R", "100 + 8 [fio]"),  # 6
    ev(6, "G", "R", "zzz + 8 [fio]"),  # 7 garbled, but not Q/D/C: ignored
    ev(25, "C", "R", "100 + 8 [0]"),  # 8
    ev(26, "C", "R", "100 +"),  # 9 truncated completion
]


def test_malformed_lines_counted_with_line_numbers(tmp_path):
    p = write(tmp_path, MALFORMED)
    rows, bad = read(p)
    assert bad.count == 5
    assert [n for n, _, _ in bad.samples] == [2, 3, 4, 5, 9]
    reasons = [reason for _, _, reason in bad.samples]
    assert "timestamp" in reasons[0] and "sector" in reasons[1] and "nsectors" in reasons[2]
    # The good events around them still pair.
    assert [(r["ts_issue_us"], r["latency_us"]) for r in rows] == [(5, pytest.approx(20.0))]


def test_strict_mode_raises_at_first_malformed_line(tmp_path):
    p = write(tmp_path, MALFORMED)
    with pytest.raises(MalformedLineError, match=r"trace\.txt:2: bad timestamp"):
        read(p, strict=True)


def test_malformed_line_numbers_survive_small_blocks(tmp_path):
    p = write(tmp_path, MALFORMED)
    _, bad = read(p, block_bytes=64)
    assert [n for n, _, _ in bad.samples] == [2, 3, 4, 5, 9]


# -- streaming -------------------------------------------------------------------

def test_small_blocks_pair_across_block_boundaries():
    whole, _ = read(SAMPLE)
    stream = open_trace(SAMPLE, "blkparse", ReadOptions(block_bytes=64))
    batches = list(stream.batches())
    assert len(batches) > 5
    small = [r for b in batches for r in b.to_pylist()]

    def key(r):
        return (r["ts_issue_us"], r["device"], r["offset"])

    assert sorted(small, key=key) == sorted(whole, key=key)
    assert stream.bad.count == 0


def test_batches_sorted_by_issue_time_and_come_in_completion_order(tmp_path):
    lines = [ev(1, "D", "R", "100 + 8 [fio]")]
    lines += [ev(10 + i, "D", "W", f"{1000 + 8 * i} + 8 [fio]") for i in range(40)]
    lines += [ev(200 + i, "C", "W", f"{1000 + 8 * (39 - i)} + 8 [0]") for i in range(40)]
    lines += [ev(5000, "C", "R", "100 + 8 [0]")]  # issued first, completed last
    p = write(tmp_path, lines)
    batches = list(open_trace(p, "blkparse", ReadOptions(block_bytes=1024)).batches())
    assert len(batches) > 2
    for b in batches:
        ts = b.column("ts_issue_us").to_numpy()
        assert np.all(np.diff(ts) >= 0)
    assert batches[-1].column("ts_issue_us").to_pylist()[-1] == 1
    assert sum(b.num_rows for b in batches) == 41


def test_device_override():
    rows, _ = read(SAMPLE, device="nvme0n1")
    assert {r["device"] for r in rows} == {"nvme0n1"}
    assert len(rows) == 12


# -- detection -------------------------------------------------------------------

def test_sniff_accepts_blkparse_output():
    fmt = BlkparseFormat()
    lines = [ln for ln in SAMPLE.read_text().splitlines() if ln.strip()][:50]
    assert fmt.sniff(lines)
    assert fmt.sniff([fmt.example])
    # A short trace whose summary follows at once is still blkparse.
    assert fmt.sniff([fmt.example, "CPU0 (8,0):", " Reads Queued: 0, 0KiB", "Total (8,0):"])


@pytest.mark.parametrize(
    "lines",
    [
        ["128166372003061629,wdev,0,Write,3165184,4096,5459"] * 5,  # MSR
        ["12, 435048, 0, 4096, 4046848, 0", "13, 512, 1, 4096, 8192, 0"],  # fio log
        ["1487194614.164466,0.000442,R,2,3565547520,4096"],  # SYSTOR '17
        ["0.026 0 1064960 4096 1"] * 3,  # LinnOS replayer input
        [],
        ["CPU0 (8,0):", " Reads Queued:           0,        0KiB"],
        ["8,0 some text that is not an event"] * 3,
    ],
)
def test_sniff_rejects_other_text(lines):
    assert not BlkparseFormat().sniff(lines)


def test_sniff_rejects_every_other_format_example():
    fmt = BlkparseFormat()
    for other in FORMATS.values():
        if other.name != fmt.name:
            assert not fmt.sniff([other.example] * 3), other.name
