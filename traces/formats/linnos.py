"""The LinnOS / Heimdall trace replayer's files (Hao et al., OSDI '20).

- Input (the workload to replay), whitespace separated:
  ``ts_ms dev offset size op`` — timestamp in milliseconds (fractional), a disk
  number the replayer ignores, offset and size in bytes, op 1 = read, 0 = write
  (the opposite of fio). No latency.
- Output (what the replayer measured), comma separated:
  ``ts_ms,latency_us,op,size,offset,submission_ts,ret`` — the trace's intended
  time (ms), the measured latency (µs), op as above, size and offset in bytes,
  the actual submission time (ms since the replay began) and the syscall's
  return value. Issue time is taken from ``submission_ts``; a negative ``ret``
  (a failed IO) keeps its latency but is typed ``other``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from mittd.traces.formats.base import (
    DelimitedFormat,
    ReadOptions,
    col,
    device_names,
    in_range,
    map_ops,
    non_negative,
    one_of,
    positive,
)
from mittd.traces.schema import OP_OTHER, make_batch

MAX_MS = 9.2e15  # milliseconds whose µs still fit in int64 (2**63 µs is 9.22e15 ms)


class LinnosInputFormat(DelimitedFormat):
    name = "linnos-in"
    title = "LinnOS replayer input"
    has_latency = False
    example = "0.026 0 1064960 4096 1"
    delimiter = None
    # Single spaces are the norm and Arrow parses those; other whitespace takes
    # the line-by-line path.
    fast_delimiter = " "
    layouts = {5: (
        ("ts_ms", pa.float64()),
        ("dev", pa.int64()),
        ("offset", pa.int64()),
        ("size", pa.int64()),
        ("op", pa.int64()),
    )}
    checks = (
        ("op must be 1 (read) or 0 (write)", one_of("op", [0, 1])),
        ("ts_ms must be >= 0", non_negative("ts_ms")),
        ("offset must be >= 0", non_negative("offset")),
        ("size must be > 0", positive("size")),
        ("ts_ms is too large (overflows µs in int64)", in_range("ts_ms", 0, MAX_MS)),
    )

    def sniff_extra(self, table: pa.Table, lines: Sequence[str]) -> bool:
        return all("," not in ln for ln in lines)

    def to_canonical(self, table: pa.Table, options: ReadOptions) -> pa.RecordBatch:
        n = table.num_rows
        return make_batch(
            np.round(col(table, "ts_ms") * 1000).astype(np.int64), np.full(n, np.nan),
            map_ops(table.column("op"), [1], [0]),
            col(table, "offset"), col(table, "size"),
            device_names(table, options, "dev", "dev"),
        )


class LinnosOutputFormat(DelimitedFormat):
    name = "linnos-out"
    title = "LinnOS replayer output"
    example = "0.026,171,1,4096,1064960,0.031,4096"
    header_prefix = "ts"
    layouts = {7: (
        ("ts_ms", pa.float64()),
        ("latency_us", pa.float64()),
        ("op", pa.int64()),
        ("size", pa.int64()),
        ("offset", pa.int64()),
        ("submission_ms", pa.float64()),
        ("ret", pa.int64()),
    )}
    checks = (
        ("op must be 1 (read) or 0 (write)", one_of("op", [0, 1])),
        ("latency_us must be >= 0", non_negative("latency_us")),
        ("offset must be >= 0", non_negative("offset")),
        ("size must be > 0", positive("size")),
        ("submission_ts must be >= 0", non_negative("submission_ms")),
        ("latency_us must be finite", in_range("latency_us", 0, 1.7e308)),
        ("submission_ts is too large (overflows µs in int64)",
         in_range("submission_ms", 0, MAX_MS)),
    )

    def to_canonical(self, table: pa.Table, options: ReadOptions) -> pa.RecordBatch:
        ops = map_ops(table.column("op"), [1], [0])
        ops[col(table, "ret") < 0] = OP_OTHER
        return make_batch(
            np.round(col(table, "submission_ms") * 1000).astype(np.int64),
            col(table, "latency_us"), ops, col(table, "offset"), col(table, "size"),
            options.device or "replayed",
        )
