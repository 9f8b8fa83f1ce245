"""Which trace formats mittd reads, how a file's format is recognised, and the
one entry point the rest of mittd uses to read any trace: ``open_trace`` — one file,
or a set of Parquet segments (a directory or a glob, e.g. the daemon's IO records)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
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
from mittd.traces.records import is_record_file, is_segment_set, segment_paths
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
    numbered = list(enumerate(text.splitlines(), 1))
    if len(head) >= (64 << 10) and len(numbered) > 1:
        numbered = numbered[:-1]  # the last line of the head may be cut short
    numbered = [(n, ln) for n, ln in numbered if ln.strip()][:50]
    lines = [ln for _, ln in numbered]
    # The best fit wins (ties go to the more distinctive format, earlier in FORMATS);
    # a file where fewer than a third of the first lines fit any format is unknown.
    scores = [(float(fmt.sniff(lines)), -i, fmt) for i, fmt in enumerate(FORMATS.values())]
    score, _, best = max(scores, key=lambda s: s[:2])
    if score >= MIN_SNIFF_SCORE:
        return best
    raise TraceError(f"{p}: unrecognised trace format ({_why_unknown(numbered, scores)}); "
                     f"pass --format, one of: {', '.join(FORMATS)}")


def _why_unknown(numbered: list[tuple[int, str]],
                 scores: list[tuple[float, int, TraceFormat]]) -> str:
    """Why no format fits: the best fits, and a line that no format reads (quoting the
    first line would show a valid one when only the rest is garbage)."""
    tried = sorted((s for s in scores if s[0] > 0), key=lambda s: s[:2], reverse=True)
    fits = ", ".join(f"{f.name} {sc:.0%}" for sc, _, f in tried[:3])
    why = (f"lines that fit: {fits}; fewer than {MIN_SNIFF_SCORE:.0%} of the first lines "
           f"fit any format" if fits else "no line fits any format")
    fmts = [f for f in FORMATS.values() if f.name != "parquet"]
    for n, line in numbered:
        if not any(f.sniff([line]) > 0 for f in fmts):
            shown = line if len(line) <= 80 else line[:77] + "..."
            return f"{why}; line {n} fits none: {shown!r}"
    return why


def get_format(name: str) -> TraceFormat:
    if name not in FORMATS:
        raise TraceError(f"unknown trace format {name!r}; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]


@dataclass
class TraceStream:
    """An opened trace: its format, a tally of malformed lines, and its batches.

    ``path`` is what the user named (a file, a directory or a glob pattern); ``paths``
    the files read, in order — one for a file, every segment for a set.
    """

    path: Path
    format: TraceFormat
    options: ReadOptions
    paths: tuple[Path, ...] = ()
    bad: BadLines = field(init=False)
    rows: int = 0

    def __post_init__(self) -> None:
        if not self.paths:
            self.paths = (self.path,)
        self.bad = BadLines(str(self.path), strict=self.options.strict,
                            unit="row" if self.format.name == "parquet" else "line")

    @property
    def is_set(self) -> bool:
        """Whether the trace is a set of segments rather than one named file."""
        return self.paths != (self.path,)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of every file read: what a progress bar is sized by."""
        return sum(p.stat().st_size for p in self.paths)

    @cached_property
    def record_paths(self) -> tuple[Path, ...]:
        """The files that are daemon IO records (``mittd.traces.records``); empty for
        an ordinary trace."""
        if self.format.name != "parquet":
            return ()
        return tuple(p for p in self.paths if is_record_file(p))

    @property
    def is_records(self) -> bool:
        return bool(self.record_paths)

    def batches(self, progress: Callable[[int], None] | None = None) -> Iterator[pa.RecordBatch]:
        for path in self.paths:
            for batch in self.format.read(path, self.options, self.bad, progress):
                self.rows += batch.num_rows
                yield batch

    def table(self) -> pa.Table:
        """The whole trace in memory (small traces; prefer ``batches``)."""
        return pa.Table.from_batches(list(self.batches()), schema=SCHEMA)

    def source_metadata(self) -> dict[str, object]:
        """Provenance of the source: carried over for Parquet (a set's from its first
        segment, with the set named as the source file), described otherwise."""
        if self.format.name != "parquet":
            return {}
        meta: dict[str, object] = trace_metadata(self.paths[0])
        if self.is_set:
            meta = {**meta, "source_file": str(self.path), "segments": len(self.paths)}
        return meta


def open_trace(
    path: str | Path, fmt: str = "auto", options: ReadOptions | None = None
) -> TraceStream:
    """Open any supported trace; ``fmt='auto'`` detects the format from content.

    A directory or a glob pattern names a set of Parquet segments
    (``mittd.traces.records.segment_paths``), read one after the other as one trace.
    """
    if is_segment_set(path):
        if fmt not in ("auto", "parquet"):
            raise TraceError(f"{path}: a directory or pattern is read as Parquet segments; "
                             f"--format {fmt} does not apply")
        paths = segment_paths(path)
        return TraceStream(Path(path), FORMATS["parquet"], options or ReadOptions(),
                           tuple(paths))
    p = check_readable(path)
    chosen = detect_format(p) if fmt == "auto" else get_format(fmt)
    return TraceStream(p, chosen, options or ReadOptions())
