"""In-process reads with failover (mittd.daemon.replicas): data, policies, tickets.

Each policy runs against a tiny fake admission of the ``Embedded`` contract (it
rejects on demand and says exactly which tickets are pending) and, where the
behaviour does not need per-device control, against the real ``Embedded`` built
from the shipped Heimdall bundle (``decision_threshold`` 0.0 rejects every
predicted IO, 1.0 none).
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from mittd.daemon import replicas as replicas_mod
from mittd.daemon.proxy import DeviceReader
from mittd.daemon.replicas import LocalReplica, LocalReplicaSet, ReplicaRead
from mittd.predictor.bundle import load_bundle, save_bundle
from mittd.predictor.policy import DecisionPolicy
from mittd.predictor.shipped import shipped_bundle
from mittd.proto import MAX_DEADLINE_US
from mittd.traces.collect import direct_io_error
from mittd.traces.schema import OP_READ

SIZE = 256 * 1024 + 123  # unaligned on purpose: the last block is short
ALIASES = ("r0", "r1", "r2")


# -- helpers -------------------------------------------------------------------------------


class FakeAdmission:
    """The ``Embedded`` contract in a few lines: ``reject`` names the aliases that
    answer EBUSY to any deadline below MAX_DEADLINE_US."""

    def __init__(self, devices: tuple[str, ...] = ALIASES, reject: set[str] | None = None,
                 policies: dict[str, DecisionPolicy] | None = None) -> None:
        self.devices = devices
        self.reject = set(reject or ())
        self._policies = policies or {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.pending: dict[int, str] = {}
        self.admits: list[tuple[str, int]] = []
        self.rejects: list[str] = []
        self.completions: list[tuple[str, int, float]] = []

    def admit(self, device: str, op: int, offset: int, length: int, deadline_us: int) -> int:
        assert op == OP_READ and device in self.devices
        with self._lock:
            if device in self.reject and deadline_us < MAX_DEADLINE_US:
                self.rejects.append(device)
                return 0
            t = next(self._ids)
            self.pending[t] = device
            self.admits.append((device, deadline_us))
            return t

    def complete(self, device: str, ticket: int, latency_us: float) -> bool:
        with self._lock:
            assert latency_us >= 0.0
            self.completions.append((device, ticket, latency_us))
            return self.pending.pop(ticket, None) == device

    def policy(self, device: str) -> DecisionPolicy:
        return self._policies.get(device, DecisionPolicy())

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {a: SimpleNamespace(
                pending=sum(d == a for d in self.pending.values()),
                completions=sum(c[0] == a for c in self.completions),
                admitted=sum(x[0] == a for x in self.admits)) for a in self.devices}


class SlowReader(DeviceReader):
    """A DeviceReader that sleeps ``delay`` seconds before each read (a slow disk)."""

    def __init__(self, *args: Any, delay: float = 0.0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.delay = delay
        self.reads = 0

    def read(self, offset: int, length: int) -> tuple[bytes, float]:
        self.reads += 1
        time.sleep(self.delay)
        data, lat = super().read(offset, length)
        return data, lat + self.delay * 1e6


class FailingReader(DeviceReader):
    def read(self, offset: int, length: int) -> tuple[bytes, float]:
        raise OSError(errno.EIO, "injected EIO")


def slow(delay: float) -> Any:
    return lambda *a, **kw: SlowReader(*a, delay=delay, **kw)


def pending(adm: Any) -> int:
    return sum(s.pending for s in adm.stats().values())


def completions(adm: Any) -> int:
    return sum(s.completions for s in adm.stats().values())


@pytest.fixture
def data() -> bytes:
    return np.random.default_rng(7).integers(0, 256, SIZE, dtype=np.uint8).tobytes()


@pytest.fixture
def paths(tmp_path: Path, data: bytes) -> list[Path]:
    out = []
    for a in ALIASES:
        p = tmp_path / f"{a}.img"
        p.write_bytes(data)
        out.append(p)
    return out


def make_set(paths: list[Path], adm: Any, n: int = 3, openers: dict[int, Any] | None = None,
             **kw: Any) -> LocalReplicaSet:
    openers = openers or {}
    reps = [LocalReplica(paths[i], ALIASES[i], opener=openers.get(i, DeviceReader))
            for i in range(n)]
    return LocalReplicaSet(reps, adm, **kw)


def _embedded_class() -> Any:
    try:
        from mittd.daemon.embedded import Embedded
    except ImportError as e:  # written alongside this module
        pytest.skip(f"mittd.daemon.embedded is not importable yet ({e})")
    return Embedded


def embedded(threshold: float, n: int = 3, bundle: Path | None = None) -> Any:
    embedded_cls = _embedded_class()
    b = bundle or shipped_bundle("heimdall")
    # no probes and no overrun (a first call may compile): every decision is the threshold's
    return embedded_cls.from_bundles({a: b for a in ALIASES[:n]}, decision_threshold=threshold,
                                     max_reject_share=1.0, probe_after=0,
                                     predict_budget_us=1e9)


def admission(kind: str, reject_all: bool) -> Any:
    if kind == "fake":
        return FakeAdmission(reject=set(ALIASES) if reject_all else set())
    return embedded(0.0 if reject_all else 1.0)


KINDS = ["fake", "embedded"]


# -- data and plain policies ---------------------------------------------------------------


@pytest.mark.parametrize("policy", ["none", "reject", "hedge", "both"])
def test_every_policy_reads_exact_bytes(paths: list[Path], data: bytes, policy: str) -> None:
    adm = FakeAdmission() if policy != "none" else None
    kw = {"hedge_after_us": 1e6} if policy in ("hedge", "both") else {}
    with make_set(paths, adm, policy=policy, **kw) as rs:
        assert rs.policy == policy
        for off, n in [(0, 4096), (1, 1), (4095, 2), (5000, 70000), (SIZE - 17, 17), (0, SIZE)]:
            r = rs.read(off, n)
            assert isinstance(r, ReplicaRead)
            assert r.data == data[off:off + n]
            assert (r.replica, r.attempts, r.hedged) == (0, 1, False)
            assert r.latency_us > 0
        assert rs.stats() == {"reads": 6, "ebusy_failovers": 0, "hedges": 0, "extra_ios": 0,
                              "served_off_primary": 0}
    if adm is not None:
        assert pending(adm) == 0 and completions(adm) == 6


@pytest.mark.parametrize("i", range(3))
def test_every_replica_serves_exact_bytes(paths: list[Path], data: bytes, i: int) -> None:
    """Replica i serves when every one before it rejects."""
    adm = FakeAdmission(reject=set(ALIASES[:i]))
    with make_set(paths, adm) as rs:
        r = rs.read(777, 9000, deadline_us=100)
        assert r.data == data[777:9777] and r.replica == i and r.attempts == i + 1
        assert rs.stats()["ebusy_failovers"] == i
        assert rs.stats()["served_off_primary"] == (i > 0)


@pytest.mark.parametrize("kind", KINDS)
def test_always_reject_fails_over_to_the_last(paths: list[Path], data: bytes, kind: str) -> None:
    adm = admission(kind, reject_all=True)
    with make_set(paths, adm) as rs:
        for k in range(5):
            r = rs.read(4096 * k, 4096, deadline_us=0)
            assert r.data == data[4096 * k:4096 * (k + 1)]
            assert (r.replica, r.attempts, r.hedged) == (2, 3, False)
        assert rs.stats() == {"reads": 5, "ebusy_failovers": 10, "hedges": 0, "extra_ios": 0,
                              "served_off_primary": 5}
    st = adm.stats()
    assert st["r2"].completions == 5 and pending(adm) == 0
    assert st["r0"].completions == st["r1"].completions == 0


def test_last_replica_is_asked_with_the_maximal_deadline(paths: list[Path]) -> None:
    adm = FakeAdmission(reject={"r0"})
    with make_set(paths, adm, n=2) as rs:
        rs.read(0, 512, deadline_us=250)
    assert adm.rejects == ["r0"] and adm.admits == [("r1", MAX_DEADLINE_US)]


@pytest.mark.parametrize("kind", KINDS)
def test_never_reject_serves_replica_0(paths: list[Path], data: bytes, kind: str) -> None:
    adm = admission(kind, reject_all=False)
    with make_set(paths, adm) as rs:
        for k in range(5):
            r = rs.read(100 * k, 3000, deadline_us=0)
            assert r.data == data[100 * k:100 * k + 3000]
            assert (r.replica, r.attempts) == (0, 1)
        assert rs.stats()["ebusy_failovers"] == 0
    assert adm.stats()["r0"].completions == 5 and pending(adm) == 0


def test_none_policy_is_never_tracked(paths: list[Path], data: bytes) -> None:
    adm = FakeAdmission(reject=set(ALIASES))
    with make_set(paths, adm, policy="none") as rs:
        assert rs.admission is None
        assert rs.read(10, 10).data == data[10:20]
    assert adm.admits == [] and adm.rejects == []
    reps = [LocalReplica(p) for p in paths]  # no aliases at all: the baseline
    with LocalReplicaSet(reps) as rs:
        assert rs.policy == "none" and rs.read(0, 5).replica == 0


# -- hedging -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_hedge_duplicate_wins_and_the_loser_completes(paths: list[Path], data: bytes,
                                                      kind: str) -> None:
    adm = admission(kind, reject_all=True)  # "hedge" never rejects: every deadline is MAX
    rs = make_set(paths, adm, openers={0: slow(0.3)}, policy="hedge", hedge_after_us=2000)
    r = rs.read(8192, 4096, deadline_us=100)
    assert r.data == data[8192:12288]
    assert (r.replica, r.attempts, r.hedged) == (1, 2, True)
    assert r.latency_us < 250_000  # did not wait for the slow primary
    assert rs.stats() == {"reads": 1, "ebusy_failovers": 0, "hedges": 1, "extra_ios": 1,
                          "served_off_primary": 1}
    assert adm.stats()["r0"].pending == 1  # the loser is still reading
    rs.close()  # waits for it
    st = adm.stats()
    assert st["r0"].completions == 1 and st["r1"].completions == 1 and pending(adm) == 0
    assert rs.replicas[0].reader.reads == 1  # type: ignore[attr-defined]


def test_hedge_not_needed_when_the_primary_is_fast(paths: list[Path], data: bytes) -> None:
    adm = FakeAdmission()
    with make_set(paths, adm, policy="hedge", hedge_after_us=5e6) as rs:
        for k in range(20):
            r = rs.read(k * 1000, 1000)
            assert r.data == data[k * 1000:(k + 1) * 1000] and r.replica == 0 and not r.hedged
        assert rs.stats()["hedges"] == rs.stats()["extra_ios"] == 0
    assert adm.admits == [("r0", MAX_DEADLINE_US)] * 20 and pending(adm) == 0


def test_hedge_without_admission(paths: list[Path], data: bytes) -> None:
    reps = [LocalReplica(paths[0], opener=slow(0.2)), LocalReplica(paths[1])]
    with LocalReplicaSet(reps, hedge_after_us=1000) as rs:
        assert rs.policy == "hedge"
        r = rs.read(3, 4000)
        assert r.data == data[3:4003] and r.replica == 1 and r.hedged


def test_hedge_with_one_replica_just_reads(paths: list[Path], data: bytes) -> None:
    adm = FakeAdmission()
    with make_set(paths, adm, n=1, policy="hedge", hedge_after_us=10) as rs:
        r = rs.read(0, 100)
        assert r.data == data[:100] and not r.hedged
    assert pending(adm) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_both_fails_over_at_once_on_ebusy(paths: list[Path], data: bytes, kind: str) -> None:
    adm = admission(kind, reject_all=True)
    with make_set(paths, adm, policy="both", hedge_after_us=5e6) as rs:
        r = rs.read(0, 4096, deadline_us=0)
        assert r.data == data[:4096] and (r.replica, r.attempts, r.hedged) == (2, 3, False)
        assert r.latency_us < 1e6  # no hedging delay was waited for
        assert rs.stats()["ebusy_failovers"] == 2
    assert adm.stats()["r2"].completions == 1 and pending(adm) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_both_hedges_an_admitted_slow_read(paths: list[Path], data: bytes, kind: str) -> None:
    adm = admission(kind, reject_all=False)
    rs = make_set(paths, adm, openers={0: slow(0.3)}, policy="both", hedge_after_us=2000)
    r = rs.read(4096, 100, deadline_us=0)
    assert r.data == data[4096:4196] and (r.replica, r.attempts, r.hedged) == (1, 2, True)
    rs.close()
    assert rs.stats()["hedges"] == rs.stats()["extra_ios"] == 1
    assert adm.stats()["r0"].completions == 1 and pending(adm) == 0


def test_both_duplicate_fails_over_on_ebusy(paths: list[Path], data: bytes) -> None:
    adm = FakeAdmission(reject={"r1"})
    rs = make_set(paths, adm, openers={0: slow(0.3)}, policy="both", hedge_after_us=2000)
    r = rs.read(0, 50, deadline_us=300)
    assert r.data == data[:50] and (r.replica, r.attempts, r.hedged) == (2, 3, True)
    rs.close()
    assert rs.stats() == {"reads": 1, "ebusy_failovers": 1, "hedges": 1, "extra_ios": 1,
                          "served_off_primary": 1}
    assert adm.admits == [("r0", 300), ("r2", MAX_DEADLINE_US)] and pending(adm) == 0


def test_queued_duplicate_is_skipped_once_the_race_is_won(paths: list[Path]) -> None:
    """A duplicate that starts after the answer came does no IO and takes no ticket."""
    adm = FakeAdmission()
    rs = make_set(paths, adm, n=2, policy="hedge", hedge_after_us=1000)
    race = replicas_mod._Race()
    race.won = True
    rs._run_duplicate(race, 1, 0, 10, 0)
    assert race.answer is None and adm.admits == [] and rs.stats()["extra_ios"] == 0
    rs.close()


# -- the device's policy ------------------------------------------------------------------


def test_device_policy_takes_the_bundle_mode(paths: list[Path]) -> None:
    adm = FakeAdmission(policies={"r0": DecisionPolicy(mode="hedge", hedge_after_us=700.0)})
    with make_set(paths, adm, policy="device") as rs:
        assert (rs.policy, rs.hedge_after_us) == ("hedge", 700.0)
    with make_set(paths, adm, policy="device", hedge_after_us=50.0) as rs:
        assert (rs.policy, rs.hedge_after_us) == ("hedge", 50.0)
    with make_set(paths, FakeAdmission(), policy="device") as rs:
        assert rs.policy == "reject"


def test_device_policy_of_a_real_bundle(tmp_path: Path, paths: list[Path], data: bytes) -> None:
    b = load_bundle(shipped_bundle("heimdall"))
    pol = DecisionPolicy(mode="both", hedge_after_us=1500.0).to_dict()
    path = tmp_path / "both.mittd"
    save_bundle(dataclasses.replace(b, policy=pol), path)
    embedded_cls = _embedded_class()
    adm = embedded_cls.from_bundles({"r0": path, "r1": shipped_bundle("heimdall")})
    assert adm.policy("r0").mode == "both"
    with make_set(paths, adm, n=2, policy="device") as rs:
        assert (rs.policy, rs.hedge_after_us) == ("both", 1500.0)
        assert rs.read(1, 2).data == data[1:3]
    assert pending(adm) == 0


# -- validation and errors ----------------------------------------------------------------


@pytest.mark.parametrize(("kw", "name"), [
    ({"policy": "fast"}, "policy"),
    ({"policy": "hedge"}, "hedge_after_us"),
    ({"policy": "both", "hedge_after_us": 0}, "hedge_after_us"),
    ({"hedge_after_us": float("nan")}, "hedge_after_us"),
    ({"hedge_after_us": True}, "hedge_after_us"),
    ({"max_workers": 1}, "max_workers"),
])
def test_bad_parameters_name_themselves(paths: list[Path], kw: dict[str, Any], name: str
                                        ) -> None:
    reps = [LocalReplica(p, a) for p, a in zip(paths, ALIASES, strict=True)]
    with pytest.raises(ValueError, match=rf"^{name} must"):
        LocalReplicaSet(reps, FakeAdmission(), **kw)


def test_bad_replicas_and_admission(paths: list[Path]) -> None:
    with pytest.raises(ValueError, match=r"^replicas must"):
        LocalReplicaSet([], FakeAdmission())
    with pytest.raises(ValueError, match=r"^replicas\[0\] must"):
        LocalReplicaSet([str(paths[0])], FakeAdmission())  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^admission is required"):
        LocalReplicaSet([LocalReplica(paths[0], "r0")], policy="reject")
    with pytest.raises(ValueError, match=r"^replicas\[1\]\.device 'nope'"):
        LocalReplicaSet([LocalReplica(paths[0], "r0"), LocalReplica(paths[1], "nope")],
                        FakeAdmission())
    with pytest.raises(ValueError, match=r"^replicas\[0\]\.device is None"):
        LocalReplicaSet([LocalReplica(paths[0])], FakeAdmission())
    with pytest.raises(ValueError, match=r"^direct_io must"):
        LocalReplica(paths[0], "r0", direct_io="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^device must"):
        LocalReplica(paths[0], "")


@pytest.mark.parametrize("policy", ["reject", "both"])
def test_bounds_errors_leave_no_ticket(paths: list[Path], policy: str) -> None:
    adm = FakeAdmission(reject={"r0"})
    with make_set(paths, adm, policy=policy, hedge_after_us=1000) as rs:
        for off, n in [(SIZE - 10, 11), (-1, 10), (0, 0), (SIZE, 1)]:
            with pytest.raises(ValueError, match=r"range|offset"):
                rs.read(off, n)
        with pytest.raises(ValueError, match=r"^deadline_us must"):
            rs.read(0, 1, deadline_us=-5)
        with pytest.raises(ValueError, match=r"^deadline_us must .* got 1.5"):
            rs.read(0, 1, deadline_us=1.5)  # type: ignore[arg-type]
        assert rs.stats()["reads"] == 0
    assert adm.admits == [] and adm.rejects == [] and pending(adm) == 0


def test_smaller_replica_bounds_the_set(tmp_path: Path, paths: list[Path]) -> None:
    short = tmp_path / "short.img"
    short.write_bytes(paths[0].read_bytes()[:8192])
    adm = FakeAdmission()
    with LocalReplicaSet([LocalReplica(paths[0], "r0"), LocalReplica(short, "r1")], adm) as rs:
        assert rs.size == 8192
        with pytest.raises(ValueError, match=r"beyond"):
            rs.read(8000, 500)
    assert adm.admits == []


@pytest.mark.parametrize("policy", ["reject", "hedge"])
def test_failed_io_completes_its_ticket(paths: list[Path], policy: str) -> None:
    adm = FakeAdmission()
    reps = [LocalReplica(paths[0], "r0", opener=FailingReader), LocalReplica(paths[1], "r1")]
    with (LocalReplicaSet(reps, adm, policy=policy, hedge_after_us=5e6) as rs,
          pytest.raises(OSError, match=r"injected EIO")):
        rs.read(0, 100)
    assert adm.stats()["r0"].completions == 1 and pending(adm) == 0


# -- file systems and direct IO -----------------------------------------------------------


def test_direct_io_auto_on_a_disk_file(paths: list[Path], data: bytes) -> None:
    r = LocalReplica(paths[0], "r0")
    assert r.direct_io is (direct_io_error(paths[0]) is None)
    assert r.reader.direct_io is r.direct_io and r.size == SIZE
    with LocalReplicaSet([r], FakeAdmission()) as rs:
        assert rs.read(5, 5).data == data[5:10]


def test_tmpfs_replica_with_auto_direct_io(data: bytes) -> None:
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        pytest.skip("no writable /dev/shm (tmpfs) on this machine")
    p = shm / f"mittd-test-replica-{os.getpid()}-{threading.get_ident()}.img"
    p.write_bytes(data)
    try:
        r = LocalReplica(p, "r1")  # tmpfs refuses O_DIRECT before Linux 6.6, takes it after
        assert r.direct_io is (direct_io_error(p) is None)
        with LocalReplicaSet([r], FakeAdmission(devices=("r1",))) as rs:
            assert rs.read(4000, 300).data == data[4000:4300]
    finally:
        p.unlink()


def test_buffered_when_the_file_system_refuses_o_direct(monkeypatch: pytest.MonkeyPatch,
                                                        paths: list[Path], data: bytes) -> None:
    monkeypatch.setattr(replicas_mod, "direct_io_error",
                        lambda path: OSError(errno.EINVAL, "Invalid argument"))
    r = LocalReplica(paths[0], "r0")
    assert r.direct_io is False and r.reader.direct_io is False
    with LocalReplicaSet([r], FakeAdmission()) as rs:
        assert rs.read(1, SIZE - 1).data == data[1:]


# -- threads and lifetime -----------------------------------------------------------------


class EveryThirdRejects(FakeAdmission):
    """Rejects every third admission below the maximal deadline, on any replica."""

    def __init__(self) -> None:
        super().__init__()
        self._n = itertools.count()

    def admit(self, device: str, op: int, offset: int, length: int, deadline_us: int) -> int:
        if deadline_us < MAX_DEADLINE_US and next(self._n) % 3 == 0:
            with self._lock:
                self.rejects.append(device)
            return 0
        return super().admit(device, op, offset, length, deadline_us)


@pytest.mark.parametrize(("policy", "hedge_after_us"), [("reject", None), ("hedge", 30.0),
                                                        ("both", 30.0)])
def test_concurrent_readers(paths: list[Path], data: bytes, policy: str,
                            hedge_after_us: float | None) -> None:
    adm = EveryThirdRejects()
    rs = make_set(paths, adm, policy=policy, hedge_after_us=hedge_after_us)
    per_thread = 150
    results: list[list[ReplicaRead]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        rng = np.random.default_rng(k)
        try:
            for _ in range(per_thread):
                off = int(rng.integers(0, SIZE - 1))
                n = int(rng.integers(1, min(20000, SIZE - off) + 1))
                r = rs.read(off, n, deadline_us=200)
                if r.data != data[off:off + n]:
                    raise AssertionError(f"bad data at {off}+{n} from replica {r.replica}")
                results[k].append(r)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rs.close()
    assert not errors, errors
    flat = [r for rr in results for r in rr]
    st = rs.stats()
    assert st["reads"] == len(flat) == 4 * per_thread
    assert st["served_off_primary"] == sum(r.replica != 0 for r in flat)
    assert st["hedges"] == sum(r.hedged for r in flat)
    assert st["ebusy_failovers"] == len(adm.rejects)
    assert st["extra_ios"] <= st["hedges"]
    assert len(adm.admits) == st["reads"] + st["extra_ios"]  # one IO each, plus duplicates
    assert pending(adm) == 0 and completions(adm) == len(adm.admits)
    if policy == "reject":
        assert st["hedges"] == 0
        assert all(r.attempts == r.replica + 1 for r in flat)


@pytest.mark.parametrize("kind", KINDS)
def test_no_pending_after_close_with_real_reads(paths: list[Path], kind: str) -> None:
    adm = admission(kind, reject_all=False)
    rs = make_set(paths, adm, openers={0: slow(0.05)}, policy="hedge", hedge_after_us=100)
    threads = [threading.Thread(target=lambda: [rs.read(0, 4096) for _ in range(3)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rs.close()
    rs.close()  # idempotent
    assert pending(adm) == 0
    assert rs.stats()["reads"] == 12 and rs.stats()["extra_ios"] >= 1
    with pytest.raises(ValueError, match=r"closed"):
        rs.read(0, 1)


def test_from_admission_uses_the_configured_paths(paths: list[Path], data: bytes) -> None:
    adm = FakeAdmission(devices=("r0", "r1"))
    adm.device_path = {"r0": paths[0], "r1": paths[1]}.get  # type: ignore[attr-defined]
    with LocalReplicaSet.from_admission(adm) as rs:
        assert [r.device for r in rs.replicas] == ["r0", "r1"]
        assert rs.read(9, 9).data == data[9:18]
    adm.device_path = lambda alias: None  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"^devices: 'r0' has no path"):
        LocalReplicaSet.from_admission(adm)


def test_from_admission_with_a_real_embedded(paths: list[Path], data: bytes) -> None:
    embedded_cls = _embedded_class()
    b = shipped_bundle("heimdall")
    adm = embedded_cls.from_bundles({"r0": b, "r1": b}, paths={"r0": paths[0], "r1": paths[1]},
                                    decision_threshold=0.0, max_reject_share=1.0,
                                    probe_after=0, predict_budget_us=1e9)
    with LocalReplicaSet.from_admission(adm, policy="reject") as rs:
        r = rs.read(100, 200)
        assert r.data == data[100:300] and (r.replica, r.attempts) == (1, 2)
    assert adm.stats()["r1"].completions == 1 and pending(adm) == 0
