"""Issue 15: idle then burst. The first prediction after an idle spell runs on cold
caches; such overruns are counted apart (``cold_overruns``), and a keep-warm tick
(``AdmissionCore.warm``, run by ``mittd serve`` every ``server.keep_warm_ms / 2``)
runs one untimed dummy prediction on an idle device that changes nothing but
``warm_ticks``. Mechanism only: no timing is asserted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from mittd.daemon import fastpath as fp
from mittd.daemon.admission import AdmissionCore
from mittd.daemon.config import ConfigError, parse_config
from mittd.daemon.devices import build_state, read_bundle
from mittd.daemon.embedded import OP_READ, OP_WRITE, Embedded, EmbeddedError
from mittd.daemon.serve import Daemon
from mittd.predictor.shipped import shipped_bundle


def core(fuse: bool, budget_us: float = 1e9, name: str = "heimdall") -> AdmissionCore:
    b = read_bundle(shipped_bundle(name))
    return AdmissionCore({"d": build_state(b, "csr", decision_threshold=0.5)},
                         predict_budget_us=budget_us, probe_after=4, fuse=fuse)


def replay(c: AdmissionCore, warm: bool, n: int = 300) -> list:
    rng = np.random.default_rng(3)
    st = c.state("d")
    th = st.thresholds_us
    out, pending, now = [], [], 1_000
    for i in range(n):
        if warm:
            assert c.warm("d")  # idle_us 0: always ticks
        now += int(rng.integers(0, 300))
        dl = [0, th[0] * 0.5, th[-1], 1e12][int(rng.integers(0, 4))]
        op = OP_READ if rng.random() < 0.7 else OP_WRITE
        d = c.admit("d", op, int(rng.integers(0, 1 << 20)) * 4096, 4096, dl, i, now)
        out.append((d.admit, round(d.p_slow, 6) if d.p_slow == d.p_slow else None,
                    d.threshold_index, d.reason))
        if d.admit:
            pending.append(i)
        if warm:
            c.warm("d")
        while pending and rng.random() < 0.5:
            rid = pending.pop(int(rng.integers(0, len(pending))))
            out.append(("c", c.complete("d", rid, float(rng.lognormal(5, 1)), now + 1)))
    s = st.stats().as_dict()
    for k in ("predict_ns", "warm_ticks"):
        s.pop(k)
    rows = st.ring.last(n, shas=False).cols
    out.append(("stats", s, sorted(st.tracker.pending_ids()),
                st.tracker.recent_completions(8).round(3).tolist(),
                {k: np.asarray(v).tobytes() for k, v in rows.items()}))  # NaN == NaN
    return out


@pytest.mark.parametrize("fuse", [True, False])
def test_a_warm_tick_changes_no_decision_tracker_counter_or_record(fuse: bool) -> None:
    a, b = core(fuse), core(fuse)
    assert replay(a, False) == replay(b, True)
    assert a.stats()["d"].warm_ticks == 1  # the first decision ever: warmed up
    assert b.stats()["d"].warm_ticks >= 301


def test_ticks_only_when_idle() -> None:
    c = core(True)
    assert c.warm("d", 10**9)  # never decided: idle since ever
    assert not c.warm("d", 10**9)  # just warmed
    now = fp.monotonic_ns() // 1000
    c.admit("d", OP_READ, 0, 4096, 0, 1, now)  # a decision now: busy
    c2 = core(True)
    c2.admit("d", OP_READ, 0, 4096, 0, 1, fp.monotonic_ns() // 1000)
    assert not c2.warm("d", 10**9)  # a device that decides needs no tick
    assert c2.warm("d", 0)
    # one tick each, and each first decision ever (an idle gap: never decided) warmed up
    assert (c.stats()["d"].warm_ticks, c2.stats()["d"].warm_ticks) == (2, 2)


@pytest.mark.parametrize("fuse", [True, False])
def test_cold_overruns_are_the_ones_after_an_idle_gap(fuse: bool) -> None:
    c = core(fuse, budget_us=1e-6)  # every prediction overruns
    gap = fp.COLD_GAP_US
    for rid, now in enumerate((1_000, 1_010, 1_010 + gap + 1, 1_020 + gap)):
        c.admit("d", OP_READ, 4096 * rid, 4096, 0, rid, now)
    s = c.stats()["d"]
    assert (s.overruns, s.cold_overruns) == (4, 2)  # the first ever and the one after the gap


def test_a_cold_burst_counts_each_predicted_io() -> None:
    c = core(False, budget_us=1e-6)
    n = 4
    dl = np.array([0.0, 0.0, 1e12, 0.0])  # one beyond the model: not predicted
    args = (np.zeros(n, np.int64), np.arange(n) * 4096, np.full(n, 4096), dl)
    c.admit_burst("d", *args, np.arange(n), 1_000)
    c.admit_burst("d", *args, np.arange(n) + 10, 1_001)  # right after: warm
    s = c.stats()["d"]
    assert (s.overruns, s.cold_overruns) == (6, 3)


def _gapped(c: AdmissionCore, gaps: list[int]) -> list:
    out, now = [], 1_000
    for rid, gap in enumerate(gaps):
        now += gap
        d = c.admit("d", OP_READ, 4096 * (7 * rid % 13), 4096, 0, rid, now)
        out.append((d.admit, round(d.p_slow, 6), d.reason))
        if d.admit and rid % 2:
            c.complete("d", rid, 90.0 + rid, now + 5)
    return out


def test_a_decision_after_an_idle_gap_is_warmed_up_first_and_decides_the_same() -> None:
    """The warm-up pass (``warm_ticks``) runs only after a gap over COLD_GAP_US, in the
    fused kernel and the Python path alike, and changes no decision."""
    gap = fp.COLD_GAP_US
    gaps = [gap + 1, 10, 20, gap + 5, 3, gap * 3, 1]  # the first ever counts as a gap too
    fused, python = core(True), core(False)
    assert _gapped(fused, gaps) == _gapped(python, gaps)
    for c in (fused, python):
        assert c.stats()["d"].warm_ticks == 3


def test_the_warm_up_is_not_charged_to_the_budget() -> None:
    """A clock that reads how many times the model ran: an IO after a gap runs it
    twice (the warm-up, then the timed pass), but only one run is on the budget's
    clock, so a budget of 1.5 runs holds: no overrun, judged."""
    c = core(False, budget_us=1.5)  # 1.5 runs x 1000 ns
    st = c.state("d")
    runs = [0]
    inner = st.engine.margin1, st.engine.run1

    def margin1() -> float:
        runs[0] += 1
        return inner[0]()

    def run1() -> np.ndarray:
        runs[0] += 1
        return inner[1]()

    st.engine.margin1, st.engine.run1 = margin1, run1
    c._clock = lambda: runs[0] * 1000
    for rid, now in enumerate((1_000, 1_000 + 2 * fp.COLD_GAP_US, 1_000 + 2 * fp.COLD_GAP_US + 9)):
        c.admit("d", OP_READ, 4096 * rid, 4096, 0, rid, now)
    s = c.stats()["d"]
    assert runs[0] == 5  # two cold decisions warmed up, the third right after: not
    assert (s.warm_ticks, s.overruns, s.cold_overruns) == (2, 0, 0)


def test_no_warm_up_when_the_gap_is_off_and_a_bad_gap_is_named() -> None:
    """The offline replayer's clock is the trace's: ``warm_up_gap_us=inf`` runs none."""
    import math

    b = read_bundle(shipped_bundle("heimdall"))
    for fuse in (True, False):
        c = AdmissionCore({"d": build_state(b, "csr", decision_threshold=0.5)},
                          predict_budget_us=1e9, fuse=fuse, warm_up_gap_us=math.inf)
        _gapped(c, [fp.COLD_GAP_US * 5] * 4)
        assert c.stats()["d"].warm_ticks == 0
    with pytest.raises(ValueError, match="warm_up_gap_us must be a number >= 0, got -1"):
        AdmissionCore({"d": build_state(b, "csr", decision_threshold=0.5)}, warm_up_gap_us=-1)


def test_embedded_warm() -> None:
    with Embedded.from_bundles({"a": shipped_bundle("heimdall")}, keep_warm_ms=0) as adm:
        assert adm._warmer is None
        assert adm.warm() == ["a"]
        assert adm.warm(idle_ms=60_000) == []
        assert adm.stats()["a"].warm_ticks == 1


def test_embedded_runs_the_keep_warm_thread_and_stops_it() -> None:
    """In-process admission gets the daemon's keep-warm (one KeepWarm), off at 0."""
    adm = Embedded.from_bundles({"a": shipped_bundle("heimdall")}, keep_warm_ms=10)
    try:
        end = time.monotonic() + 10
        while adm.stats()["a"].warm_ticks < 2 and time.monotonic() < end:
            time.sleep(0.01)
        assert adm.stats()["a"].warm_ticks >= 2
        warmer = adm._warmer
        assert warmer is not None and warmer.alive
    finally:
        adm.close()
    assert not warmer.alive and adm._warmer is None
    for bad in (-1, 1.5, True, 10**9):
        with pytest.raises(EmbeddedError, match="keep_warm_ms must be an int"):
            Embedded.from_bundles({"a": shipped_bundle("heimdall")}, keep_warm_ms=bad)


def _toml(tmp_path: Path, server: str) -> Path:
    dev = tmp_path / "d.img"
    dev.write_bytes(os.urandom(1 << 16))
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[server]\nunix_socket = "{tmp_path / "s.sock"}"\nmetrics = ""\n{server}\n'
                   f'[devices.d0]\npath = "{dev}"\nmodel = "{shipped_bundle("heimdall")}"\n'
                   'engine = "csr"\n')
    return cfg


def test_the_daemon_ticks_while_idle(tmp_path: Path) -> None:
    d = Daemon(_toml(tmp_path, "keep_warm_ms = 10"))
    d.start_keep_warm()
    try:
        end = time.monotonic() + 10
        while d.core.stats()["d0"].warm_ticks < 2 and time.monotonic() < end:
            time.sleep(0.01)
        assert d.core.stats()["d0"].warm_ticks >= 2
    finally:
        d._stop.set()
        assert d._warmer is not None
        d._warmer.stop()
    assert not d._warmer.alive
    s = d.core.stats()["d0"]
    assert (s.admitted, s.rejected, s.pending, s.predict_ns.count) == (0, 0, 0, 0)


def test_keep_warm_off_and_bounds(tmp_path: Path) -> None:
    d = Daemon(_toml(tmp_path, "keep_warm_ms = 0"))
    d.start_keep_warm()
    assert d._warmer is None
    assert Daemon(_toml(tmp_path, "")).config.server.keep_warm_ms == 0  # off by default
    with pytest.raises(ConfigError, match=r"server.keep_warm_ms: -1 is out of range"):
        parse_config({"server": {"keep_warm_ms": -1}, "devices": {}}, tmp_path / "x.toml")
