"""IO records: what the daemon decided and saw, one row per IO, as Parquet segments.

Why: a model is trained on one view of latency (fio's, timed in C) and served on
another (the daemon's, timed by its client under its own load). Records are the
daemon's view, in the canonical trace columns (``mittd.traces.schema``) so that
every tool reads them as a trace — ``trace info``, ``train``, ``replay``,
``evaluate`` — plus what the daemon made of each IO:

    p_slow           float32  the model's P(slow); NaN when no prediction was made
    decision         dictionary<int8, string> ``admit``, ``reject`` (EBUSY: the IO
                              never reached the device) or ``shadow-reject`` (the
                              model would have rejected it; the device is in shadow
                              mode, so it was admitted)
    reason           dictionary<int8, string> why (``mittd.daemon.fastpath.REASONS``)
    threshold_index  int8     the latency threshold (head) asked; -1 beyond the model
    deadline_us      float64  the IO's deadline (the device default when it gave none)
    model_sha        string   sha256 of the bundle that decided

Read as a trace, a record segment yields the IOs that reached the device (decision
``admit`` or ``shadow-reject``): a rejected IO was never issued, so it must not
appear in the pending queue a featuriser rebuilds, and it has no latency.

Segments are written by ``mittd.daemon.recorder``; this module only holds the
schema, so the trace readers never import the daemon.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mittd.traces.schema import COLUMNS, SCHEMA

RECORD_KEY = b"mittd.records"  # schema metadata: JSON provenance of a segment

DECISIONS: tuple[str, ...] = ("admit", "reject", "shadow-reject")
D_ADMIT, D_REJECT, D_SHADOW_REJECT = range(len(DECISIONS))
DECISION_TYPE = pa.dictionary(pa.int8(), pa.string())

RECORD_FIELDS: tuple[pa.Field, ...] = (
    pa.field("p_slow", pa.float32()),
    pa.field("decision", DECISION_TYPE, nullable=False),
    pa.field("reason", DECISION_TYPE, nullable=False),
    pa.field("threshold_index", pa.int8(), nullable=False),
    pa.field("deadline_us", pa.float64(), nullable=False),
    pa.field("model_sha", pa.string(), nullable=False),
)
RECORD_SCHEMA = pa.schema([*SCHEMA, *RECORD_FIELDS])
RECORD_COLUMNS: tuple[str, ...] = tuple(RECORD_SCHEMA.names)
EXTRA_COLUMNS: tuple[str, ...] = tuple(f.name for f in RECORD_FIELDS)

SEGMENT_SUFFIX = ".parquet"
PARTIAL_SUFFIX = ".partial"  # a segment still being written (or cut short by kill -9)


def is_record_schema(schema: pa.Schema) -> bool:
    """Whether a Parquet schema is that of a record segment (canonical + decisions)."""
    return all(c in schema.names for c in RECORD_COLUMNS)


def reached_device(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """The canonical columns of the records whose IO was issued to the device."""
    decision = batch.column("decision")
    if isinstance(decision, pa.ChunkedArray):
        decision = decision.combine_chunks()
    rejected = pc.equal(decision.cast(pa.string()), DECISIONS[D_REJECT])
    kept = batch.filter(pc.invert(rejected))
    return kept.select(list(COLUMNS))


# -- reading records: a segment file, a directory of segments, or a glob ----------------------
# Appended below the schema (which stays as it is): every tool reads records through
# these, so "which files does this argument name" has one answer.

import glob  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402

from mittd.traces.errors import BadLines, TraceError  # noqa: E402
from mittd.traces.schema import (  # noqa: E402
    PARQUET_ERRORS,
    corrupted,
    iter_parquet,
    json_metadata,
)

GLOB_CHARS = frozenset("*?[")
PARQUET_MAGIC = b"PAR1"

SegmentSpec = str | Path | Sequence[str | Path]


def is_segment_set(spec: str | Path) -> bool:
    """Whether a trace argument names a set of segments (a directory, or a glob pattern
    that is not itself a file's name) rather than one file."""
    if not str(spec):
        return False  # Path("") is ".": an empty argument is no request to read the cwd
    p = Path(spec)
    if p.is_dir():
        return True
    return not p.exists() and any(c in str(spec) for c in GLOB_CHARS)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _partial_note(partial: int) -> str:
    return f"; {partial} still being written (*{PARTIAL_SUFFIX})" if partial else ""


def _check_member(path: Path, spec: str | Path) -> None:
    """A set's member must be a Parquet file: say which one is not."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(PARQUET_MAGIC))
    except OSError as e:
        raise TraceError(f"{path}: cannot read: {e.strerror or e}") from None
    if head != PARQUET_MAGIC:
        what = "file is empty" if not head else "not a Parquet file"
        raise TraceError(f"{path}: {what}; every file of {spec} must be a Parquet trace segment")


def segment_paths(spec: str | Path) -> list[Path]:
    """The files a trace argument names, in reading order.

    Why one home: the daemon writes records as many rotating segments, and every tool
    (``trace info``, ``train``, ``replay``, ``evaluate``) must agree on which files a
    directory or a pattern stands for. A file is itself (whatever its format); a
    directory is every ``*.parquet`` beneath it, recursively; a glob pattern
    (``records/nvme0/*.parquet``, ``records/**/*.parquet``) is the files it matches.
    A set is sorted by path (segment names sort in time order) and leaves out segments
    still being written (``*.partial``) and hidden files; each of its files must be
    Parquet. A missing file, or a set without a segment, is a one-line TraceError.
    """
    if not str(spec):
        raise TraceError("no trace named (the path is empty)")
    p = Path(spec)
    if p.is_file():
        return [p]
    if p.is_dir():
        found = [f for f in p.rglob("*" + SEGMENT_SUFFIX) if f.is_file() and not _hidden(f, p)]
        if not found:
            partial = sum(1 for f in p.rglob("*" + SEGMENT_SUFFIX + PARTIAL_SUFFIX)
                          if not _hidden(f, p))
            raise TraceError(f"{p}: is a directory, expected a trace file (no "
                             f"*{SEGMENT_SUFFIX} segment beneath it{_partial_note(partial)})")
    elif any(c in str(spec) for c in GLOB_CHARS):
        files = [m for m in map(Path, glob.glob(str(spec), recursive=True)) if m.is_file()]
        found = [m for m in files
                 if not m.name.endswith(PARTIAL_SUFFIX) and not m.name.startswith(".")]
        if not found:
            partial = len(files) - len(found)
            raise TraceError(f"{spec}: no trace segment matches this pattern"
                             f"{_partial_note(partial)}")
    else:
        raise TraceError(f"{p}: no such file")
    found.sort()
    for f in found:
        _check_member(f, spec)
    return found


def _paths(spec: SegmentSpec) -> list[Path]:
    if isinstance(spec, (str, Path)):
        return segment_paths(spec)
    return [Path(s) for s in spec]


def is_record_file(path: str | Path) -> bool:
    """Whether a file is a record segment (Parquet with the decision columns); False
    for anything else, unreadable files included (their reader says what is wrong)."""
    try:
        return is_record_schema(pq.read_schema(path))
    except PARQUET_ERRORS:
        return False


def record_metadata(path: str | Path) -> dict[str, Any]:
    """A segment's record provenance (``mittd.records``: device alias, ...); {} if none."""
    return json_metadata(path, RECORD_KEY)


def iter_records(
    spec: SegmentSpec, columns: Sequence[str] | None = None, batch_rows: int = 1 << 18,
    bad: BadLines | None = None,
) -> Iterator[pa.RecordBatch]:
    """Every row of the record segments ``spec`` names (a file, a directory, a glob, or
    a list of files) — rejected IOs too — segment after segment, as batches of
    RECORD_SCHEMA's ``columns`` (default: all). Bounded memory, for summaries.

    Rows that break a canonical value rule (``traces.checks``) are left out and
    counted in ``bad`` (default: counted and dropped, as the trace view of the same
    segments reports them); page checksums are verified."""
    cols = list(columns or RECORD_COLUMNS)
    unknown = [c for c in cols if c not in RECORD_COLUMNS]
    if unknown:
        raise ValueError(f"not record columns: {', '.join(unknown)}")
    schema = pa.schema([RECORD_SCHEMA.field(c) for c in cols])
    read = list(dict.fromkeys([*COLUMNS, *cols]))  # the canonical ones to validate
    for path in _paths(spec):
        sink = bad if bad is not None else BadLines(str(path), unit="row")
        try:
            names = pq.read_schema(path).names
        except PARQUET_ERRORS as e:
            raise corrupted(path, e) from None
        missing = [c for c in RECORD_COLUMNS if c not in names]
        if missing:
            raise TraceError(f"{path}: not an IO record segment (missing columns: "
                             f"{', '.join(missing)})")
        where = path.name if str(path) != sink.path else ""
        for batch in iter_parquet(path, read, sink, batch_rows, where):
            batch = batch.select(cols)
            try:
                yield batch if batch.schema == schema else batch.cast(schema)
            except PARQUET_ERRORS as e:
                raise TraceError(f"{path}: unreadable record segment: {e}") from None


def read_records(spec: SegmentSpec) -> pa.Table:
    """All record columns of every row, rejected IOs included (for the tools that need
    the decisions: ``trace info``, ``evaluate``), in segment order."""
    return pa.Table.from_batches(list(iter_records(spec)), schema=RECORD_SCHEMA)
