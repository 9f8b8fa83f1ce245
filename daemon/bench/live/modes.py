"""The modes of ``mittd bench live`` and its client side: the per-replica contention
schedule, the read sources (closed loop, or a trace's arrival times) and the client
threads that read through a replica set of the chosen path (in-process or gRPC)."""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

MODES = ("none", "mittd", "hedge", "both")
WARMUP = len(MODES)  # mode index of the warm-up period (read as "none")
#: validation candidate ``c`` reads under mode index ``VALIDATION + c``: never a test mode,
#: so its records stay out of the test rows
VALIDATION = 16
STOP = -1
READ_BYTES = 4096
MiB = 1 << 20
#: fields of one client record: mode, issue ns since t0, latency ns, primary, replica that
#: served it, attempts, lag ns (trace-driven: how late it was issued against the trace)
REC = 7
LATE_NS = 1_000_000  # a trace read issued more than 1 ms after its arrival time is "behind"


def mode_name(m: int) -> str:
    """The behaviour of mode index ``m``: the warm-up reads like ``none``."""
    return "none" if m == WARMUP else MODES[m]


def plan(m: int, sh: Shared) -> tuple[str, int | None]:
    """How mode index ``m`` reads: the behaviour (a test mode's name) and the admission
    (an index into the backend's, None: none asked).

    Why here: the validation candidates and the test modes share the clients; a
    candidate reads like ``mittd`` with its own admission (``off``: like ``none``),
    and once the validation chose "mittd off", ``mittd`` reads like ``none`` and
    ``both`` like ``hedge``.
    """
    if m >= VALIDATION:
        adm = sh.candidates[m - VALIDATION]
        return ("none" if adm is None else "mittd"), adm
    name = mode_name(m)
    if name in ("mittd", "both") and sh.admission is None:
        return ("none" if name == "mittd" else "hedge"), None
    return name, sh.admission


# -- contention schedule -----------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Replica ``i`` is under writes while ``(t - i·period/n) mod period < busy[i]·period``.

    ``busy`` is one fraction for every replica or one per replica (0: that replica
    never gets a writer, e.g. a RAM replica beside a disk one).
    """

    replicas: int
    period_s: float
    busy: tuple[float, ...] | float

    def __post_init__(self) -> None:
        b = self.busy
        per = (float(b),) * self.replicas if isinstance(b, int | float) else tuple(
            float(v) for v in b)
        if len(per) != self.replicas:
            raise ValueError(f"busy: {len(per)} fractions for {self.replicas} replicas")
        object.__setattr__(self, "busy", per)

    @property
    def fractions(self) -> tuple[float, ...]:
        assert isinstance(self.busy, tuple)
        return self.busy

    @property
    def any_busy(self) -> bool:
        return any(b > 0 for b in self.fractions)

    def _shift(self, i: int) -> float:
        return i * self.period_s / self.replicas

    def busy_at(self, t_s: float) -> list[bool]:
        return [((t_s - self._shift(i)) % self.period_s) < b * self.period_s
                for i, b in enumerate(self.fractions)]

    def busy_matrix(self, t_s: np.ndarray) -> np.ndarray:
        """``[reads, replicas]`` bool: was replica j under writes at each time."""
        shift = np.arange(self.replicas) * self.period_s / self.replicas
        on = np.asarray(self.fractions) * self.period_s
        return np.mod(t_s[:, None] - shift[None, :], self.period_s) < on[None, :]

    def windows(self) -> list[tuple[float, float]]:
        """Each replica's busy window within one period, seconds from the period start
        (empty, ``(s, s)``, for a replica that never gets writers)."""
        return [(self._shift(i), self._shift(i) + b * self.period_s)
                for i, b in enumerate(self.fractions)]


# -- what the clients read ---------------------------------------------------------------


@dataclass(frozen=True)
class Arrivals:
    """A trace's reads, ready to issue: arrival times (ns from the trace's first read,
    divided by the speed-up), offsets and lengths fitted to the replicas; the trace
    repeats every ``span_ns``."""

    t_ns: np.ndarray  # int64, ascending
    offsets: np.ndarray  # int64, 4 KiB aligned
    lengths: np.ndarray  # int64, multiples of 4 KiB
    span_ns: int
    source: str
    reads_per_s: float


def load_arrivals(path: str, size: int, speed: float) -> Arrivals:
    """The read ops of any trace mittd reads, as :class:`Arrivals` on replicas of ``size``
    bytes: offsets modulo the size, aligned down to 4 KiB; lengths rounded up to 4 KiB and
    at most 1 MiB. Raises TraceError (one line) for an unreadable trace, ValueError when it
    holds no reads."""
    from mittd.traces.registry import open_trace
    from mittd.traces.schema import OP_READ

    table = open_trace(path).table()
    ops = table.column("op").combine_chunks().indices.to_numpy(zero_copy_only=False)
    keep = ops == OP_READ
    if not keep.any():
        raise ValueError(f"{path}: no reads in the trace")
    ts = table.column("ts_issue_us").to_numpy()[keep].astype(np.int64)
    off = table.column("offset").to_numpy()[keep].astype(np.int64)
    ln = table.column("size").to_numpy()[keep].astype(np.int64)
    order = np.argsort(ts, kind="stable")
    ts, off, ln = ts[order], off[order], ln[order]
    ln = np.clip(-(-np.maximum(ln, 1) // READ_BYTES) * READ_BYTES, READ_BYTES, MiB)
    room = np.maximum(size - ln, READ_BYTES)  # offset + length stays inside the replica
    off = (np.mod(off, room) // READ_BYTES) * READ_BYTES
    t_ns = ((ts - ts[0]) * 1000 / speed).astype(np.int64)
    gap = int(t_ns[-1] // max(len(t_ns) - 1, 1)) if len(t_ns) > 1 else 1_000_000
    span = int(t_ns[-1]) + max(gap, 1)
    return Arrivals(t_ns, off, ln, span, str(path), len(t_ns) / (span / 1e9))


def closed_loop(k: int, sh: Shared) -> Iterator[tuple[int, int, int, int]]:
    """Reads back to back: a random primary and a random 4 KiB block, no lag."""
    rng = np.random.default_rng([sh.seed, k])
    n = sh.n
    while True:
        prim = rng.integers(0, n, 4096).tolist()
        off = (rng.integers(0, sh.blocks, 4096) * READ_BYTES).tolist()
        for p, o in zip(prim, off, strict=True):
            yield p, o, READ_BYTES, 0


def trace_driven(k: int, sh: Shared) -> Iterator[tuple[int, int, int, int]]:
    """Open loop: the threads take the trace's reads in order (a shared counter) and
    each issues its read at the read's arrival time; when every thread was busy the read
    goes at once and its lag (issue - arrival) is recorded."""
    a = sh.arrivals
    assert a is not None
    rng = np.random.default_rng([sh.seed, k])
    n = len(a.t_ns)
    t_ns, offs, lens = a.t_ns.tolist(), a.offsets.tolist(), a.lengths.tolist()
    prim = rng.integers(0, sh.n, 4096).tolist()
    j = 0
    clock = time.perf_counter_ns
    while not sh.stop.is_set():
        i = next(sh.seq)  # atomic under the GIL
        q, r = divmod(i, n)
        due = sh.t0_ns + t_ns[r] + q * a.span_ns
        now = clock()
        while due > now:
            wait = (due - now) / 1e9
            if wait > 0.05:
                if sh.stop.wait(0.05):
                    return
            else:
                time.sleep(wait)
            now = clock()
        if j == len(prim):
            prim = rng.integers(0, sh.n, 4096).tolist()
            j = 0
        p = prim[j]
        j += 1
        yield p, offs[r], lens[r], now - due


# -- the client ---------------------------------------------------------------------------


class Backend(Protocol):
    """How a client thread reads on one path (in-process or gRPC): see ``paths``."""

    path: str

    def make_set(self, mode: str, ring: list[int], hedge_after_us: float | None,
                 admission: int | None = 0) -> Any: ...

    def deadline(self, mode: str) -> int: ...

    def outcome(self, result: Any) -> tuple[int, int]: ...

    def set_stats(self, rset: Any) -> dict[str, int]: ...


@dataclass
class Shared:
    """What the client threads and the main thread share (the mode switch, the records)."""

    backend: Backend
    n: int  # replicas
    blocks: int  # 4 KiB blocks per replica
    seed: int
    arrivals: Arrivals | None = None
    t0_ns: int = 0
    mode: int = WARMUP
    hedge_after_us: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    records: list[array] = field(default_factory=list)  # per thread, REC int64s per read
    stats: list[dict[int, dict[str, int]]] = field(default_factory=list)
    seq: Iterator[int] = field(default_factory=lambda: iter(range(1 << 62)))
    #: per validation candidate, its admission (None: "off", nothing asked)
    candidates: list[int | None] = field(default_factory=list)
    #: the admission of the test modes mittd and both (None: mittd chose off); set before
    #: their first slice, read when a thread builds their sets
    admission: int | None = 0


def worker(k: int, sh: Shared) -> None:
    """One client thread: take a read from its source, read it through the current mode's
    replica set (built on first use), record it, until the mode is STOP."""
    be = sh.backend
    n = sh.n
    out = sh.records[k]
    sets: dict[int, tuple[list[Any], int]] = {}
    source = trace_driven(k, sh) if sh.arrivals is not None else closed_loop(k, sh)
    clock = time.perf_counter_ns
    t0_run = sh.t0_ns
    try:
        for p, off, ln, lag in source:
            m = sh.mode
            if m == STOP or sh.stop.is_set():
                break
            got = sets.get(m)
            if got is None:
                name, adm = plan(m, sh)
                hedge = sh.hedge_after_us if name in ("hedge", "both") else None
                got = sets[m] = ([be.make_set(name, [(q + i) % n for i in range(n)], hedge,
                                              adm) for q in range(n)], be.deadline(name))
            rsets, dl = got
            t0 = clock()
            r = rsets[p].read(off, ln, dl)
            t1 = clock()
            served, attempts = be.outcome(r)
            out.extend((m, t0 - t0_run, t1 - t0, p, (p + served) % n, attempts, lag))
    except Exception as e:
        if not sh.stop.is_set():
            sh.errors.append(f"client read failed: {type(e).__name__}: {e}".splitlines()[0])
            sh.stop.set()
    finally:
        sh.stats[k] = {m: sum_stats(be.set_stats(s) for s in rs)
                       for m, (rs, _) in sets.items()}
        for rs, _ in sets.values():
            for s in rs:
                close = getattr(s, "close", None)
                if close is not None:
                    close()


def sum_stats(stats: Any) -> dict[str, int]:
    tot: dict[str, int] = {}
    for st in stats:
        for key, v in st.items():
            tot[key] = tot.get(key, 0) + v
    return tot


def records_array(records: Sequence[array]) -> np.ndarray:
    """The client records of every thread as one ``[reads, REC]`` int64 array."""
    parts = [np.frombuffer(r, np.int64).reshape(-1, REC).copy() for r in records if len(r)]
    return np.concatenate(parts) if parts else np.zeros((0, REC), np.int64)


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
