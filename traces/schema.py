"""The canonical labelled trace: one row per IO, stored as Parquet.

Every reader converts its source format into this schema, and everything
downstream (featurisers, training, replay) reads only this schema, so a new
trace format never touches the rest of mittd.

Columns
    ts_issue_us  int64    issue (submission) time of the IO, microseconds. Absolute
                          (Unix epoch) when the source gives wall-clock time,
                          otherwise relative to the start of the run.
    latency_us   float64  device latency in microseconds; NaN when the source
                          records none (Alibaba, Tencent, LinnOS replayer input).
    op           dictionary<int8, string> with the fixed dictionary
                          ``read``, ``write``, ``other`` (codes 0, 1, 2).
    offset       int64    byte offset on the device.
    size         int64    bytes transferred.
    device       string   device / volume / LUN name as the source names it.

Provenance (source format, source file, collection parameters) is kept as JSON
in the Parquet schema metadata under the key ``mittd.trace``.

Row order is the source's: issue order for most formats, completion order for
fio latency logs and blkparse. ``mittd collect`` and ``mittd trace convert
--sort`` write traces sorted by ``ts_issue_us`` (metadata ``reader.sorted_by_issue``);
consumers that need issue order sort on load.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
METADATA_KEY = b"mittd.trace"

OP_NAMES: tuple[str, ...] = ("read", "write", "other")
OP_READ, OP_WRITE, OP_OTHER = 0, 1, 2
_OP_DICTIONARY = pa.array(OP_NAMES, type=pa.string())
OP_TYPE = pa.dictionary(pa.int8(), pa.string())

SCHEMA = pa.schema(
    [
        pa.field("ts_issue_us", pa.int64(), nullable=False),
        pa.field("latency_us", pa.float64()),
        pa.field("op", OP_TYPE, nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)


def op_array(codes: np.ndarray) -> pa.DictionaryArray:
    """Wrap int8 op codes (0 read, 1 write, 2 other) as the schema's op column."""
    return pa.DictionaryArray.from_arrays(
        pa.array(np.asarray(codes, dtype=np.int8)), _OP_DICTIONARY
    )


def constant_strings(value: str, n: int) -> pa.Array:
    """A string column holding ``value`` n times, built without a Python loop."""
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([value])
    ).cast(pa.string())


def make_batch(
    ts_issue_us: np.ndarray | pa.Array,
    latency_us: np.ndarray | pa.Array,
    op_codes: np.ndarray,
    offset: np.ndarray | pa.Array,
    size: np.ndarray | pa.Array,
    device: str | pa.Array,
) -> pa.RecordBatch:
    """Assemble one canonical record batch from column arrays."""
    n = len(op_codes)
    dev = constant_strings(device, n) if isinstance(device, str) else device
    return pa.RecordBatch.from_arrays(
        [
            pa.array(ts_issue_us, type=pa.int64()),
            pa.array(latency_us, type=pa.float64()),
            op_array(op_codes),
            pa.array(offset, type=pa.int64()),
            pa.array(size, type=pa.int64()),
            dev,
        ],
        schema=SCHEMA,
    )


def empty_batch() -> pa.RecordBatch:
    """A canonical batch with no rows."""
    return make_batch(
        np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int8),
        np.zeros(0, np.int64), np.zeros(0, np.int64), "",
    )


def build_metadata(
    source_format: str,
    source_file: str | None,
    collection: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Provenance dictionary stored alongside the trace."""
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "source_format": source_format,
        "source_file": source_file,
        "collection": dict(collection or {}),
        "created_unix": int(time.time()),
    }
    meta.update(extra)
    return meta


class TraceWriter:
    """Streams canonical batches into a Parquet file with provenance metadata.

    Writes to ``<path>.partial`` and renames on a clean close, so an interrupted
    conversion never leaves a truncated file under the requested name.
    """

    def __init__(self, path: str | Path, metadata: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(dict(metadata)).encode()})
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(batch, row_group_size=1 << 20)
            self.rows += batch.num_rows

    def close(self) -> None:
        self._writer.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_trace(path: str | Path, table: pa.Table, metadata: Mapping[str, Any]) -> None:
    """Write a whole canonical table (small traces, tests, collection)."""
    with TraceWriter(path, metadata) as w:
        for batch in table.cast(SCHEMA).to_batches():
            w.write(batch)


def is_parquet(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def trace_metadata(path: str | Path) -> dict[str, Any]:
    """Provenance of a canonical trace file (empty dict when absent)."""
    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def check_schema(schema: pa.Schema, path: str | Path) -> None:
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise ValueError(
            f"{path}: Parquet file is not a mittd trace (missing columns: {', '.join(missing)})"
        )


def iter_trace(path: str | Path, batch_rows: int = 1 << 18) -> Iterator[pa.RecordBatch]:
    """Stream a canonical Parquet trace batch by batch (bounded memory)."""
    pf = pq.ParquetFile(path)
    check_schema(pf.schema_arrow, path)
    yield from pf.iter_batches(batch_size=batch_rows, columns=list(COLUMNS))


def read_trace(path: str | Path) -> pa.Table:
    """Load a whole canonical trace into memory."""
    table = pq.read_table(path, columns=list(COLUMNS))
    check_schema(table.schema, path)
    return table
