"""Block traces in, canonical labelled traces out.

Readers for fio latency logs, MSR Cambridge, SNIA SYSTOR '17, blkparse, the
LinnOS replayer, Alibaba and Tencent CBS (see ``registry.FORMATS``); the
canonical Parquet schema (``schema``); ``mittd trace info`` statistics
(``stats``); and collection of labelled traces from a real device with fio
(``collect``).

The public face: ``open_trace`` (any format, detected by content),
``read_trace``/``write_trace`` (canonical Parquet), the op codes every package
uses, the size/duration grammar and the shipped sample traces.
"""

from mittd.traces.errors import TraceError
from mittd.traces.registry import FORMAT_NAMES, open_trace
from mittd.traces.schema import (
    OP_NAMES,
    OP_OTHER,
    OP_READ,
    OP_WRITE,
    SCHEMA,
    read_trace,
    write_trace,
)
from mittd.traces.shipped import shipped_trace
from mittd.traces.units import parse_duration, parse_size

__all__ = [
    "FORMAT_NAMES",
    "OP_NAMES",
    "OP_OTHER",
    "OP_READ",
    "OP_WRITE",
    "SCHEMA",
    "TraceError",
    "open_trace",
    "parse_duration",
    "parse_size",
    "read_trace",
    "shipped_trace",
    "write_trace",
]
