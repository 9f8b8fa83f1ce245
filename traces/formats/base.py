"""What every trace format provides, and the shared machinery for delimited text.

A format knows how to recognise its own content (``sniff``) and how to turn a
file into canonical record batches (``read``). Most block-trace formats are
delimited text, so ``DelimitedFormat`` does the heavy lifting: each line-aligned
block is first parsed by Arrow's multi-threaded CSV parser (the fast path); only
a block that fails to parse or validate is re-parsed line by line in Python (the
slow path), which pin-points every malformed line by number. Clean files never
touch the slow path, so throughput stays in the millions of records per second.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mittd.traces.checks import (  # noqa: F401 - the formats' rules, re-exported
    INT64_MAX,
    INT64_MIN,
    first_failed,
    in_range,
    non_negative,
    one_of,
    positive,
)
from mittd.traces.errors import BadLines, TraceError
from mittd.traces.source import DEFAULT_BLOCK_BYTES, Block, iter_blocks

Column = tuple[str, pa.DataType]
Progress = Callable[[int], None] | None


@dataclass(frozen=True)
class ReadOptions:
    """Knobs shared by all readers."""

    strict: bool = False
    device: str | None = None  # override the device name the source gives
    block_bytes: int = DEFAULT_BLOCK_BYTES


class TraceFormat(ABC):
    """One source format: how to recognise it and how to read it."""

    name: str = ""
    title: str = ""
    has_latency: bool = True
    example: str = ""

    @abstractmethod
    def sniff(self, lines: Sequence[str]) -> float:
        """How well the first non-empty lines of a file fit this format, 0..1."""

    @abstractmethod
    def read(
        self, path: Path, options: ReadOptions, bad: BadLines, progress: Progress = None
    ) -> Iterator[pa.RecordBatch]:
        """Yield canonical record batches, reporting malformed lines to ``bad``."""

    def describe(self) -> dict[str, object]:
        return {"format": self.name, "title": self.title, "has_latency": self.has_latency}


def _int64(text: str) -> int:
    """An int64 field; a value beyond int64 is a malformed field (Arrow would raise
    OverflowError building the column)."""
    v = int(text)
    if not INT64_MIN <= v <= INT64_MAX:
        raise ValueError("out of the int64 range")
    return v


def _py_converter(t: pa.DataType) -> Callable[[str], object]:
    if pa.types.is_integer(t):
        return _int64
    if pa.types.is_floating(t):
        return lambda s: float(s)
    return lambda s: s.strip()


class DelimitedFormat(TraceFormat):
    """A text format with one IO per line and a fixed set of delimited fields.

    Subclasses declare ``layouts`` (field count → columns in file order),
    ``checks`` (vectorised validity rules), and implement ``to_canonical``.
    """

    delimiter: str | None = ","  # None: any run of whitespace
    fast_delimiter: str | None = None  # Arrow's delimiter when it differs (e.g. " ")
    header_prefix: str | None = None  # first line starting with this is a header
    layouts: dict[int, Sequence[Column]] = {}
    checks: Sequence[tuple[str, Callable[[pa.Table], pa.Array]]] = ()

    # -- format-specific -------------------------------------------------
    @abstractmethod
    def to_canonical(self, table: pa.Table, options: ReadOptions) -> pa.RecordBatch:
        """Convert a parsed, validated table of raw columns to a canonical batch."""

    def layout_error(self, nfields: int) -> str:
        allowed = " or ".join(str(n) for n in sorted(self.layouts))
        return f"expected {allowed} fields, got {nfields}"

    # -- helpers ----------------------------------------------------------
    def split(self, line: str) -> list[str]:
        return line.split() if self.delimiter is None else line.split(self.delimiter)

    def is_header(self, line: str) -> bool:
        return self.header_prefix is not None and line.strip().lower().startswith(
            self.header_prefix.lower()
        )

    def parse_line(self, line: str, columns: Sequence[Column]) -> list[object]:
        """Slow path for one line; raises ValueError with a reason."""
        fields = self.split(line.strip())
        if len(fields) != len(columns):
            raise ValueError(self.layout_error(len(fields)))
        out = []
        for value, (name, t) in zip(fields, columns, strict=True):
            try:
                out.append(_py_converter(t)(value))
            except ValueError:
                raise ValueError(f"field {name!r} is not a valid {t}: {value.strip()!r}") from None
        return out

    def invalid_rows(self, table: pa.Table) -> tuple[np.ndarray, list[str]]:
        """Per-row index of the first failed check (-1 = valid) and check names."""
        return first_failed(table, self.checks)

    # -- sniffing -----------------------------------------------------------
    def sniff(self, lines: Sequence[str]) -> float:
        body = [ln for ln in lines if ln.strip()]
        if body and self.is_header(body[0]):
            return 1.0
        body = body[:20]
        if not body:
            return 0.0
        counts = Counter(len(self.split(ln.strip())) for ln in body)
        known = [(c, n) for n, c in counts.items() if n in self.layouts]
        if not known:
            return 0.0
        columns = self.layouts[max(known)[1]]
        rows = []
        for ln in body:
            try:
                rows.append(self.parse_line(ln, columns))
            except ValueError:
                continue
        if not rows:
            return 0.0
        table = self._table_from_rows(rows, columns)
        if not self.sniff_extra(table, body):
            return 0.0
        first, _ = self.invalid_rows(table)
        return float((first < 0).sum()) / len(body)

    def sniff_extra(self, table: pa.Table, lines: Sequence[str]) -> bool:
        """Hook for formats that need more than a clean parse to be told apart."""
        return True

    # -- reading --------------------------------------------------------------
    @staticmethod
    def _table_from_rows(rows: list[list[object]], columns: Sequence[Column]) -> pa.Table:
        cols = list(zip(*rows, strict=True)) if rows else [[] for _ in columns]
        return pa.table(
            {name: pa.array(c, type=t) for (name, t), c in zip(columns, cols, strict=True)}
        )

    def _fast(self, data: bytes, columns: Sequence[Column]) -> pa.Table | None:
        delimiter = self.fast_delimiter or self.delimiter
        if delimiter is None or len(delimiter) != 1:
            return None
        try:
            table = pacsv.read_csv(
                pa.py_buffer(data),
                read_options=pacsv.ReadOptions(
                    column_names=[c for c, _ in columns], block_size=1 << 22
                ),
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict(columns), strings_can_be_null=False
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if any(col.null_count for col in table.columns):
            return None
        first, _ = self.invalid_rows(table)
        return table if not (first >= 0).any() else None

    def _slow(self, block: Block, columns: Sequence[Column], bad: BadLines) -> pa.Table:
        lines = block.data.split(b"\n")
        rows: list[list[object]] = []
        line_nos: list[int] = []
        problems: list[tuple[int, str]] = []  # (index in block, reason)
        for i, raw in enumerate(lines):
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            if not line.strip():
                continue
            try:
                rows.append(self.parse_line(line, columns))
                line_nos.append(i)
            except ValueError as e:
                problems.append((i, str(e)))
        table = self._table_from_rows(rows, columns)
        first, names = self.invalid_rows(table)
        invalid = first >= 0
        problems += [(line_nos[r], names[first[r]]) for r in np.flatnonzero(invalid)]
        for i, reason in sorted(problems):  # in line order, so --strict stops at the first
            bad.add(block.first_line + i, lines[i].decode("utf-8", errors="replace"), reason)
        return table.filter(pa.array(~invalid)) if invalid.any() else table

    def _columns_for(self, block: Block, path: Path) -> Sequence[Column]:
        """The layout most of the first records follow (a stray bad line is not enough
        to reject a file, a file with no record in any known layout is)."""
        counts: Counter[int] = Counter()
        for raw in block.data[: 64 << 10].split(b"\n")[:200]:
            line = raw.decode("utf-8", errors="replace").strip()
            if line and not self.is_header(line):
                counts[len(self.split(line))] += 1
        known = [(c, n) for n, c in counts.items() if n in self.layouts]
        if known:
            return self.layouts[max(known)[1]]
        n = counts.most_common(1)[0][0] if counts else 0
        raise TraceError(
            f"{path}: not a {self.title} file: records have {n} fields ({self.layout_error(n)})"
        )

    def read(
        self, path: Path, options: ReadOptions, bad: BadLines, progress: Progress = None
    ) -> Iterator[pa.RecordBatch]:
        columns: Sequence[Column] | None = None
        first_block = True
        for block in iter_blocks(path, options.block_bytes, progress):
            if first_block:
                first_block = False
                block = self._drop_header(block)
                if not block.data.strip():
                    continue
                columns = self._columns_for(block, path)
            assert columns is not None
            table = self._fast(block.data, columns)
            if table is None:
                table = self._slow(block, columns, bad)
            if table.num_rows:
                yield self.to_canonical(table, options)

    def _drop_header(self, block: Block) -> Block:
        data, line = block.data, block.first_line
        while True:
            nl = data.find(b"\n")
            head = data[: nl if nl >= 0 else len(data)].decode("utf-8", errors="replace")
            if head.strip() and not self.is_header(head):
                return Block(data, line)
            if nl < 0:
                return Block(b"", line)
            data, line = data[nl + 1 :], line + 1


# -- small vectorised helpers shared by the formats ---------------------------

def col(table: pa.Table, name: str) -> np.ndarray:
    """A column as a numpy array (copy only when Arrow needs one)."""
    return table.column(name).to_numpy()


def map_ops(values: pa.ChunkedArray | pa.Array, reads: Sequence, writes: Sequence) -> np.ndarray:
    """Op codes (0 read, 1 write, 2 other) from a raw op column."""
    reads_m = pc.is_in(values, value_set=pa.array(list(reads))).to_numpy(zero_copy_only=False)
    writes_m = pc.is_in(values, value_set=pa.array(list(writes))).to_numpy(zero_copy_only=False)
    codes = np.full(len(reads_m), 2, dtype=np.int8)
    codes[writes_m] = 1
    codes[reads_m] = 0
    return codes


def device_names(
    table: pa.Table, options: ReadOptions, prefix: str | pa.ChunkedArray, column: str,
    sep: str = "",
) -> str | pa.Array:
    """The device column: ``options.device`` when given, else ``prefix + sep + column``."""
    if options.device:
        return options.device
    return pc.binary_join_element_wise(
        prefix, pc.cast(table.column(column), pa.string()), sep
    ).combine_chunks()
