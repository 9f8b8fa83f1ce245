"""blkparse default text output (placeholder being written; see helper)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
from mittd.traces.errors import BadLines, TraceError
from mittd.traces.formats.base import Progress, ReadOptions, TraceFormat


class BlkparseFormat(TraceFormat):
    name = "blkparse"
    title = "blkparse text output"

    def sniff(self, lines: Sequence[str]) -> bool:
        return False

    def read(
        self, path: Path, options: ReadOptions, bad: BadLines, progress: Progress = None
    ) -> Iterator[pa.RecordBatch]:
        raise TraceError("blkparse reader not written yet")
