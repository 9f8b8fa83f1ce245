"""Python client for the mittd gRPC API, with MittOS-style replica failover.

MittOS's contract with applications is an errno: an IO predicted to miss its
deadline fails at once with ``EBUSY`` so the caller can retry on another replica
instead of waiting in the tail. This module keeps that contract in Python:

* :class:`Client` wraps one channel to one daemon (``unix:/run/mittd/mittd.sock``
  or ``host:port``). A rejected :meth:`Client.admit` / :meth:`Client.read`
  raises :class:`MittdBusy`, an :class:`OSError` whose ``errno`` is
  ``errno.EBUSY``; every other gRPC failure raises :class:`MittdUnavailable`
  (also an :class:`OSError`, errno chosen from the status code), so a fast reject
  is never mistaken for a daemon that is down.
* :class:`ReplicaSet` does the failover: try replicas in order, move on at
  EBUSY (or when a daemon is down), and never let the LAST replica reject; or,
  for comparison, hedged requests (Dean & Barroso, "The Tail at Scale").

Request ids: the daemon needs ids unique per device while an IO is pending, so
each client numbers its requests with ``itertools.count`` under a 32-bit prefix
made of the process id (22 bits) and a per-process client number (10 bits):
unique between the clients of one host. Clients on different hosts sharing a
device should pass their own ``request_id``.
"""

from __future__ import annotations

import errno
import itertools
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Self

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mittd.proto import EBUSY_ERRNO, ERRNO_METADATA_KEY, MAX_DEADLINE_US, P_SLOW_METADATA_KEY
from mittd.proto import mittd_pb2 as pb
from mittd.proto import mittd_pb2_grpc as pb_grpc

__all__ = [
    "MAX_DEADLINE_US",
    "Admission",
    "AdmitIO",
    "AdmitStream",
    "Client",
    "ColumnDecisions",
    "DevicePolicy",
    "DeviceStatus",
    "MittdBusy",
    "MittdUnavailable",
    "ReadResult",
    "ReplicaSet",
    "columns_batch",
    "daemon_healthy",
]

_OPS = {"read": pb.OP_READ, "write": pb.OP_WRITE}

# gRPC status → the errno a POSIX caller would expect for the same failure.
_STATUS_ERRNO: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.UNAVAILABLE: errno.ECONNREFUSED,
    grpc.StatusCode.DEADLINE_EXCEEDED: errno.ETIMEDOUT,
    grpc.StatusCode.CANCELLED: errno.ECANCELED,
    grpc.StatusCode.INVALID_ARGUMENT: errno.EINVAL,
    grpc.StatusCode.OUT_OF_RANGE: errno.EINVAL,
    grpc.StatusCode.NOT_FOUND: errno.ENODEV,
    grpc.StatusCode.FAILED_PRECONDITION: errno.EOPNOTSUPP,
    grpc.StatusCode.UNIMPLEMENTED: errno.ENOSYS,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errno.ENOBUFS,
    grpc.StatusCode.PERMISSION_DENIED: errno.EACCES,
    grpc.StatusCode.UNAUTHENTICATED: errno.EACCES,
}

# Codes meaning "this daemon cannot serve now" rather than "this request is
# wrong": a ReplicaSet skips such a replica; it re-raises the others.
_DOWN_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
})

_CLIENT_SEQ = itertools.count()
_COUNTER_BITS = 32


class MittdBusy(OSError):
    """EBUSY from mittd: the IO was predicted to miss its deadline; retry elsewhere.

    An ``OSError`` with ``errno == errno.EBUSY`` (MittOS's interface), plus the
    predicted probability so callers can log or rank replicas.
    """

    def __init__(self, p_slow: float, model_version: str = "") -> None:
        super().__init__(
            errno.EBUSY, f"mittd: predicted to miss the deadline (p_slow={p_slow:.3f})"
        )
        self.p_slow = p_slow
        self.model_version = model_version


class MittdUnavailable(OSError):
    """A gRPC failure other than EBUSY; ``code`` is the gRPC status code.

    Kept apart from :class:`MittdBusy` because "daemon down" must not be read as
    "device slow": the caller may still fall back to a direct IO.
    """

    def __init__(self, errno_: int, message: str, code: grpc.StatusCode) -> None:
        super().__init__(errno_, message)
        self.code = code

    @property
    def daemon_down(self) -> bool:
        """True when the daemon (not the request) is at fault: worth another replica."""
        return self.code in _DOWN_CODES


@dataclass(frozen=True, slots=True)
class Admission:
    """The daemon's decision on one IO (``admitted`` is False only in batches)."""

    request_id: int
    p_slow: float
    model_version: str
    fail_open: bool
    admitted: bool = True
    threshold_index: int = 0


class AdmitIO(NamedTuple):
    """One IO to admit in a batch (``request_id=None``: the client numbers it)."""

    device: str
    offset: int
    length: int
    deadline_us: int = 0
    op: str = "read"
    request_id: int | None = None


class ColumnDecisions(NamedTuple):
    """Decisions on one column block (:meth:`AdmitStream.send_columns`), one per IO."""

    admitted: np.ndarray  # bool
    p_slow: np.ndarray  # float32; 0 where no prediction was made
    fail_open: np.ndarray  # bool
    model_version: str


def columns_batch(
    device: str, offsets: Sequence[int] | np.ndarray, lengths: int | Sequence[int] | np.ndarray,
    request_ids: Sequence[int] | np.ndarray, deadline_us: int | Sequence[int] | np.ndarray = 0,
    ops: str | Sequence[str] = "read",
    completed: tuple[Sequence[int] | np.ndarray, Sequence[float] | np.ndarray] | None = None,
) -> pb.AdmitBatch:
    """An AdmitBatch with one AdmitColumns block (and optionally its completions).

    ``lengths``, ``deadline_us`` and ``ops`` may be one value for every IO;
    ``completed`` is ``(request_ids, latencies_us)`` of IOs that finished.
    """
    n = len(request_ids)
    col = pb.AdmitColumns(device=device)
    col.offset.extend(np.asarray(offsets, np.uint64).tolist())
    col.request_id.extend(np.asarray(request_ids, np.uint64).tolist())
    col.length.extend(np.broadcast_to(np.asarray(lengths, np.uint32), (n,)).tolist())
    col.deadline_us.extend(np.atleast_1d(np.asarray(deadline_us, np.uint64)).tolist())
    if isinstance(ops, str):
        col.op.extend([_OPS[ops]] * n)
    else:
        col.op.extend(_OPS[o] for o in ops)
    batch = pb.AdmitBatch(columns=[col])
    if completed is not None:
        ids, lat = completed
        cc = batch.completion_columns.add(device=device)
        cc.request_id.extend(np.asarray(ids, np.uint64).tolist())
        cc.latency_us.extend(np.asarray(lat, np.float64).tolist())
    return batch


class DevicePolicy(NamedTuple):
    """What a device does with its predictions (:meth:`Client.describe`)."""

    device: str
    model_version: str
    mode: str  # reject | hedge | both
    hedge_after_us: float | None
    latency_thresholds_us: tuple[float, ...]
    p_slow_cutoffs: tuple[float, ...]
    max_reject_share: float
    reason: str


class DeviceStatus(NamedTuple):
    """A device's mode, model, live quality and counters (:meth:`Client.status`).

    The fields are those of ``mittd.v1.DeviceStatus`` (see proto/mittd.proto for
    each one's meaning); a quality ratio the daemon could not compute is NaN.
    ``_asdict()`` gives a plain dict, e.g. for JSON.
    """

    device: str
    mode: str  # enforce | shadow
    model_version: str
    model_sha256: str
    window: int
    decided: int
    labelled: int
    slow: int
    roc_auc: float
    precision: float
    recall: float
    would_reject_share: float
    validation_roc_auc: float
    drift_margin: float
    drift: bool
    reject_share: float
    admitted: int
    rejected: int
    shadow_rejects: int
    fail_open: int
    overruns: int
    probes: int
    capped: int
    pending: int
    records_written: int
    records_dropped: int
    drift_windows: int
    windows_below: int
    beyond_model: int
    below_model: int
    cold_overruns: int
    warm_ticks: int


def _device_status(m: pb.DeviceStatus) -> DeviceStatus:
    return DeviceStatus(*(getattr(m, name) for name in DeviceStatus._fields))


class ReadResult(NamedTuple):
    """A :meth:`ReplicaSet.read` answer: data, the replica that served it, RPCs sent."""

    data: bytes
    replica: int
    attempts: int


class _ClosedOnExit:
    """``with x:`` closes ``x`` on the way out (Client, AdmitStream, ReplicaSet)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def daemon_healthy(target: str, timeout_s: float = 1.0) -> bool:
    """True when the daemon at ``target`` answers the standard gRPC health check
    SERVING (used to wait for a freshly started daemon)."""
    with grpc.insecure_channel(target) as ch:
        try:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                     timeout=timeout_s)
        except grpc.RpcError:
            return False
    return r.status == health_pb2.HealthCheckResponse.SERVING


def _metadata(call: Any) -> dict[str, str]:
    try:
        items = call.trailing_metadata() or ()
    except Exception:  # not a grpc.Call (e.g. a bare RpcError)
        return {}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in items}


def _translate(err: grpc.RpcError, target: str) -> OSError:
    """Map a failed call to the OSError a caller should see (EBUSY vs. the rest)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    meta = _metadata(err)
    os_errno = meta.get(ERRNO_METADATA_KEY)
    if code == grpc.StatusCode.UNAVAILABLE and os_errno == str(EBUSY_ERRNO):
        return MittdBusy(float(meta.get(P_SLOW_METADATA_KEY, "nan")))
    num = int(os_errno) if os_errno and os_errno.isdigit() else _STATUS_ERRNO.get(code, errno.EIO)
    return MittdUnavailable(num, f"mittd {target}: {code.name}: {details}", code)


def _admission(reply: pb.AdmitReply) -> Admission:
    return Admission(
        request_id=reply.request_id,
        p_slow=float(reply.p_slow),
        model_version=reply.model_version,
        fail_open=reply.fail_open,
        admitted=reply.decision != pb.EBUSY,
        threshold_index=reply.threshold_index,
    )


class Client(_ClosedOnExit):
    """One channel to one mittd daemon; thread-safe (gRPC channels are)."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 1.0,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=list(options))
        else:
            self._channel = grpc.secure_channel(target, credentials, options=list(options))
        self._stub = pb_grpc.MittdStub(self._channel)
        prefix = ((os.getpid() & 0x3FFFFF) << 10) | (next(_CLIENT_SEQ) & 0x3FF)
        self._id_base = prefix << _COUNTER_BITS
        self._ids = itertools.count(1)  # next() on a count is atomic under the GIL

    # -- ids and messages -------------------------------------------------

    def next_request_id(self) -> int:
        """A fresh id, unique for this client in this process (wraps after 2**32)."""
        return self._id_base | (next(self._ids) & ((1 << _COUNTER_BITS) - 1))

    def _admit_request(self, io: AdmitIO | pb.AdmitRequest) -> pb.AdmitRequest:
        if isinstance(io, pb.AdmitRequest):
            return io
        try:
            op = _OPS[io.op.lower()]
        except KeyError:
            raise ValueError(f"op must be 'read' or 'write', not {io.op!r}") from None
        rid = self.next_request_id() if io.request_id is None else io.request_id
        return pb.AdmitRequest(
            device=io.device, op=op, offset=io.offset, length=io.length,
            deadline_us=io.deadline_us, request_id=rid,
        )

    @staticmethod
    def _complete_request(c: tuple[str, int, float] | pb.CompleteRequest) -> pb.CompleteRequest:
        if isinstance(c, pb.CompleteRequest):
            return c
        device, request_id, latency_us = c
        return pb.CompleteRequest(device=device, request_id=request_id, latency_us=latency_us)

    def _batch(
        self,
        requests: Iterable[AdmitIO | pb.AdmitRequest],
        completions: Iterable[tuple[str, int, float] | pb.CompleteRequest],
    ) -> pb.AdmitBatch:
        return pb.AdmitBatch(
            requests=[self._admit_request(r) for r in requests],
            completions=[self._complete_request(c) for c in completions],
        )

    # -- unary calls --------------------------------------------------------

    def admit(
        self,
        device: str,
        offset: int,
        length: int,
        deadline_us: int,
        op: str = "read",
        request_id: int | None = None,
    ) -> Admission:
        """Advisory admission; raises :class:`MittdBusy` (errno EBUSY) on reject."""
        req = self._admit_request(AdmitIO(device, offset, length, deadline_us, op, request_id))
        try:
            reply = self._stub.Admit(req, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise _translate(err, self.target) from None
        if reply.decision == pb.EBUSY:
            raise MittdBusy(float(reply.p_slow), reply.model_version)
        return _admission(reply)

    def describe(self, device: str) -> DevicePolicy:
        """The device's model and decision policy, as its daemon applies it."""
        try:
            r = self._stub.Describe(pb.DescribeRequest(device=device), timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise _translate(err, self.target) from None
        return DevicePolicy(r.device, r.model_version, r.policy_mode,
                            r.hedge_after_us or None, tuple(r.latency_thresholds_us),
                            tuple(r.p_slow_cutoffs), r.max_reject_share, r.policy_reason)

    def status(self, device: str = "", timeout_s: float | None = None) -> list[DeviceStatus]:
        """Mode, model, live quality and counters of ``device`` (``""``: every device,
        in the daemon's configuration order). The daemon computes the live quality
        for the call (a few ms per device), hence the separate ``timeout_s``
        (default: the client's); an unknown device raises
        :class:`MittdUnavailable` with ``code`` NOT_FOUND (errno ENODEV)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            r = self._stub.Status(pb.StatusRequest(device=device), timeout=timeout)
        except grpc.RpcError as err:
            raise _translate(err, self.target) from None
        return [_device_status(d) for d in r.devices]

    def complete(self, device: str, request_id: int, latency_us: float) -> bool:
        """Report an admitted IO's latency; False if the daemon did not know the id."""
        req = pb.CompleteRequest(device=device, request_id=request_id, latency_us=latency_us)
        try:
            return self._stub.Complete(req, timeout=self.timeout_s).known
        except grpc.RpcError as err:
            raise _translate(err, self.target) from None

    def read(
        self,
        device: str,
        offset: int,
        length: int,
        deadline_us: int,
        request_id: int | None = None,
    ) -> bytes:
        """Proxy-mode read; :class:`MittdBusy` on reject, :class:`MittdUnavailable` if down.

        ``timeout_s`` still bounds the call: a read with :data:`MAX_DEADLINE_US`
        is never rejected but may time out (``ETIMEDOUT``).
        """
        rid = self.next_request_id() if request_id is None else request_id
        req = pb.ReadRequest(
            device=device, offset=offset, length=length, deadline_us=deadline_us, request_id=rid
        )
        try:
            return self._stub.Read(req, timeout=self.timeout_s).data
        except grpc.RpcError as err:
            raise _translate(err, self.target) from None

    def echo(self) -> float:
        """Round trip of a no-op call in µs: the gRPC overhead baseline."""
        req = pb.EchoRequest(request=pb.AdmitRequest(request_id=self.next_request_id()))
        start = time.perf_counter_ns()
        try:
            self._stub.Echo(req, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise _translate(err, self.target) from None
        return (time.perf_counter_ns() - start) / 1000.0

    # -- streaming ----------------------------------------------------------

    def admit_batch(
        self,
        requests: Iterable[AdmitIO | pb.AdmitRequest],
        completions: Iterable[tuple[str, int, float] | pb.CompleteRequest] = (),
    ) -> list[Admission]:
        """Admit many IOs (after applying completions) in one AdmitStream round trip.

        Rejections do not raise here: each :class:`Admission` has ``admitted``.
        Completions are ``(device, request_id, latency_us)`` tuples or messages.
        """
        batch = self._batch(requests, completions)
        try:
            replies = list(self._stub.AdmitStream(iter((batch,)), timeout=self.timeout_s))
        except grpc.RpcError as err:
            raise _translate(err, self.target) from None
        return _check_batch(batch, replies, self.target)

    def stream(self) -> AdmitStream:
        """A long-lived bidirectional AdmitStream (use as a context manager)."""
        return AdmitStream(self)

    # -- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()


    def __repr__(self) -> str:
        return f"Client({self.target!r})"


def _column_decisions(batch: pb.AdmitBatch, reply: pb.AdmitBatchReply,
                       target: str) -> list[ColumnDecisions]:
    """One ColumnDecisions per AdmitColumns block, checked against the request."""
    ok = len(reply.columns) == len(batch.columns) and all(
        len(r.decision) == len(c.request_id) for r, c in zip(reply.columns, batch.columns,
                                                              strict=False))
    if not ok:
        raise MittdUnavailable(
            errno.EPROTO, f"mittd {target}: AdmitStream answered "
            f"{[len(r.decision) for r in reply.columns]} decisions for column blocks of "
            f"{[len(c.request_id) for c in batch.columns]}", grpc.StatusCode.INTERNAL)
    return [ColumnDecisions(np.asarray(r.decision, np.int8) == pb.ADMIT,
                            np.asarray(r.p_slow, np.float32), np.asarray(r.fail_open, bool),
                            r.model_version) for r in reply.columns]


def _check_batch(
    batch: pb.AdmitBatch, replies: Sequence[pb.AdmitBatchReply], target: str
) -> list[Admission]:
    """The protocol promises one reply per batch, one decision per request, in order."""
    if len(replies) != 1 or len(replies[0].replies) != len(batch.requests):
        got = [len(r.replies) for r in replies]
        raise MittdUnavailable(
            errno.EPROTO,
            f"mittd {target}: AdmitStream answered {got} for a batch of {len(batch.requests)}",
            grpc.StatusCode.INTERNAL,
        )
    return [_admission(r) for r in replies[0].replies]


class AdmitStream(_ClosedOnExit):
    """One open AdmitStream: :meth:`send` is a batch round trip without a new call.

    For high-rate clients: per-call setup is paid once. Sends are serialised by a
    lock (the protocol answers batches in order, one reply each).
    """

    _END = None

    def __init__(self, client: Client) -> None:
        self._client = client
        self._queue: queue.SimpleQueue[pb.AdmitBatch | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._call = client._stub.AdmitStream(self._outgoing())

    def _outgoing(self) -> Iterator[pb.AdmitBatch]:
        while (batch := self._queue.get()) is not None:
            yield batch

    def send(
        self,
        requests: Iterable[AdmitIO | pb.AdmitRequest],
        completions: Iterable[tuple[str, int, float] | pb.CompleteRequest] = (),
    ) -> list[Admission]:
        """Send one batch and wait for its reply (see :meth:`Client.admit_batch`)."""
        batch = self._client._batch(requests, completions)
        return _check_batch(batch, [self._round_trip(batch)], self._client.target)

    def send_columns(self, device: str, offsets: Sequence[int] | np.ndarray,
                     lengths: int | Sequence[int] | np.ndarray,
                     request_ids: Sequence[int] | np.ndarray,
                     deadline_us: int | Sequence[int] | np.ndarray = 0,
                     ops: str | Sequence[str] = "read",
                     completed: tuple[Any, Any] | None = None) -> ColumnDecisions:
        """The high-rate form: one block of IOs as columns, decided as a burst
        (see ``AdmitColumns`` in mittd.proto and :func:`columns_batch`)."""
        batch = columns_batch(device, offsets, lengths, request_ids, deadline_us, ops,
                              completed)
        return _column_decisions(batch, self._round_trip(batch), self._client.target)[0]

    def send_batch(self, batch: pb.AdmitBatch) -> pb.AdmitBatchReply:
        """Send a ready-made AdmitBatch; returns the raw reply (checked for shape)."""
        reply = self._round_trip(batch)
        _check_batch(batch, [reply], self._client.target)
        _column_decisions(batch, reply, self._client.target)
        return reply

    def _round_trip(self, batch: pb.AdmitBatch) -> pb.AdmitBatchReply:
        with self._lock:
            if self._closed:
                raise ValueError("AdmitStream is closed")
            self._queue.put(batch)
            try:
                return next(self._call)
            except grpc.RpcError as err:
                raise _translate(err, self._client.target) from None
            except StopIteration:
                raise MittdUnavailable(
                    errno.EPIPE, f"mittd {self._client.target}: AdmitStream ended",
                    grpc.StatusCode.UNAVAILABLE,
                ) from None

    def close(self) -> None:
        """Half-close the stream, then cancel it so no thread is left waiting."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(self._END)
            self._call.cancel()


class ReplicaSet(_ClosedOnExit):
    """MittOS failover over replicas of the same data, each ``(client, device alias)``.

    :meth:`read` asks replicas in order with the caller's deadline and moves on
    at EBUSY (a fast reject costs microseconds, a tail read milliseconds). The
    LAST replica is asked with :data:`MAX_DEADLINE_US`, which lies beyond every
    trained threshold, so the daemon admits it without predicting: someone must
    serve the read, and deadline 0 would NOT do (it means the device default).
    A replica whose daemon is down is skipped like EBUSY and counted apart; if
    the last one is down, the first replica that rejected is asked again with
    the maximal deadline.

    ``policy`` is a device's decision policy (``mittd.predictor.policy``):

    - ``"reject"`` (the default without ``hedge_after_us``): the failover above;
    - ``"hedge"`` (the default with ``hedge_after_us``): hedged requests (Dean &
      Barroso): replica 0 first, a duplicate to replica 1 if no answer came after
      ``hedge_after_us``, first answer wins; every read uses the maximal deadline
      (no rejection);
    - ``"both"``: mittd and hedging as one policy: the read is asked with the
      caller's deadline, an EBUSY fails over at once, and an admitted read still
      unanswered after ``hedge_after_us`` is duplicated to the next replica.

    - ``"device"``: whatever the first replica's daemon says its device's bundle
      chose (``Describe``: mode and hedging delay), asked once, on the first read;
      an explicit ``hedge_after_us`` overrides the device's delay.

    Every duplicate is counted in ``hedges`` (an extra device IO), every EBUSY in
    ``ebusy_failovers``.
    """

    POLICIES = ("reject", "hedge", "both", "device")

    def __init__(
        self,
        replicas: Sequence[tuple[Client, str]],
        *,
        hedge_after_us: float | None = None,
        policy: str | None = None,
    ) -> None:
        if not replicas:
            raise ValueError("ReplicaSet needs at least one replica")
        if policy is None:
            policy = "reject" if hedge_after_us is None else "hedge"
        if policy not in self.POLICIES:
            raise ValueError(f"policy must be one of {', '.join(self.POLICIES)}, got "
                             f"{policy!r}")
        if policy in ("hedge", "both") and not (hedge_after_us is not None
                                                and hedge_after_us > 0):
            raise ValueError(f"policy {policy!r} needs hedge_after_us > 0, got "
                             f"{hedge_after_us!r}")
        self.replicas = list(replicas)
        self.policy = policy
        self.hedge_after_us = hedge_after_us
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(
            ("reads", "ebusy_failovers", "unavailable_failovers", "hedges", "fallbacks"), 0
        )
        self._pool: ThreadPoolExecutor | None = None

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def stats(self) -> dict[str, int]:
        """Counters: reads, ebusy_failovers, unavailable_failovers, hedges, fallbacks."""
        with self._lock:
            return dict(self._stats)

    def read(self, offset: int, length: int, deadline_us: int) -> ReadResult:
        """Read from the first replica that admits it; returns (data, replica, attempts)."""
        self._count("reads")
        if self.policy == "device":
            self._adopt_device_policy()
        if self.policy != "reject" and len(self.replicas) > 1:
            assert self.hedge_after_us is not None
            return self._hedged_read(offset, length, self.hedge_after_us,
                                     deadline_us if self.policy == "both" else None)
        last = len(self.replicas) - 1
        attempts = 0
        first_busy: int | None = None
        down: MittdUnavailable | None = None
        for i, (client, device) in enumerate(self.replicas):
            attempts += 1
            try:
                data = client.read(device, offset, length, MAX_DEADLINE_US if i == last
                                   else deadline_us)
                return ReadResult(data, i, attempts)
            except MittdBusy:
                self._count("ebusy_failovers")
                first_busy = i if first_busy is None else first_busy
            except MittdUnavailable as err:
                if not err.daemon_down:
                    raise
                self._count("unavailable_failovers")
                down = err
        if first_busy is not None:  # the last replica is down: someone must serve it
            self._count("fallbacks")
            client, device = self.replicas[first_busy]
            data = client.read(device, offset, length, MAX_DEADLINE_US)
            return ReadResult(data, first_busy, attempts + 1)
        assert down is not None
        raise down

    def _adopt_device_policy(self) -> None:
        """Take the first replica's device policy (``policy="device"``), once."""
        with self._lock:
            if self.policy != "device":
                return
            client, device = self.replicas[0]
            p = client.describe(device)
            delay = self.hedge_after_us or p.hedge_after_us
            if p.mode in ("hedge", "both") and not delay:  # nonsense: not usable
                raise MittdUnavailable(errno.EPROTO, f"{client.target}: {device}: policy "
                                       f"{p.mode!r} without a hedging delay",
                                       grpc.StatusCode.FAILED_PRECONDITION)
            self.hedge_after_us = delay
            self.policy = p.mode

    def _hedged_read(self, offset: int, length: int, hedge_after_us: float,
                     deadline_us: int | None = None) -> ReadResult:
        """Hedged read; with ``deadline_us`` every replica but the last may reject it
        (mittd + hedging), else none may."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=max(4, 2 * len(self.replicas)), thread_name_prefix="mittd-hedge"
                    )
        pool = self._pool
        pending: dict[Future[bytes], int] = {}
        launched = 0
        hedged = False

        last = len(self.replicas) - 1

        def launch() -> None:
            nonlocal launched
            client, device = self.replicas[launched]
            dl = MAX_DEADLINE_US if deadline_us is None or launched == last else deadline_us
            fut = pool.submit(client.read, device, offset, length, dl)
            pending[fut] = launched
            launched += 1

        launch()
        error: OSError | None = None
        while pending:
            can_hedge = not hedged and launched < len(self.replicas)
            done, _ = wait(
                pending, timeout=hedge_after_us / 1e6 if can_hedge else None,
                return_when=FIRST_COMPLETED,
            )
            if not done:  # replica still silent after hedge_after_us: duplicate it
                hedged = True
                self._count("hedges")
                launch()
                continue
            for fut in done:
                index = pending.pop(fut)
                try:
                    return ReadResult(fut.result(), index, launched)
                except MittdBusy as err:
                    self._count("ebusy_failovers")
                    error = err
                except MittdUnavailable as err:
                    if not err.daemon_down:
                        raise
                    self._count("unavailable_failovers")
                    error = err
                if not pending and launched < len(self.replicas):
                    launch()  # failed before any hedge: fail over at once
        assert error is not None
        raise error

    def close(self) -> None:
        """Stop the hedging pool (clients belong to the caller and stay open)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

