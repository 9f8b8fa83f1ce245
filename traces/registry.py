"""Which trace formats mittd reads, how a file's format is recognised, and the
one entry point the rest of mittd uses to read any trace: ``open_trace``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from mittd.traces.errors import BadLines, TraceError
from mittd.traces.formats.base import ReadOptions, TraceFormat
from mittd.traces.formats.blkparse import BlkparseFormat
from mittd.traces.formats.cloud import AlibabaFormat, TencentFormat
from mittd.traces.formats.fio_log import FioLogFormat
from mittd.traces.formats.linnos import LinnosInputFormat, LinnosOutputFormat
from mittd.traces.formats.msr import MsrFormat
from mittd.traces.formats.parquet import ParquetFormat
from mittd.traces.formats.systor import SystorFormat
from mittd.traces.schema import SCHEMA, trace_metadata
from mittd.traces.source import check_readable, read_head

# Detection order: the most distinctive formats first.
FORMATS: dict[str, TraceFormat] = {
    f.name: f
    for f in (
        ParquetFormat(),
        BlkparseFormat(),
        FioLogFormat(),
        SystorFormat(),
        LinnosOutputFormat(),
        MsrFormat(),
        AlibabaFormat(),
        TencentFormat(),
        LinnosInputFormat(),
    )
}
FORMAT_NAMES: tuple[str, ...] = ("auto", *FORMATS)
MIN_SNIFF_SCORE = 0.34


def detect_format(path: str | Path) -> TraceFormat:
    """Recognise a trace's format from its content (not its name)."""
    p = check_readable(path)
    head = read_head(p)
    if head.startswith(b"PAR1"):
        return FORMATS["parquet"]
    if not head.strip():
        raise TraceError(f"{p}: file is empty")
    if b"\x00" in head[:4096]:
        raise TraceError(f"{p}: binary file of unknown format (not a text trace or Parquet)")
    text = head.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if len(head) >= (64 << 10) and len(lines) > 1:
        lines = lines[:-1]  # the last line of the head may be cut short
    lines = [ln for ln in lines if ln.strip()][:50]
    # The best fit wins (ties go to the more distinctive format, earlier in FORMATS);
    # a file where fewer than a third of the first lines fit any format is unknown.
    scores = [(float(fmt.sniff(lines)), -i, fmt) for i, fmt in enumerate(FORMATS.values())]
    score, _, best = max(scores, key=lambda s: s[:2])
    if score >= MIN_SNIFF_SCORE:
        return best
    first = lines[0] if lines else ""
    shown = first if len(first) <= 80 else first[:77] + "..."
    raise TraceError(
        f"{p}: unrecognised trace format (first line: {shown!r}); "
        f"pass --format, one of: {', '.join(FORMATS)}"
    )


def get_format(name: str) -> TraceFormat:
    if name not in FORMATS:
        raise TraceError(f"unknown trace format {name!r}; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]


@dataclass
class TraceStream:
    """An opened trace: its format, a tally of malformed lines, and its batches."""

    path: Path
    format: TraceFormat
    options: ReadOptions
    bad: BadLines = field(init=False)
    rows: int = 0

    def __post_init__(self) -> None:
        self.bad = BadLines(str(self.path), strict=self.options.strict)

    def batches(self, progress: Callable[[int], None] | None = None) -> Iterator[pa.RecordBatch]:
        for batch in self.format.read(self.path, self.options, self.bad, progress):
            self.rows += batch.num_rows
            yield batch

    def table(self) -> pa.Table:
        """The whole trace in memory (small traces; prefer ``batches``)."""
        return pa.Table.from_batches(list(self.batches()), schema=SCHEMA)

    def source_metadata(self) -> dict[str, object]:
        """Provenance of the source: carried over for Parquet, described otherwise."""
        if self.format.name == "parquet":
            return trace_metadata(self.path)
        return {}


def open_trace(
    path: str | Path, fmt: str = "auto", options: ReadOptions | None = None
) -> TraceStream:
    """Open any supported trace; ``fmt='auto'`` detects the format from content."""
    p = check_readable(path)
    chosen = detect_format(p) if fmt == "auto" else get_format(fmt)
    return TraceStream(p, chosen, options or ReadOptions())
