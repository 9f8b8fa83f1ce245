"""SNIA SYSTOR '17 LUN traces (Lee et al., "Understanding storage traffic
characteristics on enterprise virtual desktop infrastructure").

``Timestamp,Response,IOType,LUN,Offset,Size`` with that header line. Timestamp
is Unix time in seconds (fractional), Response is the latency in seconds,
IOType ``R`` or ``W``, Offset and Size in bytes. The device is ``lun<N>``.
"""

from __future__ import annotations

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
from mittd.traces.schema import make_batch

MAX_SECONDS = 9.2e12  # seconds whose µs still fit in int64 (2**63 µs is 9.22e12 s)

_COLUMNS = (
    ("timestamp", pa.float64()),
    ("response", pa.float64()),
    ("iotype", pa.string()),
    ("lun", pa.int64()),
    ("offset", pa.int64()),
    ("size", pa.int64()),
)


class SystorFormat(DelimitedFormat):
    name = "systor17"
    title = "SNIA SYSTOR '17 LUN trace"
    example = "1487194614.164466,0.000442,R,2,3565547520,4096"
    header_prefix = "Timestamp,Response,IOType"
    layouts = {6: _COLUMNS}
    checks = (
        ("IOType must be R or W", one_of("iotype", ["R", "W", "r", "w"])),
        ("Timestamp must be >= 0", non_negative("timestamp")),
        ("Response must be >= 0", non_negative("response")),
        ("Offset must be >= 0", non_negative("offset")),
        ("Size must be > 0", positive("size")),
        ("Timestamp is too large (overflows µs in int64)",
         in_range("timestamp", 0, MAX_SECONDS)),
        ("Response must be finite", in_range("response", 0, MAX_SECONDS)),
    )

    def to_canonical(self, table: pa.Table, options: ReadOptions) -> pa.RecordBatch:
        ts = np.round(col(table, "timestamp") * 1e6).astype(np.int64)
        lat = col(table, "response") * 1e6
        device = device_names(table, options, "lun", "lun")
        return make_batch(
            ts, lat, map_ops(table.column("iotype"), ["R", "r"], ["W", "w"]),
            col(table, "offset"), col(table, "size"), device,
        )
