"""The gRPC service ``mittd.v1.Mittd`` over the admission core, and its server.

The servicer is a thin translation layer: it validates a request against the
configuration (device alias, op, bounds, deadline), maps it onto
:meth:`AdmissionCore.admit` / :meth:`AdmissionCore.complete` with a monotonic
``now_us``, and maps every failure onto a gRPC status with a one-line message
naming the field, so a client can tell its own mistake from ours:

* malformed request → INVALID_ARGUMENT; a frame that is not the RPC's protobuf
  message at all → INVALID_ARGUMENT "request is not a valid <Message>" (in an
  AdmitStream, "batch[i]: ..." ending that stream), counted per method in
  ``mittd_bad_requests_total`` and logged at most once a minute per method;
  unknown device alias → NOT_FOUND;
* device unusable for proxy reads (e.g. O_DIRECT refused) → FAILED_PRECONDITION;
* a proxy read the predictor rejects → UNAVAILABLE with trailing metadata
  ``mittd-errno: 16`` and ``mittd-p-slow``; a read that fails in the OS →
  INTERNAL with the OS errno in ``mittd-errno``;
* any other exception → INTERNAL. The handler returns normally to gRPC after an
  abort, so one bad request never takes the server down.

AdmitStream: gRPC cannot carry a status per item of a stream, and silently
admitting a malformed item would hide a client bug, so a bad item aborts the
whole stream with the status above and a message naming ``batch[i]`` and the
item (``requests[j]`` / ``completions[j]`` / ``columns[b].offset[j]`` …). Each
batch is validated in full before any of it is applied, so the failing batch has
no effect at all; replies to earlier batches have already been sent and stand.
Column blocks (``AdmitColumns``) are validated with numpy over whole columns and
decided with :meth:`AdmissionCore.admit_burst` — the high-rate path.

Concurrency limits (never a hang): gRPC's sync server runs each RPC on one
thread of its pool (``server.workers``) and an open AdmitStream holds its thread
for its whole life, so an RPC beyond the pool would wait forever. Hence:

* at most ``server.workers - 1`` AdmitStreams are open at once (at least 1), so
  one thread is left for unary calls (none with a single worker); a stream
  beyond that is refused at once with RESOURCE_EXHAUSTED and a message naming
  the limit and ``server.workers`` (its slot is freed whenever it ends: normal
  end, error or client cancel);
* the server holds at most ``2 × server.workers`` RPCs at once (running or
  waiting for a thread; 1 with a single worker, see :func:`max_rpcs`); one
  beyond that is refused at once by gRPC itself with RESOURCE_EXHAUSTED
  ("Concurrent RPC limit exceeded!") instead of joining an unbounded queue.
  The Python client maps RESOURCE_EXHAUSTED to ``ENOBUFS`` and counts it as
  "daemon cannot serve now" (a ReplicaSet moves on to another replica).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, NoReturn

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mittd.daemon.admission import AdmissionCore, Decision, DeviceStats, UnknownDevice
from mittd.daemon.config import Config, DeviceConfig
from mittd.daemon.proxy import DeviceReader, ProxyError, device_size
from mittd.daemon.quality import LiveQuality
from mittd.proto import (
    EBUSY_ERRNO,
    ERRNO_METADATA_KEY,
    MAX_ADMIT_BYTES,
    MAX_DEADLINE_US,
    P_SLOW_METADATA_KEY,
    SERVICE_NAME,
    mittd_pb2,
    mittd_pb2_grpc,
)
from mittd.traces.schema import OP_READ, OP_WRITE

__all__ = ["BAD_REQUEST_LOG_S", "RPCS_PER_WORKER", "MittdServicer", "add_to_server",
           "build_server", "device_status", "max_rpcs", "monotonic_us"]

log = logging.getLogger(__name__)

_U64 = (1 << 64) - 1
_OPS = {mittd_pb2.OP_READ: OP_READ, mittd_pb2.OP_WRITE: OP_WRITE}
_ADMIT, _EBUSY = mittd_pb2.ADMIT, mittd_pb2.EBUSY
_I64_MAX = (1 << 63) - 1

#: gRPC's ``maximum_concurrent_rpcs`` is this × the pool size. Not 1: gRPC counts
#: an RPC until its pool task has returned, which is after the client already has
#: its answer and may have sent the next call, so a cap of exactly the pool size
#: refused 0.4-0.7 % of the calls of 4 closed-loop clients on 4 workers (11 of
#: 9000 with 3 clients) that an idle thread was about to serve. With 2 none were
#: refused at up to one client per worker; a call waits behind at most one other
#: per thread, and anything past that would answer too late to be advice anyway.
RPCS_PER_WORKER = 2

#: The most often one method logs an undecodable request frame (they are all counted).
BAD_REQUEST_LOG_S = 60.0


def max_rpcs(workers: int) -> int:
    """The server's ``maximum_concurrent_rpcs`` for a pool of ``workers`` threads:
    ``RPCS_PER_WORKER × workers``, but 1 for a single thread, which the one
    AdmitStream allowed may hold: a call queued behind it would wait for the stream
    to end, so it is refused instead (with 2+ threads one is never a stream's)."""
    return RPCS_PER_WORKER * workers if workers > 1 else 1


def _check_latency(where: str, latency_us: float) -> None:
    if not (math.isfinite(latency_us) and latency_us >= 0.0):
        raise _invalid(f"{where}latency_us: must be a finite number >= 0 µs, got {latency_us!r}")


def monotonic_us() -> int:
    """The default clock: integer µs, monotonic (the tracker's timestamps must not jump)."""
    return time.monotonic_ns() // 1000


class _Abort(Exception):
    """A failure with its gRPC status; raised inside handlers, turned into an abort."""

    def __init__(self, code: grpc.StatusCode, message: str,
                 trailing: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailing = trailing


def _invalid(message: str) -> _Abort:
    return _Abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class MittdServicer(mittd_pb2_grpc.MittdServicer):
    """Admit, Complete, AdmitStream, Read, Echo, Describe and Status over one
    ``AdmissionCore``.

    ``config`` supplies the limits and, per device alias, the backing path (for
    its size and for proxy reads). A device must be in both the core and the
    config to be served. ``clock_us`` is injectable for tests.
    """

    def __init__(self, core: AdmissionCore, config: Config,
                 clock_us: Callable[[], int] = monotonic_us) -> None:
        self.core = core
        self.config = config
        self.clock_us = clock_us
        self.max_read_bytes = config.server.max_read_bytes
        self.max_stream_batch = config.server.max_stream_batch
        self._sizes: dict[str, int] = {}
        self._readers: dict[str, DeviceReader] = {}
        self._readers_lock = threading.Lock()
        self._streams_lock = threading.Lock()
        self.streams_open = 0
        self._bad_lock = threading.Lock()
        self._bad: dict[str, int] = {}  # undecodable request frames per method
        self._bad_logged: dict[str, float] = {}  # when each method's last line was logged
        self.size_for_pool(config.server.workers)

    def undecodable(self, frame: _Undecodable) -> str:
        """Count a request frame that is not its message (``mittd_bad_requests_total``),
        log one line per method at most every :data:`BAD_REQUEST_LOG_S` seconds (a
        client sending garbage must not flood the log), and return the one-line
        message the RPC is answered with."""
        message = f"request is not a valid {frame.message}"
        now = time.monotonic()
        with self._bad_lock:
            n = self._bad[frame.method] = self._bad.get(frame.method, 0) + 1
            last = self._bad_logged.get(frame.method)
            due = last is None or now - last >= BAD_REQUEST_LOG_S
            if due:
                self._bad_logged[frame.method] = now
        if due:
            log.warning("%s: %s, answered INVALID_ARGUMENT (%d so far; logged at most every "
                        "%g s)", frame.method, message, n, BAD_REQUEST_LOG_S)
        return message

    def bad_requests(self) -> dict[str, int]:
        """Undecodable request frames answered so far, per RPC method."""
        with self._bad_lock:
            return dict(self._bad)

    def size_for_pool(self, workers: int) -> None:
        """Cap open AdmitStreams for a pool of ``workers`` threads (``build_server``
        calls this with the pool it builds): ``workers - 1``, at least 1, so a
        unary call always finds a thread while streams are open."""
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        self.workers = workers
        self.max_streams = max(1, workers - 1)

    def _open_stream(self, context: grpc.ServicerContext) -> Callable[[], None]:
        """Take a stream slot or abort with RESOURCE_EXHAUSTED at once (never wait:
        a waiting stream would hold a pool thread too); returns the slot's release,
        safe to call more than once."""
        with self._streams_lock:
            n = self.streams_open
            if n < self.max_streams:
                self.streams_open = n + 1
                n = -1
        if n >= 0:
            keeps = ("keeps one thread for unary calls" if self.workers > 1
                     else "leaves no thread for unary calls")
            streams = "AdmitStream" if n == 1 else "AdmitStreams"
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{n} {streams} already open (server.workers = {self.workers} "
                          f"{keeps}); close one or raise server.workers")
        released = False

        def release() -> None:
            nonlocal released
            with self._streams_lock:
                if not released:
                    released = True
                    self.streams_open -= 1

        # also on RPC termination: a client that cancels while the handler is
        # suspended at a ``yield`` leaves the generator unfinished (no finally yet)
        context.add_callback(release)
        return release

    # -- helpers ---------------------------------------------------------------------
    def _device(self, device: str, field: str = "device") -> DeviceConfig:
        if not device:
            raise _invalid(f"{field}: must not be empty")
        dev = self.config.devices.get(device)
        if dev is None or device not in self.core.devices:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"{field}: unknown device {device!r}")
        return dev

    def _size(self, dev: DeviceConfig) -> int:
        size = self._sizes.get(dev.alias)
        if size is None:  # cached: the device does not change size while served
            size = self._sizes[dev.alias] = device_size(dev.path)
        return size

    def _check_io(self, where: str, dev: DeviceConfig, offset: int, length: int,
                  deadline_us: int, max_length: int) -> None:
        if length == 0:
            raise _invalid(f"{where}length: must be > 0")
        if length > max_length:
            raise _invalid(f"{where}length: {length} exceeds the limit of {max_length} bytes")
        if offset + length > _U64:
            raise _invalid(f"{where}offset: {offset} + length {length} overflows 64 bits")
        size = self._size(dev)
        if offset + length > size:
            raise _invalid(f"{where}offset: range [{offset}, {offset + length}) is beyond "
                           f"the size of device {dev.alias!r} ({size} bytes)")
        if deadline_us > MAX_DEADLINE_US:
            raise _invalid(f"{where}deadline_us: {deadline_us} exceeds 1 hour "
                           f"({MAX_DEADLINE_US} µs); 0 means the device default")

    def _check_admit(self, req: mittd_pb2.AdmitRequest, where: str = "",
                     check_pending: bool = True) -> int:
        """Validate one AdmitRequest; returns the core's op code."""
        dev = self._device(req.device, f"{where}device")
        op = _OPS.get(req.op)
        if op is None:
            raise _invalid(f"{where}op: must be OP_READ or OP_WRITE, got {req.op}")
        self._check_io(where, dev, req.offset, req.length, req.deadline_us, MAX_ADMIT_BYTES)
        if check_pending and req.request_id in self.core.state(req.device).tracker:
            raise _invalid(f"{where}request_id: {req.request_id} is already pending on "
                           f"device {req.device!r}")
        return op

    @staticmethod
    def _reply(d: Decision, request_id: int) -> mittd_pb2.AdmitReply:
        p = d.p_slow
        return mittd_pb2.AdmitReply(
            decision=_ADMIT if d.admit else _EBUSY,
            p_slow=0.0 if d.fail_open or math.isnan(p) else p,
            model_version=d.model_version,
            threshold_index=d.threshold_index or 0,
            fail_open=d.fail_open,
            request_id=request_id,
        )

    def _decide(self, req: mittd_pb2.AdmitRequest, op: int) -> mittd_pb2.AdmitReply:
        d = self.core.admit(req.device, op, req.offset, req.length, float(req.deadline_us),
                            req.request_id, self.clock_us())
        return self._reply(d, req.request_id)

    def _fail(self, context: grpc.ServicerContext, e: Exception) -> NoReturn:
        """Abort the RPC with the status ``e`` maps to (never lets ``e`` reach gRPC)."""
        if isinstance(e, _Abort):
            err = e
        elif isinstance(e, UnknownDevice):
            err = _Abort(grpc.StatusCode.NOT_FOUND, f"device: unknown device {e.args[0]!r}")
        else:
            log.error("unexpected error in %s", type(self).__name__, exc_info=e)
            err = _Abort(grpc.StatusCode.INTERNAL, f"internal error: {_one_line(e)}")
        if err.trailing:
            context.set_trailing_metadata(err.trailing)
        context.abort(err.code, err.message)
        raise AssertionError("unreachable: context.abort raises")  # for the type checker

    def reader(self, dev: DeviceConfig) -> DeviceReader:
        """The device's reader, opened on first use (Admit-only devices never open)."""
        r = self._readers.get(dev.alias)
        if r is None:
            with self._readers_lock:
                r = self._readers.get(dev.alias)
                if r is None:
                    try:
                        r = DeviceReader(dev.path, dev.alignment, dev.direct_io, dev.writable)
                    except ProxyError as e:
                        raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                                     f"device {dev.alias!r}: {e}") from None
                    self._readers[dev.alias] = r
        return r

    def close(self) -> None:
        """Close the proxy readers (after the server has stopped)."""
        with self._readers_lock:
            for r in self._readers.values():
                r.close()
            self._readers.clear()

    # -- RPCs ------------------------------------------------------------------------
    def Admit(self, request: mittd_pb2.AdmitRequest,
              context: grpc.ServicerContext) -> mittd_pb2.AdmitReply:
        try:
            return self._decide(request, self._check_admit(request))
        except Exception as e:
            self._fail(context, e)

    def Complete(self, request: mittd_pb2.CompleteRequest,
                 context: grpc.ServicerContext) -> mittd_pb2.CompleteReply:
        try:
            self._device(request.device)
            _check_latency("", request.latency_us)
            known = self.core.complete(request.device, request.request_id,
                                       request.latency_us, self.clock_us())
            return mittd_pb2.CompleteReply(known=known)
        except Exception as e:
            self._fail(context, e)

    def _batch(self, i: int, batch: mittd_pb2.AdmitBatch) -> mittd_pb2.AdmitBatchReply:
        asks = len(batch.requests) + sum(len(c.request_id) for c in batch.columns)
        dones = len(batch.completions) + sum(len(c.request_id) for c in batch.completion_columns)
        for name, items in (("requests", asks), ("completions", dones)):
            if items > self.max_stream_batch:
                raise _invalid(f"batch[{i}]: {items} {name} exceed max_stream_batch "
                               f"({self.max_stream_batch})")
        for j, c in enumerate(batch.completions):
            self._device(c.device, f"batch[{i}].completions[{j}].device")
            _check_latency(f"batch[{i}].completions[{j}].", c.latency_us)
        # per device: ids completed by this batch (free again by the time it is decided)
        # and ids asked for by this batch (each at most once)
        completing: dict[str, set[int]] = {}
        for c in batch.completions:
            completing.setdefault(c.device, set()).add(c.request_id)
        done_cols = [self._check_complete_columns(f"batch[{i}].completion_columns[{b}].", cc)
                     for b, cc in enumerate(batch.completion_columns)]
        for dev, ids, _ in done_cols:
            completing.setdefault(dev, set()).update(ids.tolist())
        ops = []
        seen: dict[str, set[int]] = {}
        for j, r in enumerate(batch.requests):
            where = f"batch[{i}].requests[{j}]."
            free = r.request_id in completing.get(r.device, ())
            op = self._check_admit(r, where, check_pending=not free)
            asked = seen.setdefault(r.device, set())
            if r.request_id in asked:
                raise _invalid(f"{where}request_id: {r.request_id} appears twice in the batch")
            asked.add(r.request_id)
            ops.append(op)
        blocks = [self._check_columns(f"batch[{i}].columns[{b}].", col, completing, seen)
                  for b, col in enumerate(batch.columns)]
        now = self.clock_us
        for c in batch.completions:
            self.core.complete(c.device, c.request_id, c.latency_us, now())
        for dev, ids, lat in done_cols:
            self.core.complete_burst(dev, ids, lat, now())
        reply = mittd_pb2.AdmitBatchReply(
            replies=[self._decide(r, op) for r, op in zip(batch.requests, ops, strict=True)])
        for dev, cols in blocks:
            d = self.core.admit_burst(dev, *cols, now())
            out = reply.columns.add(device=dev, model_version=d.model_version)
            out.decision.extend(np.where(d.admit, _ADMIT, _EBUSY).tolist())
            out.p_slow.extend(np.where(d.fail_open, 0.0, np.nan_to_num(d.p_slow, nan=0.0))
                              .tolist())  # as the unary reply: 0 when admitted unjudged
            out.threshold_index.extend(np.maximum(d.threshold_index, 0).tolist())
            out.fail_open.extend(d.fail_open.tolist())
        return reply

    def _check_complete_columns(self, where: str, cc: mittd_pb2.CompleteColumns
                                ) -> tuple[str, np.ndarray, np.ndarray]:
        self._device(cc.device, f"{where}device")
        ids = np.array(cc.request_id, np.uint64)
        lat = np.array(cc.latency_us, np.float64)
        if len(ids) != len(lat):
            raise _invalid(f"{where}latency_us: {len(lat)} entries for {len(ids)} request ids")
        bad = np.flatnonzero(~(np.isfinite(lat) & (lat >= 0.0)))
        if len(bad):
            raise _invalid(f"{where}latency_us[{bad[0]}]: must be a finite number >= 0 µs, "
                           f"got {lat[bad[0]]!r}")
        return cc.device, ids, lat

    def _check_columns(self, where: str, col: mittd_pb2.AdmitColumns,
                       completing: dict[str, set[int]], seen: dict[str, set[int]]
                       ) -> tuple[str, tuple[np.ndarray, ...]]:
        """Validate one AdmitColumns block over whole columns; the core's arrays."""
        dev = self._device(col.device, f"{where}device")
        n = len(col.request_id)
        ids = np.array(col.request_id, np.uint64)
        for name in ("op", "offset", "length"):
            if len(getattr(col, name)) != n:
                raise _invalid(f"{where}{name}: {len(getattr(col, name))} entries for "
                               f"{n} request ids")
        nd = len(col.deadline_us)
        if nd not in (1, n) and n:
            raise _invalid(f"{where}deadline_us: {nd} entries for {n} request ids "
                           "(give one per IO, or one for all)")
        op = np.array(col.op, np.int64)
        off = np.array(col.offset, np.uint64)
        length = np.array(col.length, np.uint64)
        dl = np.array(col.deadline_us, np.uint64)

        def first(mask: np.ndarray) -> int | None:
            hit = np.flatnonzero(mask)
            return int(hit[0]) if len(hit) else None

        if (j := first((op != mittd_pb2.OP_READ) & (op != mittd_pb2.OP_WRITE))) is not None:
            raise _invalid(f"{where}op[{j}]: must be OP_READ or OP_WRITE, got {op[j]}")
        if (j := first(length == 0)) is not None:
            raise _invalid(f"{where}length[{j}]: must be > 0")
        if (j := first(length > MAX_ADMIT_BYTES)) is not None:
            raise _invalid(f"{where}length[{j}]: {length[j]} exceeds the limit of "
                           f"{MAX_ADMIT_BYTES} bytes")
        size = np.uint64(self._size(dev))
        if (j := first((length > size) | (off > size - np.minimum(length, size)))) is not None:
            raise _invalid(f"{where}offset[{j}]: range [{off[j]}, {int(off[j]) + int(length[j])})"
                           f" is beyond the size of device {dev.alias!r} ({int(size)} bytes)")
        if (j := first(dl > MAX_DEADLINE_US)) is not None:
            raise _invalid(f"{where}deadline_us[{j}]: {dl[j]} exceeds 1 hour "
                           f"({MAX_DEADLINE_US} µs); 0 means the device default")
        if (j := first(ids > _I64_MAX)) is not None:
            raise _invalid(f"{where}request_id[{j}]: {ids[j]} must be below 2^63 in columns")
        idl = ids.tolist()
        idset = set(idl)
        asked = seen.setdefault(dev.alias, set())
        if len(idset) != n or not idset.isdisjoint(asked):
            j = next(j for j, rid in enumerate(idl)
                     if rid in asked or idl.index(rid) != j)
            raise _invalid(f"{where}request_id[{j}]: {idl[j]} appears twice in the batch")
        asked |= idset
        busy = idset & self.core.state(dev.alias).tracker.pending_ids()
        busy -= completing.get(dev.alias, set())
        if busy:
            j = next(j for j, rid in enumerate(idl) if rid in busy)
            raise _invalid(f"{where}request_id[{j}]: {idl[j]} is already pending on "
                           f"device {dev.alias!r}")
        deadlines = (np.full(n, dl[0], np.float64) if nd == 1 and n
                     else dl.astype(np.float64))
        cols = (op - 1, off.astype(np.int64), length.astype(np.int64), deadlines,
                ids.astype(np.int64))
        return dev.alias, cols

    def AdmitStream(self, request_iterator: Iterable[mittd_pb2.AdmitBatch],
                    context: grpc.ServicerContext) -> Iterator[mittd_pb2.AdmitBatchReply]:
        release = self._open_stream(context)  # RESOURCE_EXHAUSTED beyond max_streams
        i = 0
        try:
            for batch in request_iterator:
                yield self._batch(i, batch)
                i += 1
        except grpc.RpcError:  # the client went away mid-stream: nobody to answer
            return
        except Exception as e:
            self._fail(context, e)
        finally:
            release()

    def Read(self, request: mittd_pb2.ReadRequest,
             context: grpc.ServicerContext) -> mittd_pb2.ReadReply:
        try:
            return self._read(request)
        except Exception as e:
            self._fail(context, e)

    def _read(self, req: mittd_pb2.ReadRequest) -> mittd_pb2.ReadReply:
        dev = self._device(req.device)
        self._check_io("", dev, req.offset, req.length, req.deadline_us, self.max_read_bytes)
        if req.request_id in self.core.state(req.device).tracker:
            raise _invalid(f"request_id: {req.request_id} is already pending on "
                           f"device {req.device!r}")
        reader = self.reader(dev)
        d = self.core.admit(req.device, OP_READ, req.offset, req.length,
                            float(req.deadline_us), req.request_id, self.clock_us())
        if not d.admit:
            p = 0.0 if math.isnan(d.p_slow) else d.p_slow
            raise _Abort(grpc.StatusCode.UNAVAILABLE,
                         f"EBUSY: read predicted slow on {req.device!r} (p_slow={p:.3f})",
                         ((ERRNO_METADATA_KEY, str(EBUSY_ERRNO)),
                          (P_SLOW_METADATA_KEY, f"{p:.6g}")))
        t0 = time.perf_counter_ns()
        try:
            data, latency_us = reader.read(req.offset, req.length)
        except OSError as e:
            # still complete it: a failed IO must not linger in the pending queue
            self.core.complete(req.device, req.request_id,
                               (time.perf_counter_ns() - t0) / 1000.0, self.clock_us())
            code = e.errno or 0
            raise _Abort(grpc.StatusCode.INTERNAL,
                         f"read of {req.device!r} failed: {_one_line(e)}",
                         ((ERRNO_METADATA_KEY, str(code)),)) from None
        self.core.complete(req.device, req.request_id, latency_us, self.clock_us())
        return mittd_pb2.ReadReply(data=data, latency_us=latency_us,
                                   model_version=d.model_version)

    def Echo(self, request: mittd_pb2.EchoRequest,
             context: grpc.ServicerContext) -> mittd_pb2.EchoReply:
        return mittd_pb2.EchoReply(reply=mittd_pb2.AdmitReply(
            decision=_ADMIT, request_id=request.request.request_id))

    def Describe(self, request: mittd_pb2.DescribeRequest,
                 context: grpc.ServicerContext) -> mittd_pb2.DescribeReply:
        try:
            self._device(request.device)
            st = self.core.state(request.device)
            pol = st.policy
            return mittd_pb2.DescribeReply(
                device=request.device, model_version=st.model_version,
                policy_mode=pol.mode,
                hedge_after_us=float(pol.hedge_after_us or 0.0) if pol.hedges else 0.0,
                latency_thresholds_us=list(st.thresholds_us),
                p_slow_cutoffs=list(st.p_thresholds),
                max_reject_share=st.max_reject_share, policy_reason=pol.reason)
        except Exception as e:
            self._fail(context, e)

    def Status(self, request: mittd_pb2.StatusRequest,
               context: grpc.ServicerContext) -> mittd_pb2.StatusReply:
        try:
            if request.device:
                self._device(request.device)
                aliases = [request.device]
            else:
                aliases = [a for a in self.core.devices if a in self.config.devices]
            stats = self.core.stats()
            return mittd_pb2.StatusReply(devices=[
                device_status(a, stats[a], self.core.quality(a)) for a in aliases])
        except Exception as e:
            self._fail(context, e)


def device_status(alias: str, s: DeviceStats, q: LiveQuality) -> mittd_pb2.DeviceStatus:
    """One device's Status entry from its stats snapshot and live quality (NaN, where
    a quality ratio is undefined, goes on the wire as NaN: 0 would read as "useless")."""
    return mittd_pb2.DeviceStatus(
        device=alias, mode=s.mode, model_version=s.model_version,
        model_sha256=s.model_sha256, window=q.window, decided=q.decided,
        labelled=q.labelled, slow=q.slow, roc_auc=q.roc_auc, precision=q.precision,
        recall=q.recall, would_reject_share=q.would_reject_share,
        validation_roc_auc=q.validation_roc_auc, drift_margin=q.drift_margin,
        drift=q.drift, reject_share=s.reject_share, admitted=s.admitted,
        rejected=s.rejected, shadow_rejects=s.shadow_rejects, fail_open=s.fail_open,
        overruns=s.overruns, probes=s.probes, capped=s.capped, pending=s.pending,
        records_written=s.records_written, records_dropped=s.records_dropped,
        drift_windows=q.drift_windows, windows_below=q.windows_below,
        beyond_model=s.beyond_model, below_model=s.below_model,
        cold_overruns=s.cold_overruns, warm_ticks=s.warm_ticks)


# -- server ------------------------------------------------------------------------------


class _Undecodable:
    """What a request frame that is not its protobuf message decodes to: the handler
    answers it INVALID_ARGUMENT (gRPC's own answer to a deserializer that raises is
    INTERNAL "Exception deserializing request!", with a traceback logged per call)."""

    __slots__ = ("message", "method")

    def __init__(self, method: str, message: str) -> None:
        self.method = method
        self.message = message


def _decoder(method: str, cls: Any) -> Callable[[bytes], Any]:
    parse = cls.FromString
    name = cls.DESCRIPTOR.name

    def decode(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # DecodeError, or whatever else the bytes make protobuf raise
            return _Undecodable(method, name)

    return decode


def _guard_unary(servicer: MittdServicer, handler: Callable[[Any, grpc.ServicerContext], Any]
                 ) -> Callable[[Any, grpc.ServicerContext], Any]:
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, servicer.undecodable(request))
        return handler(request, context)

    return unary


_StreamHandler = Callable[[Iterator[Any], grpc.ServicerContext], Any]


def _guard_stream(servicer: MittdServicer, handler: _StreamHandler) -> _StreamHandler:
    def frames(requests: Iterator[Any]) -> Iterator[Any]:
        for i, r in enumerate(requests):
            if isinstance(r, _Undecodable):  # the stream's handler turns it into its abort
                raise _invalid(f"batch[{i}]: {servicer.undecodable(r)}")
            yield r

    def stream(request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        return handler(frames(request_iterator), context)

    return stream


def add_to_server(server: grpc.Server, servicer: MittdServicer) -> None:
    """Register the Mittd service on ``server``: the generated stub's handlers, each
    with a request decoder that turns a frame that is not its message into an
    INVALID_ARGUMENT answer (counted, see :meth:`MittdServicer.undecodable`) instead
    of gRPC's INTERNAL with a logged traceback."""
    service = mittd_pb2.DESCRIPTOR.services_by_name["Mittd"]
    handlers = {}
    for m in service.methods:
        cls = getattr(mittd_pb2, m.input_type.name)
        out = getattr(mittd_pb2, m.output_type.name).SerializeToString
        behaviour = getattr(servicer, m.name)
        decode = _decoder(m.name, cls)
        if m.client_streaming and m.server_streaming:
            handlers[m.name] = grpc.stream_stream_rpc_method_handler(
                _guard_stream(servicer, behaviour), request_deserializer=decode,
                response_serializer=out)
        elif not (m.client_streaming or m.server_streaming):
            handlers[m.name] = grpc.unary_unary_rpc_method_handler(
                _guard_unary(servicer, behaviour), request_deserializer=decode,
                response_serializer=out)
        else:  # pragma: no cover - the service has no such RPC
            raise TypeError(f"{m.name}: half-streaming RPCs are not wrapped")
    name = service.full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    if hasattr(server, "add_registered_method_handlers"):  # grpc >= 1.62, as the stub does
        server.add_registered_method_handlers(name, handlers)


def add_health(server: grpc.Server) -> health.HealthServicer:
    """Register ``grpc.health.v1`` with "" and the Mittd service SERVING."""
    hs = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    for name in ("", SERVICE_NAME):
        hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    return hs


def add_reflection(server: grpc.Server) -> None:
    """Server reflection, so ``grpcurl`` works without the .proto at hand."""
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)


def _read_bytes(p: Path) -> bytes:
    return Path(p).read_bytes()


def build_server(core: AdmissionCore, config: Config, *, max_workers: int,
                 servicer: MittdServicer | None = None,
                 options: Iterable[tuple[str, Any]] = ()
                 ) -> tuple[grpc.Server, health.HealthServicer]:
    """Build, bind and START the server; returns it with its health servicer.

    Listens on ``unix:<server.unix_socket>`` (parent directory created, socket
    chmod-ed to ``server.socket_mode`` once it exists, i.e. after ``start``) and,
    when configured, on ``server.tcp`` — with TLS if ``server.tls`` is set
    (client certificates required when ``client_ca`` is). Health and reflection
    are registered. The caller owns the lifecycle: ``server.stop(grace)``, then
    ``servicer.close()`` if it passed its own servicer. Bind failures raise
    ``OSError`` with a one-line message.

    Never hangs a call: the servicer's AdmitStream cap is sized to this pool
    (``max_workers - 1``, at least 1), so streams never hold every thread, and
    the server holds at most ``max_rpcs(max_workers)`` RPCs at once (gRPC
    refuses one more with RESOURCE_EXHAUSTED rather than queueing it without
    bound behind threads that something else holds).
    """
    s = config.server
    servicer = servicer or MittdServicer(core, config)
    servicer.size_for_pool(max_workers)
    opts = [("grpc.so_reuseport", 0),  # a second daemon must fail to bind, not share
            ("grpc.max_send_message_length", s.max_read_bytes + (1 << 16)),
            *options]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                    thread_name_prefix="mittd-rpc"),
                         options=opts,
                         maximum_concurrent_rpcs=max_rpcs(max_workers))
    add_to_server(server, servicer)
    hs = add_health(server)
    add_reflection(server)
    sock = Path(s.unix_socket)
    sock.parent.mkdir(parents=True, exist_ok=True)
    _refuse_live_socket(sock)
    _bind(server.add_insecure_port, f"unix:{sock}")
    if s.tcp is not None:
        if s.tls is not None:
            ca = _read_bytes(s.tls.client_ca) if s.tls.client_ca else None
            creds = grpc.ssl_server_credentials(
                [(_read_bytes(s.tls.key), _read_bytes(s.tls.cert))],
                root_certificates=ca, require_client_auth=ca is not None)
            _bind(lambda a: server.add_secure_port(a, creds), str(s.tcp))
        else:
            _bind(server.add_insecure_port, str(s.tcp))
    server.start()
    try:
        os.chmod(sock, s.socket_mode)
    except OSError:
        server.stop(None)
        raise
    return server, hs


def _refuse_live_socket(path: Path) -> None:
    """gRPC unlinks whatever socket is at the path before binding, which would silently
    steal a running daemon's socket; so refuse when something still accepts on it (a
    stale socket left by a crash refuses connections and is replaced as usual)."""
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return
    raise OSError(f"cannot listen on unix:{path}: another process is listening on it "
                  "(a mittd already running?)")


def _bind(add: Callable[[str], int], address: str) -> None:
    try:
        port = add(address)
    except RuntimeError as e:  # grpc raises RuntimeError("Failed to bind ...")
        raise OSError(f"cannot listen on {address}: {_one_line(e)}") from None
    if port == 0:  # older grpc signals failure with port 0
        raise OSError(f"cannot listen on {address}")
