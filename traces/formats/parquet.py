"""mittd's own canonical Parquet traces, read back as they were written; the daemon's
IO records (``mittd.traces.records``) read as the trace of the IOs that reached the
device, so every tool that reads a trace reads records too."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mittd.traces.errors import BadLines, TraceError
from mittd.traces.formats.base import Progress, ReadOptions, TraceFormat
from mittd.traces.records import is_record_schema, reached_device
from mittd.traces.schema import COLUMNS, SCHEMA, check_schema, constant_strings

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
        try:
            pf = pq.ParquetFile(path)
            records = is_record_schema(pf.schema_arrow)
            if not records:
                check_schema(pf.schema_arrow, path)
            columns = [*COLUMNS, "decision"] if records else list(COLUMNS)
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                if records:  # a rejected IO never reached the device: not in its trace
                    batch = reached_device(batch)
                batch = batch.cast(SCHEMA) if batch.schema != SCHEMA else batch
                if options.device:
                    batch = batch.set_column(
                        5, "device", constant_strings(options.device, batch.num_rows)
                    )
                yield batch
        except (pa.ArrowInvalid, OSError) as e:
            raise TraceError(f"{path}: unreadable Parquet trace: {e}") from None
        except ValueError as e:
            raise TraceError(str(e)) from None
        if progress is not None:
            progress(size)
