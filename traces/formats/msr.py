"""MSR Cambridge block traces (SNIA IOTTA, Narayanan et al., FAST '08).

``Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime`` with no header.
Timestamp is a Windows FILETIME (100 ns ticks since 1601-01-01), ResponseTime is
in 100 ns ticks, Offset and Size in bytes, Type ``Read`` or ``Write``. Issue
times are converted to Unix-epoch microseconds; the device is ``host_disk``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mittd.traces.formats.base import (
    DelimitedFormat,
    ReadOptions,
    col,
    device_names,
    map_ops,
    non_negative,
    one_of,
    positive,
)
from mittd.traces.schema import make_batch

FILETIME_UNIX_EPOCH = 116_444_736_000_000_000  # 100 ns ticks from 1601 to 1970

_COLUMNS = (
    ("timestamp", pa.int64()),
    ("hostname", pa.string()),
    ("disk", pa.int64()),
    ("type", pa.string()),
    ("offset", pa.int64()),
    ("size", pa.int64()),
    ("response", pa.int64()),
)


class MsrFormat(DelimitedFormat):
    name = "msr"
    title = "MSR Cambridge CSV"
    example = "128166372003061629,wdev,0,Write,3165184,4096,5459"
    layouts = {7: _COLUMNS}
    checks = (
        ("Type must be Read or Write", one_of("type", ["Read", "Write"])),
        ("Offset must be >= 0", non_negative("offset")),
        ("Size must be > 0", positive("size")),
        ("ResponseTime must be >= 0", non_negative("response")),
        ("Timestamp must be a FILETIME after 1970", lambda t: pc.greater_equal(
            t.column("timestamp"), FILETIME_UNIX_EPOCH)),
    )

    def to_canonical(self, table: pa.Table, options: ReadOptions) -> pa.RecordBatch:
        ts = (col(table, "timestamp") - FILETIME_UNIX_EPOCH) // 10
        lat = col(table, "response").astype(np.float64) / 10.0
        device = device_names(table, options, table.column("hostname"), "disk", "_")
        return make_batch(
            ts, lat, map_ops(table.column("type"), ["Read"], ["Write"]),
            col(table, "offset"), col(table, "size"), device,
        )
