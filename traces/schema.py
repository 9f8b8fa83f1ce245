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

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mittd.traces.atomic import OutputError, atomic_path, describe, output_error
from mittd.traces.checks import CANONICAL_CHECKS, first_failed
from mittd.traces.errors import BadLines, TraceError

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


# -- Parquet options: the one home of "every file is checksummed, every read verifies" --
# A flipped bit in a data page otherwise reads back as a latency of 4e303; with page
# CRCs the read fails instead. Files written without checksums still read (the
# verification skips pages that carry none).
WRITE_OPTIONS: dict[str, Any] = {"write_page_checksum": True}
READ_OPTIONS: dict[str, Any] = {"page_checksum_verification": True}
# What pyarrow raises for a damaged or foreign file (OSError: CRC mismatch, bad footer).
PARQUET_ERRORS: tuple[type[BaseException], ...] = (pa.ArrowException, OSError)


def parquet_writer(path: str | Path, schema: pa.Schema, **options: Any) -> pq.ParquetWriter:
    """A ParquetWriter that writes page checksums (every Parquet file mittd writes)."""
    return pq.ParquetWriter(path, schema, **WRITE_OPTIONS, **options)


def open_parquet(path: str | Path) -> pq.ParquetFile:
    """A ParquetFile whose reads verify page checksums; a damaged file is a TraceError."""
    try:
        return pq.ParquetFile(path, **READ_OPTIONS)
    except PARQUET_ERRORS as e:
        raise corrupted(path, e) from None


def corrupted(path: str | Path, e: BaseException) -> TraceError:
    """The one-line error for a Parquet file pyarrow cannot read."""
    detail = describe(e) if isinstance(e, OSError) and e.errno else str(e).strip()
    detail = detail.splitlines()[0] if detail else type(e).__name__
    return TraceError(f"{path}: corrupted Parquet ({detail})")


class TraceWriter:
    """Streams canonical batches into a Parquet file with provenance metadata.

    Writes to ``<path>.partial`` and renames on a clean close (``traces.atomic``:
    fsync, rename, directory fsync), so an interrupted conversion, a full disk or a
    ``kill -9`` never leaves a truncated file under the requested name, and an
    existing file there stays whole until the new one replaces it. A write error is
    an :class:`OutputError` naming the file; the partial is removed.
    """

    def __init__(self, path: str | Path, metadata: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(dict(metadata)).encode()})
        try:
            self._writer = parquet_writer(self._tmp, schema, compression="zstd")
        except BaseException as e:
            self._finish(e)  # removes the partial and raises
            raise
        self.rows = 0

    def _finish(self, e: BaseException | None) -> None:
        """Leave the atomic write: commit on ``None``, else remove the partial and
        raise (an OSError as OutputError)."""
        if e is None:
            self._atomic.__exit__(None, None, None)
            return
        if self._atomic.__exit__(type(e), e, e.__traceback__):
            return  # pragma: no cover - atomic_path never swallows
        raise e

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            try:
                self._writer.write_batch(batch, row_group_size=1 << 20)
            except OSError as e:
                raise self._output_error(e) from None
            self.rows += batch.num_rows

    def _output_error(self, e: OSError) -> OutputError:
        return output_error(self.path, e)

    def close(self) -> None:
        try:
            self._writer.close()
        except BaseException as e:
            with contextlib.suppress(_Aborted):
                self._finish(_Aborted())  # removes the partial
            if isinstance(e, OSError):
                raise self._output_error(e) from None
            raise
        self._finish(None)

    def abort(self) -> None:
        with contextlib.suppress(OSError, pa.ArrowException):
            self._writer.close()
        with contextlib.suppress(_Aborted):
            self._finish(_Aborted())

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _Aborted(Exception):
    """Raised into the atomic write to make it drop the partial."""


def write_trace(path: str | Path, table: pa.Table, metadata: Mapping[str, Any]) -> None:
    """Write a whole canonical table (small traces, tests, collection)."""
    with TraceWriter(path, metadata) as w:
        for batch in table.cast(SCHEMA).to_batches():
            w.write(batch)


def is_parquet(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def json_metadata(path: str | Path, key: bytes) -> dict[str, Any]:
    """The JSON under ``key`` in a Parquet file's schema metadata ({} when absent);
    an unreadable file is one "corrupted Parquet" line."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(key)
    except PARQUET_ERRORS as e:
        raise corrupted(path, e) from None
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}  # provenance is informative only: damaged JSON is no reason to refuse


def trace_metadata(path: str | Path) -> dict[str, Any]:
    """Provenance of a canonical trace file (empty dict when absent)."""
    return json_metadata(path, METADATA_KEY)


def _type_ok(have: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column's stored type reads losslessly as the canonical one."""
    if have == want:
        return True
    if pa.types.is_dictionary(have):
        have = have.value_type
    if pa.types.is_dictionary(want):
        want = want.value_type
    if pa.types.is_string(want):
        return pa.types.is_string(have) or pa.types.is_large_string(have)
    if pa.types.is_floating(want):
        return pa.types.is_floating(have) or pa.types.is_integer(have)
    if pa.types.is_integer(want):
        return pa.types.is_integer(have)
    return False  # pragma: no cover - every canonical type is named above


def check_schema(schema: pa.Schema, path: str | Path) -> None:
    """Refuse, in one line, a Parquet file that is not a canonical trace: a missing
    column, or one whose type cannot be read as the canonical one."""
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise TraceError(
            f"{path}: Parquet file is not a mittd trace (missing columns: {', '.join(missing)})"
        )
    wrong = [f"{f.name} is {schema.field(f.name).type}, expected "
             f"{'string' if f.name == 'op' else f.type}"
             for f in SCHEMA if not _type_ok(schema.field(f.name).type, f.type)]
    if wrong:
        raise TraceError(f"{path}: Parquet file is not a mittd trace ({'; '.join(wrong)})")


def _row_text(batch: pa.RecordBatch, row: int) -> str:
    return ", ".join(f"{c}={batch.column(c)[row].as_py()!r}" for c in COLUMNS)


def canonical_rows(
    batch: pa.RecordBatch, bad: BadLines, first_row: int = 1, where: str = ""
) -> pa.RecordBatch:
    """A batch read from Parquet, made canonical: its types cast to SCHEMA's, the op
    column re-coded to the fixed dictionary (codes 0 read, 1 write, 2 other, whatever
    dictionary the file used), and the rows that break a rule of
    ``traces.checks.CANONICAL_CHECKS`` reported to ``bad`` (row numbers from
    ``first_row``; ``where`` names the file inside a set) and dropped. Other columns
    (a record segment's decisions) are kept."""
    cols = {}
    for f in SCHEMA:
        c = batch.column(f.name)
        if f.name == "op":
            c = c.cast(pa.string()) if not pa.types.is_string(c.type) else c
            if pa.types.is_dictionary(c.type):  # pragma: no cover - cast above
                c = c.dictionary_decode()
        elif c.type != f.type:
            c = c.cast(f.type)
        cols[f.name] = c
    view = pa.RecordBatch.from_arrays([cols[f.name] for f in SCHEMA], names=list(COLUMNS))
    first, names = first_failed(view, CANONICAL_CHECKS)
    codes = pc.fill_null(pc.index_in(cols["op"], value_set=_OP_DICTIONARY), OP_OTHER)
    cols["op"] = pa.DictionaryArray.from_arrays(codes.cast(pa.int8()), _OP_DICTIONARY)
    arrays = [cols.get(n, batch.column(n)) for n in batch.schema.names]
    fields = [SCHEMA.field(n) if n in cols else batch.schema.field(n)
              for n in batch.schema.names]
    out = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
    invalid = first >= 0
    if not invalid.any():
        return out
    prefix = f"{where}: " if where else ""
    rows = np.flatnonzero(invalid)
    room = 1 if bad.strict else max(bad.sample_size - len(bad.samples), 0)
    for r in rows[:room]:
        bad.add(first_row + int(r), _row_text(view, int(r)), prefix + names[first[r]])
    bad.skip(len(rows) - min(room, len(rows)))
    return out.filter(pa.array(~invalid))


def iter_parquet(
    path: str | Path, columns: list[str], bad: BadLines, batch_rows: int = 1 << 18,
    where: str = "",
) -> Iterator[pa.RecordBatch]:
    """The one reading loop of mittd's Parquet files: ``columns`` (the canonical ones
    among them) checked against the schema, page checksums verified, rows made
    canonical and validated by :func:`canonical_rows`; a damaged file is one
    TraceError naming it."""
    pf = open_parquet(path)
    try:
        check_schema(pf.schema_arrow, path)
        row = 1
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            n = batch.num_rows
            yield canonical_rows(batch, bad, row, where)
            row += n
    except PARQUET_ERRORS as e:
        raise corrupted(path, e) from None
    finally:
        pf.close()


def iter_trace(
    path: str | Path, batch_rows: int = 1 << 18, bad: BadLines | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a canonical Parquet trace batch by batch (bounded memory). Rows that
    break a value rule go to ``bad``; without one the first such row is a TraceError."""
    bad = bad if bad is not None else BadLines(str(path), strict=True, unit="row")
    yield from iter_parquet(path, list(COLUMNS), bad, batch_rows)


def read_trace(path: str | Path, bad: BadLines | None = None) -> pa.Table:
    """Load a whole canonical trace into memory (see :func:`iter_trace`)."""
    return pa.Table.from_batches(list(iter_trace(path, bad=bad)), schema=SCHEMA)
