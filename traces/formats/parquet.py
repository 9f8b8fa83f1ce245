"""mittd's own canonical Parquet traces, read back as they were written; the daemon's
IO records (``mittd.traces.records``) read as the trace of the IOs that reached the
device, so every tool that reads a trace reads records too."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from mittd.traces.errors import BadLines
from mittd.traces.formats.base import Progress, ReadOptions, TraceFormat
from mittd.traces.records import is_record_schema, reached_device
from mittd.traces.schema import (
    COLUMNS,
    PARQUET_ERRORS,
    SCHEMA,
    constant_strings,
    corrupted,
    iter_parquet,
    open_parquet,
)

BATCH_ROWS = 1 << 18


class ParquetFormat(TraceFormat):
    name = "parquet"
    title = "mittd canonical Parquet trace"
    example = "(binary: Parquet file with ts_issue_us, latency_us, op, offset, size, device)"

    def sniff(self, lines: Sequence[str]) -> float:
        return 0.0  # recognised by its magic bytes, see registry.detect_format

    def read(
        self, path: Path, options: ReadOptions, bad: BadLines, progress: Progress = None
    ) -> Iterator[pa.RecordBatch]:
        size = path.stat().st_size
        pf = open_parquet(path)
        try:
            records = is_record_schema(pf.schema_arrow)
        except PARQUET_ERRORS as e:  # pragma: no cover - the schema was read on open
            raise corrupted(path, e) from None
        finally:
            pf.close()
        columns = [*COLUMNS, "decision"] if records else list(COLUMNS)
        where = path.name if str(path) != bad.path else ""
        for batch in iter_parquet(path, columns, bad, BATCH_ROWS, where):
            if records:  # a rejected IO never reached the device: not in its trace
                batch = reached_device(batch)
            if options.device:
                batch = batch.set_column(
                    5, "device", constant_strings(options.device, batch.num_rows)
                )
            yield batch if batch.schema == SCHEMA else batch.cast(SCHEMA)
        if progress is not None:
            progress(size)
