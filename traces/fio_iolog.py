"""fio's version-3 iolog: the IO pattern with per-IO issue timestamps.

Line format (fio ≥ 3.31)::

    fio version 3 iolog
    <time_us> <file> add|open|close
    <time_us> <file> read|write|trim|sync|datasync <offset> <length>

``time_us`` is microseconds since the job started, for both ``write_iolog``
(what fio issued) and ``read_iolog`` (what to replay, with the gaps between
timestamps honoured). mittd writes these logs to replay traces on a device and
reads them back to get microsecond issue times, which fio's latency logs
(millisecond timestamps) lack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mittd.traces.errors import TraceError
from mittd.traces.schema import OP_READ, OP_WRITE

HEADER = "fio version 3 iolog"


def read_iolog(path: Path) -> dict[str, np.ndarray]:
    """Issue-ordered IOs of a v3 iolog: ``ts_us``, ``op`` (codes), ``offset``, ``size``."""
    with open(path, "rb") as f:
        first = f.readline().decode(errors="replace").strip()
    if first != HEADER:
        raise TraceError(f"{path}: not a fio version 3 iolog (first line {first!r})")
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(
            skip_rows=1, column_names=["ts_us", "file", "action", "offset", "length"]
        ),
        parse_options=pacsv.ParseOptions(delimiter=" ", invalid_row_handler=lambda row: "skip"),
        convert_options=pacsv.ConvertOptions(
            column_types={"ts_us": pa.int64(), "file": pa.string(), "action": pa.string(),
                          "offset": pa.int64(), "length": pa.int64()},
        ),
    )
    io = pc.is_in(table.column("action"), value_set=pa.array(["read", "write", "trim"]))
    table = table.filter(io)
    action = table.column("action")
    op = np.full(table.num_rows, 2, dtype=np.int8)
    op[pc.equal(action, "read").to_numpy(zero_copy_only=False)] = OP_READ
    op[pc.equal(action, "write").to_numpy(zero_copy_only=False)] = OP_WRITE
    return {
        "ts_us": table.column("ts_us").to_numpy(),
        "op": op,
        "offset": table.column("offset").to_numpy(),
        "size": table.column("length").to_numpy(),
    }


def write_iolog(
    path: Path, target: str, ts_us: np.ndarray, op: np.ndarray, offset: np.ndarray,
    size: np.ndarray,
) -> None:
    """Write a v3 iolog that replays the given IOs on ``target`` at their times.

    Every timestamp is shifted by 1 µs: fio measures each delay from the previous
    line's timestamp but treats a previous timestamp of 0 as "no delay", which
    would start the first IO at once instead of at its time.
    """
    if any(c.isspace() for c in target):
        raise TraceError(f"{target}: fio iologs cannot name a path containing whitespace")
    action = np.where(op == OP_READ, "read", "write")
    ts_us = np.asarray(ts_us, dtype=np.int64) + 1
    end = int(ts_us[-1]) if len(ts_us) else 1
    with open(path, "w") as f:
        f.write(f"{HEADER}\n1 {target} add\n1 {target} open\n")
        lines = np.char.add(
            np.char.add(np.char.add(ts_us.astype(str), f" {target} "), action),
            np.char.add(np.char.add(" ", offset.astype(str)), np.char.add(" ", size.astype(str))),
        )
        f.write("\n".join(lines.tolist()))
        f.write(f"\n{end} {target} close\n")
