"""The two read paths of ``mittd bench live``, behind one small interface the client
threads use (:class:`~mittd.daemon.bench.live.modes.Backend`).

* ``inproc`` (the default): the decision runs in the client process, as Heimdall's
  client-level integration does — :class:`~mittd.daemon.replicas.LocalReplicaSet`
  over :class:`~mittd.daemon.replicas.LocalReplica` files, admission by one
  :class:`~mittd.daemon.embedded.Embedded` for every replica. A read costs a
  ``pread`` plus, in the mittd modes, one admit and one complete call: no RPC.
* ``grpc``: one ``mittd serve`` daemon per replica, proxy reads through
  :class:`~mittd.daemon.client.ReplicaSet`; every read is an RPC (0.7-0.9 ms of
  Python gRPC on a 2-core machine, several times a 4 KiB device read).

Both paths report their replica-set counters in one vocabulary: ``failovers``
(EBUSY → next replica), ``hedges``, ``extra_ios`` (device reads beyond one per
read) and ``extra_rpcs`` (calls beyond one per read; 0 in-process).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# mode -> the replica set's policy; in-process "none" never asks the admission core
_INPROC_POLICY = {"none": "none", "mittd": "reject", "hedge": "hedge", "both": "both"}
_GRPC_POLICY = {"none": "reject", "mittd": "reject", "hedge": "hedge", "both": "both"}
_DECIDES = ("mittd", "both")


def max_deadline_us() -> int:
    """A deadline beyond every trained threshold: admitted without a prediction."""
    from mittd.proto import MAX_DEADLINE_US

    return int(MAX_DEADLINE_US)


class TimedAdmission:
    """The admission object a replica set calls, timing each admit and complete call.

    Why: the decision's cost as the client sees it (featurise + model + the
    embedding's bookkeeping, lock included) next to the model time the admission
    core measures itself. One per replica set; a lock because hedged reads call it
    from the set's pool threads too. The timing adds two clock reads per call.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.admit_ns = self.admit_calls = self.complete_ns = self.complete_calls = 0

    def admit(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter_ns()
        r = self._inner.admit(*args, **kwargs)
        dt = time.perf_counter_ns() - t0
        with self._lock:
            self.admit_ns += dt
            self.admit_calls += 1
        return r

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter_ns()
        r = self._inner.complete(*args, **kwargs)
        dt = time.perf_counter_ns() - t0
        with self._lock:
            self.complete_ns += dt
            self.complete_calls += 1
        return r

    def __getattr__(self, name: str) -> Any:  # policy(), stats(), … pass through
        return getattr(self._inner, name)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"admit_ns": self.admit_ns, "admit_calls": self.admit_calls,
                    "complete_ns": self.complete_ns, "complete_calls": self.complete_calls}


class InprocBackend:
    """Reads through LocalReplicaSet, decisions by one of the Embedded admissions.

    Every set opens its own readers (a set closes its replicas when it is closed,
    and each client thread has a set per mode and primary): a few descriptors per
    thread. ``hedge`` gets no admission — hedging alone, nothing asked, nothing
    tracked, as ``none``; ``mittd`` and ``both`` share one admission (its trackers
    see every read of those modes, from every thread). ``admissions`` is one
    Embedded or a list (the validation's candidates, one each so that each keeps
    its own tracker state); a set is made with the index of the one it asks.
    """

    path = "inproc"

    def __init__(self, admissions: Any, replicas: Sequence[tuple[Path, str]],
                 deadline_us: int) -> None:
        self.admissions = (list(admissions) if isinstance(admissions, list | tuple)
                           else [admissions])
        self.replicas = list(replicas)
        self.deadline_us = int(deadline_us)
        self._beyond = max_deadline_us()
        self._timers: dict[int, TimedAdmission] = {}

    def make_set(self, mode: str, ring: list[int], hedge_after_us: float | None,
                 admission: int | None = 0) -> Any:
        from mittd.daemon.replicas import LocalReplica, LocalReplicaSet

        if mode in _DECIDES and admission is None:
            raise ValueError(f"mode {mode!r} needs an admission")
        timer = (TimedAdmission(self.admissions[admission])
                 if mode in _DECIDES and admission is not None else None)
        reps = []
        try:
            for i in ring:
                path, alias = self.replicas[i]
                reps.append(LocalReplica(path, alias))
            rset = LocalReplicaSet(reps, timer, policy=_INPROC_POLICY[mode],
                                   hedge_after_us=hedge_after_us)
        except BaseException:
            for r in reps:
                r.close()
            raise
        if timer is not None:
            self._timers[id(rset)] = timer
        return rset

    def deadline(self, mode: str) -> int:
        return self.deadline_us if mode in _DECIDES else self._beyond

    @staticmethod
    def outcome(result: Any) -> tuple[int, int]:
        return int(result.replica), int(result.attempts)

    def set_stats(self, rset: Any) -> dict[str, int]:
        st = rset.stats()
        timer = self._timers.get(id(rset))
        return {"failovers": int(st.get("ebusy_failovers", 0)),
                "hedges": int(st.get("hedges", 0)),
                "extra_ios": int(st.get("extra_ios", 0)),
                "extra_rpcs": 0,
                **(timer.counts() if timer is not None else {})}


class GrpcBackend:
    """Reads through the gRPC ReplicaSet, one daemon (``mittd serve``) per replica."""

    path = "grpc"

    def __init__(self, clients: Sequence[Any], deadline_us: int) -> None:
        self.clients = list(clients)
        self.deadline_us = int(deadline_us)
        self._beyond = max_deadline_us()

    def make_set(self, mode: str, ring: list[int], hedge_after_us: float | None,
                 admission: int | None = 0) -> Any:
        """``admission`` is ignored: each daemon decides with its own configuration."""
        from mittd.daemon.client import ReplicaSet

        return ReplicaSet([(self.clients[i], "r") for i in ring],
                          hedge_after_us=hedge_after_us, policy=_GRPC_POLICY[mode])

    def deadline(self, mode: str) -> int:
        return self.deadline_us if mode in _DECIDES else self._beyond

    @staticmethod
    def outcome(result: Any) -> tuple[int, int]:
        return int(result.replica), int(result.attempts)

    @staticmethod
    def set_stats(rset: Any) -> dict[str, int]:
        st = rset.stats()
        fo = st.get("ebusy_failovers", 0) + st.get("unavailable_failovers", 0)
        hedges, fallbacks = st.get("hedges", 0), st.get("fallbacks", 0)
        return {"failovers": fo, "hedges": hedges, "extra_ios": hedges + fallbacks,
                "extra_rpcs": fo + hedges + fallbacks}
