"""The modes of ``mittd bench live`` and its client side: the contention schedule and the
closed-loop client threads that read through :class:`~mittd.daemon.client.ReplicaSet`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODES = ("mittd", "none", "hedge")
WARMUP = len(MODES)  # mode index of the warm-up period
STOP = -1
READ_BYTES = 4096
MiB = 1 << 20


# -- contention schedule -----------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Replica ``i`` is under writes while ``(t - i·period/n) mod period < busy·period``."""

    replicas: int
    period_s: float
    busy: float

    def busy_at(self, t_s: float) -> list[bool]:
        on = self.busy * self.period_s
        return [((t_s - i * self.period_s / self.replicas) % self.period_s) < on
                for i in range(self.replicas)]

    def busy_matrix(self, t_s: np.ndarray) -> np.ndarray:
        """``[reads, replicas]`` bool: was replica j under writes at each time."""
        shift = np.arange(self.replicas) * self.period_s / self.replicas
        return np.mod(t_s[:, None] - shift[None, :], self.period_s) < self.busy * self.period_s

    def windows(self) -> list[tuple[float, float]]:
        """Each replica's busy window within one period, seconds from the period start."""
        on = self.busy * self.period_s
        return [(i * self.period_s / self.replicas, i * self.period_s / self.replicas + on)
                for i in range(self.replicas)]


# -- the client ---------------------------------------------------------------------------


@dataclass
class Shared:
    replicas: list[tuple[Any, str]]
    blocks: int
    deadline_us: int
    seed: int
    t0_ns: int = 0
    mode: int = WARMUP
    hedge_after_us: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    records: list[list[tuple[int, int, int, int, int, int]]] = field(default_factory=list)
    stats: list[dict[int, dict[str, int]]] = field(default_factory=list)


def worker(k: int, sh: Shared) -> None:
    """One closed-loop client thread: read, record, repeat, until the mode is STOP."""
    from mittd.daemon.client import ReplicaSet
    from mittd.proto import MAX_DEADLINE_US

    n = len(sh.replicas)
    rng = np.random.default_rng([sh.seed, k])
    out = sh.records[k]
    sets: dict[int, list[ReplicaSet]] = {}
    prim = off = np.zeros(0, np.int64)
    j = 0
    try:
        while not sh.stop.is_set():
            m = sh.mode
            if m == STOP:
                break
            rsets = sets.get(m)
            if rsets is None:
                hedge = sh.hedge_after_us if m < WARMUP and MODES[m] == "hedge" else None
                rsets = sets[m] = [
                    ReplicaSet([sh.replicas[(p + i) % n] for i in range(n)],
                               hedge_after_us=hedge) for p in range(n)]
            if j >= len(prim):
                prim = rng.integers(0, n, 4096)
                off = rng.integers(0, sh.blocks, 4096) * READ_BYTES
                j = 0
            p, o = int(prim[j]), int(off[j])
            j += 1
            dl = sh.deadline_us if m < WARMUP and MODES[m] == "mittd" else MAX_DEADLINE_US
            t0 = time.perf_counter_ns()
            r = rsets[p].read(o, READ_BYTES, dl)
            t1 = time.perf_counter_ns()
            out.append((m, t0 - sh.t0_ns, t1 - t0, p, (p + r.replica) % n, r.attempts))
    except Exception as e:
        if not sh.stop.is_set():
            sh.errors.append(f"client read failed: {type(e).__name__}: {e}".splitlines()[0])
            sh.stop.set()
    finally:
        sh.stats[k] = {m: sum_stats(s.stats() for s in rs) for m, rs in sets.items()}
        for rs in sets.values():
            for s in rs:
                s.close()


def sum_stats(stats: Any) -> dict[str, int]:
    tot: dict[str, int] = {}
    for st in stats:
        for key, v in st.items():
            tot[key] = tot.get(key, 0) + v
    return tot
