"""Reads with failover in the storage server's own process (Heimdall's client level).

:class:`mittd.daemon.client.ReplicaSet` fails a read over between replicas that
each sit behind a mittd daemon; this module does the same for replicas the
process can read itself (files or block devices), judged by the in-process
admission API (:class:`mittd.daemon.embedded.Embedded`): no RPC, no proxy, a
rejection costs one prediction (microseconds) and a failover none more.

A :class:`LocalReplica` is one copy of the data: a path read with
:class:`mittd.daemon.proxy.DeviceReader` (``O_DIRECT`` where the file system
takes it, so the measured latency, which feeds the model's history, is the
device's and not the page cache's) and the admission device alias it is
judged by. A :class:`LocalReplicaSet` reads from them under one of the
client's policies (see :class:`LocalReplicaSet`).

Hedging needs the primary read to run where the caller can stop waiting for
it, so hedged reads run on the set's worker threads (a ``SimpleQueue`` of tasks;
the caller waits on a per-read one-shot lock that the first answer releases).
Measured on a 2-vCPU VM, Python 3.11, interleaved rounds of 2000 calls (median
of the rounds' medians, best round in brackets):

- a no-op task's round trip: this lock 24-41 µs (19), a ``SimpleQueue`` result
  channel 27-42 (18), a ``threading.Event`` 40-55 (25),
  ``ThreadPoolExecutor.submit().result(timeout)`` 40 (25) and, what a race of
  two futures needs, ``concurrent.futures.wait(FIRST_COMPLETED)`` 57-69 (37); a
  direct call 0.2 µs;
- in place, a cached 4 KiB read: ``"reject"`` on the calling thread 6.7 µs,
  ``"hedge"`` that never fires 30.4 µs on these workers and 42.3 µs with the
  same race on a ``ThreadPoolExecutor``: the handoff costs about 24 µs per read.

That is why ``"reject"`` and ``"none"`` read on the calling thread and hedged
policies pay the hop only where they must.
"""

from __future__ import annotations

import errno
import logging
import math
import operator
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from mittd.daemon.proxy import DeviceReader
from mittd.proto import MAX_DEADLINE_US
from mittd.traces.collect import direct_io_error
from mittd.traces.schema import OP_READ

__all__ = ["STAT_NAMES", "Admission", "LocalReplica", "LocalReplicaSet", "ReplicaRead"]

log = logging.getLogger(__name__)

#: The counters of :meth:`LocalReplicaSet.stats`, in order.
STAT_NAMES = ("reads", "ebusy_failovers", "hedges", "extra_ios", "served_off_primary")
#: Worker threads a set may start for hedged reads, unless told otherwise: each
#: hedged read in flight holds one or two (a loser keeps its worker until its IO ends).
DEFAULT_MAX_WORKERS = 32


class Admission(Protocol):
    """What the set needs of an admission object (``Embedded`` has it)."""

    @property
    def devices(self) -> tuple[str, ...]: ...

    def admit(self, device: str, op: int, offset: int, length: int,
              deadline_us: int) -> int: ...

    def complete(self, device: str, ticket: int, latency_us: float) -> bool: ...

    def policy(self, device: str) -> Any: ...


class ReplicaRead(NamedTuple):
    """One read's answer: the bytes, the replica index that served them, the
    replicas asked (EBUSY included), whether a duplicate was sent, and the latency
    the caller saw (µs, from the call to the return: admission, failovers and
    thread handoffs included)."""

    data: bytes
    replica: int
    attempts: int
    hedged: bool
    latency_us: float


class LocalReplica:
    """One copy of the data: ``path`` (a regular file or a block device) read by a
    :class:`DeviceReader`, judged by admission device ``device``.

    ``direct_io=None`` (auto) opens with ``O_DIRECT`` where the file system takes
    it and buffered where it refuses (tmpfs on kernels before 6.6: a RAM replica
    is a real use, and a page-cache read is what it is anyway); ``.direct_io``
    records which. ``opener`` makes the reader (a ``DeviceReader`` subclass or a
    factory with its signature), for tests and instrumented readers.
    """

    def __init__(self, path: str | Path, device: str | None = None, *,
                 direct_io: bool | None = None, alignment: int = 4096,
                 opener: Callable[..., DeviceReader] = DeviceReader) -> None:
        if device is not None and (not isinstance(device, str) or not device):
            raise ValueError(f"device must be a non-empty alias or None, got {device!r}")
        if direct_io is not None and not isinstance(direct_io, bool):
            raise ValueError(f"direct_io must be True, False or None (auto), got "
                             f"{direct_io!r}")
        self.path = Path(path)
        self.device = device
        if direct_io is None:
            # EINVAL is the file system refusing O_DIRECT; any other error (missing,
            # no permission) is left for the reader to report with its own words
            e = direct_io_error(self.path) if self.path.exists() else None
            direct_io = not (e is not None and e.errno == errno.EINVAL)
        self.reader = opener(self.path, alignment=alignment, direct_io=direct_io)
        self.direct_io: bool = direct_io

    @property
    def size(self) -> int:
        """Bytes readable (the reader's size at open)."""
        return self.reader.size

    def read(self, offset: int, length: int) -> tuple[bytes, float]:
        """``(data, device latency in µs)``; raises like :meth:`DeviceReader.read`."""
        return self.reader.read(offset, length)

    def close(self) -> None:
        """Close the reader. Idempotent."""
        self.reader.close()

    def __repr__(self) -> str:
        return (f"LocalReplica({str(self.path)!r}, {self.device!r}, "
                f"direct_io={self.direct_io})")


class _Race:
    """One hedged read's rendezvous: the first answer releases ``latch`` (held
    from creation), later ones are dropped; ``won`` tells a queued duplicate not
    to start. ``asked`` counts replicas asked, the workers' included."""

    __slots__ = ("answer", "asked", "latch", "mutex", "won")

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.latch = threading.Lock()
        self.latch.acquire()
        self.answer: tuple[int, bytes | None, BaseException | None] | None = None
        self.won = False
        self.asked = 0

    def post(self, index: int, data: bytes | None, error: BaseException | None) -> None:
        with self.mutex:
            if self.answer is None:
                self.answer = (index, data, error)
                self.latch.release()

    def add_asked(self) -> None:
        with self.mutex:
            self.asked += 1


class _Workers:
    """Daemon threads running queued tasks; a thread is started when none is idle
    (up to ``max_workers``), so a hedge never waits behind another read unless the
    set is at its cap. :meth:`close` runs what is queued, then joins."""

    def __init__(self, name: str, max_workers: int) -> None:
        self._name = name
        self._max = max_workers
        self._tasks: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = (
            queue.SimpleQueue())
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if self._closed:
                raise ValueError("LocalReplicaSet is closed")
            if self._idle:
                self._idle -= 1  # that idle thread (or another) takes it
            elif len(self._threads) < self._max:
                t = threading.Thread(target=self._run, daemon=True,
                                     name=f"{self._name}-{len(self._threads)}")
                self._threads.append(t)
                t.start()
            self._tasks.put((fn, args))

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            fn, args = task
            try:
                fn(*args)
            except Exception:  # tasks post their own errors: a bug here must not kill us
                log.exception("%s: hedging task failed", self._name)
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._tasks.put(None)
        for t in threads:
            t.join()


class LocalReplicaSet:
    """MittOS failover over local replicas of the same data (the in-process twin of
    :class:`mittd.daemon.client.ReplicaSet`; same policies, same counters where
    they apply).

    ``policy``:

    - ``"reject"`` (the default with an admission and no ``hedge_after_us``):
      replicas are asked in order with the caller's deadline, an EBUSY moves on
      at once; the LAST replica is asked with :data:`MAX_DEADLINE_US`, beyond
      every model, so it never rejects (someone must serve the read) but is still
      admitted, so the IO is tracked and its completion feeds the history;
    - ``"hedge"`` (the default with ``hedge_after_us``): Dean & Barroso: replica 0
      first, a duplicate to replica 1 if it has not answered after
      ``hedge_after_us``, first answer wins; nothing is rejected (every admission
      uses the maximal deadline; without an admission nothing is tracked);
    - ``"both"``: the caller's deadline and EBUSY failover as in ``"reject"``, and
      an admitted read still unanswered after ``hedge_after_us`` is duplicated to
      the next replica that admits it (EBUSY moves the duplicate on at once; the
      last replica never rejects);
    - ``"device"``: the mode and hedging delay of the first replica's device
      (``admission.policy(alias)``, the bundle's decision policy), taken once,
      here; an explicit ``hedge_after_us`` overrides the device's delay.
      ``.policy`` is then the mode taken;
    - ``"none"`` (the default without an admission): no admission at all, always
      replica 0, nothing tracked: the baseline.

    At most one duplicate is sent per read. Every admitted IO is completed with
    its measured device latency, a hedge's loser too when its IO ends (it runs
    on; its IO is counted in ``extra_ios``). ``"reject"`` and ``"none"`` read on
    the calling thread; hedged reads run on up to ``max_workers`` worker threads
    (module docstring: the handoff costs about 24 µs per read on a small VM). Many
    threads may call :meth:`read` at once.
    """

    POLICIES = ("reject", "hedge", "both", "device", "none")

    def __init__(self, replicas: Iterable[LocalReplica], admission: Admission | None = None,
                 *, policy: str | None = None, hedge_after_us: float | None = None,
                 max_workers: int = DEFAULT_MAX_WORKERS) -> None:
        reps = list(replicas)
        if not reps:
            raise ValueError("replicas must hold at least one LocalReplica, got none")
        for i, r in enumerate(reps):
            if not isinstance(r, LocalReplica):
                raise ValueError(f"replicas[{i}] must be a LocalReplica, got "
                                 f"{type(r).__name__}")
        if policy is None:
            policy = ("none" if admission is None and hedge_after_us is None else
                      "reject" if hedge_after_us is None else "hedge")
        if policy not in self.POLICIES:
            raise ValueError(f"policy must be one of {', '.join(self.POLICIES)}, got "
                             f"{policy!r}")
        if hedge_after_us is not None and (
                isinstance(hedge_after_us, bool) or not isinstance(hedge_after_us, int | float)
                or not math.isfinite(hedge_after_us) or hedge_after_us <= 0):
            raise ValueError(f"hedge_after_us must be a finite number > 0 µs or None, got "
                             f"{hedge_after_us!r}")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 2:
            raise ValueError(f"max_workers must be an int >= 2, got {max_workers!r}")
        if admission is None and policy in ("reject", "both", "device"):
            raise ValueError(f"admission is required for policy {policy!r} (only 'none' "
                             "and 'hedge' read without one)")
        if policy == "none":
            admission = None  # the baseline: never tracked, even when one is given
        if admission is not None:
            known = tuple(admission.devices)
            for i, r in enumerate(reps):
                if r.device is None:
                    raise ValueError(f"replicas[{i}].device is None: policy {policy!r} with "
                                     "an admission needs each replica's device alias")
                if r.device not in known:
                    raise ValueError(f"replicas[{i}].device {r.device!r} is not a device of "
                                     f"the admission (it has {', '.join(known)})")
        if policy == "device":
            assert admission is not None
            p = admission.policy(reps[0].device)  # type: ignore[arg-type]
            policy = p.mode
            hedge_after_us = hedge_after_us or p.hedge_after_us
        if policy in ("hedge", "both") and hedge_after_us is None:
            raise ValueError(f"hedge_after_us must be > 0 µs for policy {policy!r}, got None")
        self.replicas = reps
        self.admission = admission
        self.policy: str = policy
        self.hedge_after_us: float | None = (None if hedge_after_us is None
                                             else float(hedge_after_us))
        self.max_workers = max_workers
        # the range every replica can serve: checked before anything is admitted
        self.size = min(r.size for r in reps)
        self._hedging = policy in ("hedge", "both") and len(reps) > 1
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        self._workers: _Workers | None = None
        self._closed = False

    @classmethod
    def from_admission(cls, admission: Any, devices: Sequence[str] | None = None, *,
                       direct_io: bool | None = None, **kw: Any) -> LocalReplicaSet:
        """Replicas at the configured paths of ``devices`` (default: all, in config
        order) of an admission built from a config (``adm.device_path``)."""
        aliases = list(admission.devices if devices is None else devices)
        reps: list[LocalReplica] = []
        try:
            for a in aliases:
                path = admission.device_path(a)
                if path is None:
                    raise ValueError(f"devices: {a!r} has no path in the admission's config "
                                     "(built from bundles?); build LocalReplica objects")
                reps.append(LocalReplica(path, a, direct_io=direct_io))
            return cls(reps, admission, **kw)
        except BaseException:
            for r in reps:
                r.close()
            raise

    # -- counters ------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counters: reads, ebusy_failovers, hedges (duplicates decided), extra_ios
        (device IOs beyond one per read: duplicates that were issued), served_off_primary."""
        with self._lock:
            return dict(self._stats)

    def _count(self, ebusy: int, hedged: bool, replica: int) -> None:
        with self._lock:
            s = self._stats
            s["reads"] += 1
            s["ebusy_failovers"] += ebusy
            s["hedges"] += hedged
            s["served_off_primary"] += replica != 0

    def _deadline(self, i: int, deadline_us: int) -> int:
        """The deadline replica ``i`` is asked with under this policy."""
        if self.policy == "hedge" or i == len(self.replicas) - 1:
            return MAX_DEADLINE_US
        return deadline_us

    # -- reads ---------------------------------------------------------------------------
    def read(self, offset: int, length: int, deadline_us: int = 0) -> ReplicaRead:
        """Read ``length`` bytes at ``offset`` from the first replica that admits it
        (``deadline_us`` 0: each device's default). A range beyond any replica is a
        ``ValueError`` before anything is admitted; a failed IO raises its
        ``OSError`` after its ticket is completed."""
        t0 = time.perf_counter_ns()
        if self._closed:
            raise ValueError("LocalReplicaSet is closed")
        try:
            dl = operator.index(deadline_us)  # numpy ints too, never a float
        except TypeError:
            dl = -1
        if dl < 0:
            raise ValueError(f"deadline_us must be an int >= 0 (0: the device default), "
                             f"got {deadline_us!r}")
        deadline_us = dl
        if offset < 0 or length <= 0:
            raise ValueError(f"offset must be >= 0 and length > 0, got {offset}, {length}")
        if offset + length > self.size:
            raise ValueError(f"range [{offset}, {offset + length}) is beyond the replicas' "
                             f"size {self.size}")
        if self._hedging:
            return self._hedged_read(t0, offset, length, deadline_us)
        adm = self.admission
        if adm is None:
            data, _ = self.replicas[0].read(offset, length)
            self._count(0, False, 0)
            return ReplicaRead(data, 0, 1, False, (time.perf_counter_ns() - t0) / 1000.0)
        i, ticket, attempts = self._admit_from(0, offset, length, deadline_us)
        data = self._issue(i, ticket, offset, length)
        self._count(attempts - 1, False, i)
        return ReplicaRead(data, i, attempts, False, (time.perf_counter_ns() - t0) / 1000.0)

    def _admit_from(self, first: int, offset: int, length: int, deadline_us: int,
                    race: _Race | None = None) -> tuple[int, int, int]:
        """Ask replicas from ``first`` on until one admits: ``(index, ticket, asked)``.

        The last one is asked with the maximal deadline; should it still say EBUSY
        (an admission that breaks that rule), it serves untracked (ticket 0). With
        ``race`` (a duplicate on a worker) each ask is counted there, each EBUSY in
        the set's counters, and the asking stops (index -1) once the race is won."""
        adm = self.admission
        assert adm is not None
        last = len(self.replicas) - 1
        i = first
        while True:
            if race is not None:
                if race.won:
                    return -1, 0, i - first
                race.add_asked()
            ticket = adm.admit(self.replicas[i].device, OP_READ, offset,  # type: ignore[arg-type]
                               length, self._deadline(i, deadline_us))
            if ticket or i == last:
                return i, ticket, i - first + 1
            if race is not None:
                with self._lock:
                    self._stats["ebusy_failovers"] += 1
            i += 1

    def _issue(self, i: int, ticket: int, offset: int, length: int) -> bytes:
        """Replica ``i``'s IO, its ticket completed whatever happens (a failed IO
        with the time it took: it must not linger in the pending queue)."""
        replica = self.replicas[i]
        t0 = time.perf_counter_ns()
        try:
            data, latency_us = replica.read(offset, length)
        except BaseException:
            if ticket:
                self.admission.complete(replica.device, ticket,  # type: ignore[union-attr,arg-type]
                                        (time.perf_counter_ns() - t0) / 1000.0)
            raise
        if ticket:
            self.admission.complete(replica.device, ticket, latency_us)  # type: ignore[union-attr,arg-type]
        return data

    def _pool(self) -> _Workers:
        w = self._workers
        if w is None:
            with self._lock:
                if self._closed:
                    raise ValueError("LocalReplicaSet is closed")
                if self._workers is None:
                    self._workers = _Workers(f"mittd-hedge-{id(self):x}", self.max_workers)
                w = self._workers
        return w

    def _run_primary(self, race: _Race, i: int, ticket: int, offset: int, length: int) -> None:
        try:
            data = self._issue(i, ticket, offset, length) if self.admission is not None else (
                self.replicas[i].read(offset, length)[0])
        except BaseException as e:
            race.post(i, None, e)
        else:
            race.post(i, data, None)

    def _run_duplicate(self, race: _Race, first: int, offset: int, length: int,
                       deadline_us: int) -> None:
        """The hedge: skipped if the race is already won (it sat queued: no IO, no
        ticket), else admitted on this worker (EBUSY moves on at once) and issued."""
        try:
            if self.admission is None:
                if race.won:
                    return
                i, ticket = first, 0
                race.add_asked()
            else:
                i, ticket, _ = self._admit_from(first, offset, length, deadline_us, race)
                if i < 0:
                    return
            with self._lock:
                self._stats["extra_ios"] += 1
            data = (self._issue(i, ticket, offset, length) if ticket else
                    self.replicas[i].read(offset, length)[0])
        except BaseException as e:
            race.post(first, None, e)
        else:
            race.post(i, data, None)

    def _hedged_read(self, t0: int, offset: int, length: int, deadline_us: int) -> ReplicaRead:
        """Primary admitted here (EBUSY fails over with no thread hop), read on a
        worker; one duplicate after ``hedge_after_us`` without an answer."""
        pool = self._pool()
        race = _Race()
        if self.admission is None:
            i, ticket = 0, 0
            race.asked = 1
        else:
            i, ticket, race.asked = self._admit_from(0, offset, length, deadline_us)
        try:
            pool.submit(self._run_primary, race, i, ticket, offset, length)
        except ValueError:  # closed meanwhile: serve it here, the ticket completed
            self._run_primary(race, i, ticket, offset, length)
        hedged = False
        if i + 1 < len(self.replicas):
            assert self.hedge_after_us is not None
            if not race.latch.acquire(timeout=self.hedge_after_us / 1e6):
                hedged = True
                try:
                    pool.submit(self._run_duplicate, race, i + 1, offset, length, deadline_us)
                except ValueError:  # closed meanwhile: no duplicate
                    hedged = False
                race.latch.acquire()
        else:
            race.latch.acquire()
        with race.mutex:
            race.won = True
            answer = race.answer
            asked = race.asked
        assert answer is not None
        served, data, error = answer
        # the primary's EBUSYs; a duplicate's are counted by its worker
        if error is not None:
            with self._lock:
                self._stats["reads"] += 1
                self._stats["ebusy_failovers"] += i
                self._stats["hedges"] += hedged
            raise error
        self._count(i, hedged, served)
        assert data is not None
        return ReplicaRead(data, served, asked, hedged, (time.perf_counter_ns() - t0) / 1000.0)

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers (IOs in flight end and complete their tickets first), then
        close the replicas' readers. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = self._workers
        if workers is not None:
            workers.close()
        for r in self.replicas:
            r.close()

    def __enter__(self) -> LocalReplicaSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
