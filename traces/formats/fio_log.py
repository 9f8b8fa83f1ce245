"""fio per-IO latency logs (``write_lat_log`` with ``log_avg_msec=0``).

fio 3.x writes one line per IO, in completion order::

    time_ms, value, ddir, bs, offset[, prio[, issue_time_ns]]

``time_ms`` is the completion time in milliseconds since the job started (or
since the Unix epoch with ``log_unix_epoch=1``); ``value`` is the latency in
nanoseconds (total latency in ``*_lat.N.log``, completion latency in
``*_clat.N.log``); ``ddir`` is 0 read, 1 write, 2 trim; ``offset`` is present
only with ``log_offset=1``, which mittd needs; ``prio`` appears in fio ≥ 3.23 and
``issue_time_ns`` in fio ≥ 3.36 with ``log_issue_time=1``.

Issue time: taken from ``issue_time_ns`` when present; otherwise it is the
completion time minus the latency, which is only as precise as fio's
millisecond timestamps. ``mittd collect`` avoids that by joining the log with
fio's version-3 iolog, whose issue timestamps are in microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from mittd.traces.errors import BadLines, TraceError
from mittd.traces.formats.base import (
    DelimitedFormat,
    Progress,
    ReadOptions,
    col,
    in_range,
    map_ops,
    non_negative,
    one_of,
    positive,
)
from mittd.traces.schema import make_batch

_BASE = (
    ("time_ms", pa.int64()),
    ("value_ns", pa.int64()),
    ("ddir", pa.int64()),
    ("bs", pa.int64()),
    ("offset", pa.int64()),
)
_PRIO = ("prio", pa.int64())
_ISSUE = ("issue_ns", pa.int64())

_MAX_MS = (2**63 - 1) // 1000  # a millisecond time whose µs still fit in int64
_LOG_NAME = re.compile(r"^(?P<prefix>.*?)_(?P<kind>lat|clat|slat|bw|iops)(\.(?P<job>\d+))?\.log$")


def log_kind(path: Path) -> tuple[str, str]:
    """(prefix, kind) from fio's log file naming, ``<prefix>_<kind>.<job>.log``.

    The prefix names the device: every job of a fio run logs under the same one.
    """
    m = _LOG_NAME.match(path.name)
    if not m:
        return path.stem, "lat"
    return m["prefix"], m["kind"]


class FioLogFormat(DelimitedFormat):
    name = "fio"
    title = "fio per-IO latency log"
    example = "12, 435048, 0, 4096, 4046848, 0"
    layouts = {5: _BASE, 6: (*_BASE, _PRIO), 7: (*_BASE, _PRIO, _ISSUE)}
    checks = (
        ("ddir must be 0 (read), 1 (write) or 2 (trim)", one_of("ddir", [0, 1, 2])),
        ("time must be >= 0", non_negative("time_ms")),
        ("latency must be >= 0", non_negative("value_ns")),
        ("block size must be > 0", positive("bs")),
        ("offset must be >= 0", non_negative("offset")),
        ("time is too large (overflows µs in int64)", in_range("time_ms", 0, _MAX_MS)),
    )

    def layout_error(self, nfields: int) -> str:
        if nfields == 4:
            return "4 fields: the log has no offsets; re-run fio with log_offset=1"
        return super().layout_error(nfields)

    def sniff_extra(self, table: pa.Table, lines: Sequence[str]) -> bool:
        return all(", " in ln for ln in lines)

    def read(
        self, path: Path, options: ReadOptions, bad: BadLines, progress: Progress = None
    ) -> Iterator[pa.RecordBatch]:
        prefix, kind = log_kind(path)
        if kind not in ("lat", "clat"):
            raise TraceError(
                f"{path}: is a fio {kind} log; per-IO latency needs the _lat or _clat log"
            )
        options = replace(options, device=options.device or prefix)
        yield from super().read(path, options, bad, progress)

    def to_canonical(self, table: pa.Table, options: ReadOptions) -> pa.RecordBatch:
        lat_us = col(table, "value_ns").astype(np.float64) / 1000.0
        if "issue_ns" in table.column_names:
            ts = col(table, "issue_ns") // 1000
        else:
            ts = col(table, "time_ms") * 1000 - np.round(lat_us).astype(np.int64)
        return make_batch(
            ts, lat_us, map_ops(table.column("ddir"), [0], [1]),
            col(table, "offset"), col(table, "bs"), options.device or "fio",
        )
