"""Writing IO records to disk: rotating Parquet segments, off the IO path.

Why here and not in the decision: the kernels only append rows to each device's
record ring (``mittd.daemon.ring``); a :class:`Recorder` thread takes the settled
rows ten times a second and :class:`SegmentWriter` turns them into Parquet
(``mittd.traces.records`` schema), so an IO never waits for a disk, and a
recorder that cannot keep up (or a full disk) loses records, never IOs.

On disk, per device: ``DIR/<alias>/<UTC start>-p<pid>-<seq>.parquet`` (names sort
by time; the pid keeps two recording processes from clashing). A segment is
written as ``<name>.parquet.partial`` and renamed after ``fsync`` when it is
closed (at ``segment_mb`` or ``segment_s``): closed segments survive a crash or
``kill -9``; the open one is lost with the process (at most ``segment_s`` of
records), and a leftover ``.partial`` is removed at the next start. Retention:
after each close, the oldest segments go while a device's segments exceed
``keep_mb`` or are older than ``keep_hours``. A write that fails (ENOSPC, EIO,
EFBIG) drops the segment's rows — counted in ``records_dropped``, logged once
until a segment is written again — and the next flush starts a new segment.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mittd.daemon.config import RecordsConfig
from mittd.daemon.fastpath import O_SHADOW, OUTCOMES, REASONS, monotonic_ns
from mittd.daemon.ring import RingRows
from mittd.traces.records import (
    D_ADMIT,
    D_REJECT,
    D_SHADOW_REJECT,
    DECISIONS,
    PARTIAL_SUFFIX,
    RECORD_KEY,
    RECORD_SCHEMA,
    SEGMENT_SUFFIX,
)
from mittd.traces.schema import (
    METADATA_KEY,
    build_metadata,
    constant_strings,
    op_array,
    parquet_writer,
)

__all__ = ["Recorder", "RecordsConfig", "SegmentWriter", "record_batch"]

log = logging.getLogger(__name__)

SETTLE_US = 2_000_000  # a pending IO's row waits this long for its latency before writing
# How often the recorder takes the rings' settled rows: the in-process path decides
# ~150k IOs/s on one core, which fills a 131k-row ring in under a second.
FLUSH_S = 0.1
ROW_GROUP = 1 << 16  # rows buffered per Parquet row group (compression needs long runs)
MiB = 1 << 20

# per outcome code (fastpath.OUTCOMES): the record's decision and reason indices
_DECISION_OF = np.array([D_SHADOW_REJECT if o == O_SHADOW else D_ADMIT if adm else D_REJECT
                         for o, (adm, _, _) in enumerate(OUTCOMES)], np.int8)
_REASON_OF = np.array([why for _, why, _ in OUTCOMES], np.int8)
_DECISIONS = pa.array(DECISIONS, pa.string())
_REASONS = pa.array(REASONS, pa.string())
# encodings measured on recorded IOs (docs/BENCHMARKS.md): delta for the clock,
# byte-stream-split for the floats, dictionaries for the repeated strings; zstd
# level 1 (as small as level 6 on records, 2.5x less CPU: 0.23 vs 0.59 µs per IO)
_ENCODING = {"ts_issue_us": "DELTA_BINARY_PACKED", "latency_us": "BYTE_STREAM_SPLIT",
             "p_slow": "BYTE_STREAM_SPLIT"}
_DICTIONARY = ["op", "device", "decision", "reason", "model_sha", "size", "threshold_index",
               "deadline_us"]


def record_batch(rows: RingRows, device: str, epoch_offset_us: int) -> pa.RecordBatch:
    """Ring rows as a batch of ``RECORD_SCHEMA`` (the monotonic clock mapped to the
    Unix epoch by ``epoch_offset_us``)."""
    c = rows.cols
    n = len(rows)
    codes = c["codes"]
    outcome = (codes >> 2) & 63
    with np.errstate(over="ignore"):
        p = (1.0 / (1.0 + np.exp(-c["margin"]))).astype(np.float32)
    sha = pa.array(rows.model_sha, pa.string())
    return pa.RecordBatch.from_arrays([
        pa.array(c["ts"] + epoch_offset_us, pa.int64()),
        pa.array(c["latency"], pa.float64()),
        op_array(codes & 3),
        pa.array(c["offset"], pa.int64()),
        pa.array(c["size"], pa.int64()),
        constant_strings(device, n),
        pa.array(p, pa.float32()),
        pa.DictionaryArray.from_arrays(pa.array(_DECISION_OF[outcome]), _DECISIONS),
        pa.DictionaryArray.from_arrays(pa.array(_REASON_OF[outcome]), _REASONS),
        pa.array(((codes >> 8) - 1).astype(np.int8), pa.int8()),
        pa.array(c["deadline"], pa.float64()),
        sha,
    ], schema=RECORD_SCHEMA)


def _writer_alive(partial: Path) -> bool:
    """Whether the process named in a segment's name (``…-p<pid>-<seq>``) still runs:
    its ``.partial`` is then being written, not left by a crash."""
    parts = partial.name.split("-")
    pid = next((p[1:] for p in parts if p.startswith("p") and p[1:].isdigit()), "")
    if not pid or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentWriter:
    """One device's segments: buffers batches, writes row groups, rotates, retains."""

    def __init__(self, config: RecordsConfig, device: str, epoch_offset_us: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.device = device
        self.dir = config.dir / device
        self.epoch_offset_us = epoch_offset_us
        self._clock = clock
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._opened = 0.0
        self._rows_in_file = 0
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._seq = 0
        self._failing = False  # logged the current run of failures once
        self.written = 0
        self.dropped = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob("*" + SEGMENT_SUFFIX + PARTIAL_SUFFIX):
            if _writer_alive(stale):  # another process records this device here too
                continue
            log.warning("records: removing %s, a segment cut short by a crash", stale)
            stale.unlink(missing_ok=True)

    # -- writing ------------------------------------------------------------------------
    def add(self, rows: RingRows) -> None:
        """Take rows for the open segment (written when a row group fills or the
        segment closes); failures are counted, never raised."""
        if not len(rows):
            return
        self._buffer.append(record_batch(rows, self.device, self.epoch_offset_us))
        self._buffered += len(rows)
        if self._writer is None:
            self._opened = self._clock()
        if self._buffered >= ROW_GROUP:
            self._write_buffer()
        self.tick()

    def tick(self) -> None:
        """Close the open segment when it is old or big enough."""
        if self._writer is None and not self._buffered:
            return
        old = self._clock() - self._opened >= self.config.segment_s
        if old or self._size() >= self.config.segment_mb * MiB:
            self.close_segment()

    def _size(self) -> int:
        on_disk = self._tmp.stat().st_size if self._tmp is not None and self._tmp.exists() else 0
        return on_disk + 14 * self._buffered  # ~14 B per buffered row once written

    def _open(self, first_ts_us: int) -> None:
        start = datetime.fromtimestamp(first_ts_us / 1e6, UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._seq += 1
        name = f"{start}-p{os.getpid()}-{self._seq:06d}{SEGMENT_SUFFIX}"
        self._final = self.dir / name
        self._tmp = self.dir / (name + PARTIAL_SUFFIX)
        meta = build_metadata("mittd-records", None, device=self.device,
                              reader={"sorted_by_issue": True},
                              clock="CLOCK_MONOTONIC, mapped to the Unix epoch at start")
        rec = {"device": self.device, "host": socket.gethostname(), "pid": os.getpid()}
        schema = RECORD_SCHEMA.with_metadata({METADATA_KEY: json.dumps(meta).encode(),
                                              RECORD_KEY: json.dumps(rec).encode()})
        self._writer = parquet_writer(  # page checksums: see mittd.traces.schema
            self._tmp, schema, compression="zstd", compression_level=1,
            use_dictionary=_DICTIONARY, column_encoding=_ENCODING)
        self._rows_in_file = 0

    def _write_buffer(self) -> None:
        if not self._buffered:
            return
        batches, n = self._buffer, self._buffered
        self._buffer, self._buffered = [], 0
        try:
            if self._writer is None:
                self._open(int(batches[0].column(0)[0].as_py()))
            assert self._writer is not None
            self._writer.write_table(pa.Table.from_batches(batches), row_group_size=ROW_GROUP)
            self._rows_in_file += n
        except OSError as e:
            self._fail(e, n)

    def close_segment(self) -> None:
        """Write what is buffered, close the segment, ``fsync``, rename it into place,
        then apply retention."""
        self._write_buffer()
        w, tmp, final = self._writer, self._tmp, self._final
        if w is None or tmp is None or final is None:
            return
        rows = self._rows_in_file
        self._writer = self._tmp = self._final = None
        self._rows_in_file = 0
        try:
            w.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(final)
            _fsync_dir(self.dir)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            self._fail(e, rows, closed=True)
            return
        self.written += rows
        if self._failing:
            log.warning("records: %s: writing again (%s)", self.device, final.name)
            self._failing = False
        self._retain()

    def _fail(self, e: OSError, rows: int, closed: bool = False) -> None:
        """Drop the open segment and ``rows`` more; count them; log once per run."""
        lost = rows + (0 if closed else self._rows_in_file)
        if not closed and self._writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self._writer.close()
            if self._tmp is not None:
                with contextlib.suppress(OSError):
                    self._tmp.unlink(missing_ok=True)
        if not closed:
            self._writer = self._tmp = self._final = None
            self._rows_in_file = 0
        self.dropped += lost
        if not self._failing:
            log.error("records: %s: cannot write to %s (%s); dropping records until it "
                      "works again (IOs are not affected)", self.device, self.dir,
                      e.strerror or e)
            self._failing = True

    # -- retention -----------------------------------------------------------------------
    def segments(self) -> list[Path]:
        """The device's closed segments, oldest first."""
        return sorted(self.dir.glob("*" + SEGMENT_SUFFIX))

    def _retain(self) -> None:
        keep_bytes = self.config.keep_mb * MiB
        oldest = time.time() - self.config.keep_hours * 3600.0
        segs = []
        for p in self.segments():
            try:
                st = p.stat()
            except OSError:
                continue
            segs.append((p, st.st_size, st.st_mtime))
        total = sum(s for _, s, _ in segs)
        for p, size, mtime in segs[:-1]:  # the newest segment always stays
            if total <= keep_bytes and mtime >= oldest:
                break
            try:
                p.unlink()
            except OSError as e:
                log.warning("records: cannot remove %s: %s", p, e.strerror)
                break
            total -= size


class Recorder:
    """The thread that moves settled ring rows of a core's devices into segments.

    ``core``: an ``AdmissionCore`` (its ``take_records``, ``records_counted`` and
    ``keep_records``); ``devices``: the aliases to record (default all).
    """

    def __init__(self, core: Any, config: RecordsConfig,
                 devices: Sequence[str] | None = None) -> None:
        self.core = core
        self.config = config
        self.devices = list(core.devices if devices is None else devices)
        offset = time.time_ns() // 1000 - monotonic_ns() // 1000
        try:
            self.writers = {a: SegmentWriter(config, a, offset) for a in self.devices}
        except OSError as e:
            raise ValueError(f"records.dir: cannot create {config.dir}: "
                             f"{e.strerror or e}") from None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one flush at a time (thread, close, tests)
        for a in self.devices:
            core.keep_records(a, True)

    def start(self) -> Recorder:
        self._thread = threading.Thread(target=self._run, name="mittd-records", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a host that exits without close() keeps its records
        return self

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            try:
                self.flush()
            except Exception:  # the recorder must never take the process down
                log.exception("records: flush failed")

    def flush(self, everything: bool = False) -> None:
        """Move the settled rows (``everything``: all rows) into segments."""
        with self._lock:
            for alias, w in self.writers.items():
                rows = self.core.take_records(alias, SETTLE_US, everything)
                before_w, before_d = w.written, w.dropped
                if rows is not None:
                    w.add(rows)
                else:
                    w.tick()
                if everything:
                    w.close_segment()
                self.core.records_counted(alias, w.written - before_w, w.dropped - before_d)

    def close(self) -> None:
        """Stop the thread, write every row still in the rings, close the segments."""
        self._stop.set()
        atexit.unregister(self.close)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush(everything=True)
        for a in self.devices:
            self.core.keep_records(a, False)
