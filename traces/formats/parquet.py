"""mittd's own canonical Parquet traces, read back as they were written."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from mittd.traces.errors import BadLines, TraceError
from mittd.traces.formats.base import Progress, ReadOptions, TraceFormat
from mittd.traces.schema import SCHEMA, constant_strings, iter_trace


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
            batches = iter_trace(path)
            for batch in batches:
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
