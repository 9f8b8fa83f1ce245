"""The canonical Parquet trace: round trip, provenance, safe writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mittd.traces.errors import TraceError
from mittd.traces.registry import open_trace
from mittd.traces.schema import (
    SCHEMA,
    TraceWriter,
    build_metadata,
    make_batch,
    read_trace,
    trace_metadata,
)


def _batch(n: int = 5) -> pa.RecordBatch:
    return make_batch(
        np.arange(n) * 10, np.linspace(50, 90, n), np.array([0, 1, 2, 0, 1][:n]),
        np.arange(n) * 4096, np.full(n, 4096), "nvme0",
    )


def test_round_trip_keeps_values_and_provenance(tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    meta = build_metadata("msr", "/data/src1.csv", {"runtime_s": 30})
    with TraceWriter(out, meta) as w:
        w.write(_batch())
    table = read_trace(out)
    assert table.schema.remove_metadata().equals(SCHEMA)
    assert table.column("op").to_pylist() == ["read", "write", "other", "read", "write"]
    assert table.column("latency_us").to_pylist()[-1] == 90.0
    got = trace_metadata(out)
    assert got["source_format"] == "msr"
    assert got["source_file"] == "/data/src1.csv"
    assert got["collection"] == {"runtime_s": 30}
    assert got["schema_version"] == 1


def test_interrupted_write_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    with pytest.raises(RuntimeError), TraceWriter(out, build_metadata("x", None)) as w:
        w.write(_batch())
        raise RuntimeError("boom")
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_foreign_parquet_is_refused_with_one_line(tmp_path: Path) -> None:
    p = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), p)
    with pytest.raises(TraceError, match=r"not a mittd trace.*missing columns"):
        open_trace(p).table()


def test_truncated_parquet_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "t.parquet"
    with TraceWriter(good, build_metadata("x", None)) as w:
        w.write(_batch())
    bad = tmp_path / "cut.parquet"
    bad.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(TraceError, match=r"cut\.parquet"):
        open_trace(bad).table()
