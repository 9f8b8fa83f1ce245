"""Cloud block-service traces without latency: Alibaba and Tencent CBS.

They record what a volume was asked to do, not how long it took, so their
``latency_us`` is NaN; they are workloads to replay with ``mittd collect
--replay`` on a real device, which then measures the latency.

- Alibaba (Li et al., IISWC '20): ``device_id,opcode,offset,length,timestamp``;
  opcode ``R``/``W``, offset and length in bytes, timestamp in microseconds
  (Unix epoch). The device is ``<device_id>``.
- Tencent CBS (Zhang et al., USENIX ATC '20):
  ``Timestamp,Offset,Size,IOType,VolumeID``; Timestamp in seconds (Unix epoch),
  Offset and Size in 512-byte sectors, IOType 0 = read, 1 = write. The device is
  ``vol<VolumeID>``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mittd.traces.checks import INT64_MAX
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

SECTOR = 512


class AlibabaFormat(DelimitedFormat):
    name = "alibaba"
    title = "Alibaba block trace"
    has_latency = False
    example = "0,R,126703644672,4096,1577808000000147"
    header_prefix = "device_id,opcode"
    layouts = {5: (
        ("device_id", pa.int64()),
        ("opcode", pa.string()),
        ("offset", pa.int64()),
        ("length", pa.int64()),
        ("timestamp", pa.int64()),
    )}
    checks = (
        ("opcode must be R or W", one_of("opcode", ["R", "W", "r", "w"])),
        ("offset must be >= 0", non_negative("offset")),
        ("length must be > 0", positive("length")),
        ("timestamp must be >= 0", non_negative("timestamp")),
    )

    def to_canonical(self, table: pa.Table, options: ReadOptions) -> pa.RecordBatch:
        n = table.num_rows
        return make_batch(
            col(table, "timestamp"), np.full(n, np.nan),
            map_ops(table.column("opcode"), ["R", "r"], ["W", "w"]),
            col(table, "offset"), col(table, "length"),
            device_names(table, options, "", "device_id"),
        )


class TencentFormat(DelimitedFormat):
    name = "tencent"
    title = "Tencent CBS trace"
    has_latency = False
    example = "1538323200,12854624,8,1,1283"
    header_prefix = "timestamp,offset,size,iotype"
    layouts = {5: (
        ("timestamp", pa.int64()),
        ("offset", pa.int64()),
        ("size", pa.int64()),
        ("iotype", pa.int64()),
        ("volume", pa.int64()),
    )}
    checks = (
        ("IOType must be 0 (read) or 1 (write)", one_of("iotype", [0, 1])),
        ("Offset must be >= 0", non_negative("offset")),
        ("Size must be > 0", positive("size")),
        ("Timestamp must be >= 0", non_negative("timestamp")),
        ("Timestamp is too large (overflows µs in int64)",
         in_range("timestamp", 0, INT64_MAX // 1_000_000)),
        ("Offset is too large (overflows bytes in int64)",
         in_range("offset", 0, INT64_MAX // SECTOR)),
        ("Size is too large (overflows bytes in int64)", in_range("size", 0, INT64_MAX // SECTOR)),
    )

    def to_canonical(self, table: pa.Table, options: ReadOptions) -> pa.RecordBatch:
        n = table.num_rows
        return make_batch(
            col(table, "timestamp") * 1_000_000, np.full(n, np.nan),
            map_ops(table.column("iotype"), [0], [1]),
            col(table, "offset") * SECTOR, col(table, "size") * SECTOR,
            device_names(table, options, "vol", "volume"),
        )
