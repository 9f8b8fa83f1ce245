"""Issue 15: a deadline below every trained latency threshold.

Admit means "predicted to meet the deadline"; no head can promise a deadline
tighter than the one it was trained for, so with ``below_model = "reject"`` (the
default) such an IO is EBUSY at once, the model not asked (reason
``deadline-below-model``, counted in ``below_model`` and ``rejected``, feeding
neither the probe run nor the reject share). ``"judge"`` keeps the ladder rule
(the lowest head judges). The fused kernel, the Python path and bursts agree.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mittd.daemon import fastpath as fp
from mittd.daemon.admission import AdmissionCore
from mittd.daemon.config import ConfigError, parse_config
from mittd.daemon.devices import DeviceError, build_state, read_bundle
from mittd.daemon.embedded import OP_READ, Embedded, EmbeddedError
from mittd.predictor.shipped import shipped_bundle

BUNDLE = "heimdall"


def core(fuse: bool, below: str = "reject", p: float = 0.0, **kw) -> AdmissionCore:  # type: ignore[no-untyped-def]
    """p = 0: every asked IO is predicted slow, so a below-model IO judged by the
    model would be a predicted rejection (and move the probe run and the share)."""
    b = read_bundle(shipped_bundle(BUNDLE))
    st = build_state(b, "csr", decision_threshold=p, max_reject_share=1.0, below_model=below,
                     **kw)
    return AdmissionCore({"d": st}, predict_budget_us=1e9, probe_after=3, fuse=fuse)


def t0(c: AdmissionCore) -> float:
    return c.state("d").thresholds_us[0]


@pytest.mark.parametrize("fuse", [True, False])
def test_below_the_model_is_ebusy_unasked(fuse: bool) -> None:
    c = core(fuse)
    st = c.state("d")
    for i, dl in enumerate((1.0, t0(c) * 0.5, math.floor(t0(c)) - 1e-3)):
        d = c.admit("d", OP_READ, 4096 * i, 4096, dl, i + 1, 1_000 + i)
        assert (d.admit, d.threshold_index, d.reason, d.fail_open) == (
            False, None, "deadline-below-model", False)
        assert math.isnan(d.p_slow)
    s = c.stats()["d"]
    assert (s.below_model, s.rejected, s.admitted, s.probes, s.pending) == (3, 3, 0, 0, 0)
    assert st.reject_run == 0 and st.reject_share == 0.0  # the model was not asked
    assert s.predict_ns.count == 0
    # at the lowest threshold itself the model judges (p = 0: predicted slow)
    d = c.admit("d", OP_READ, 0, 4096, t0(c), 10, 2_000)
    assert (d.admit, d.threshold_index, d.reason) == (False, 0, "predicted")
    assert st.reject_run == 1
    # deadline 0 is the device default (the lowest threshold here): judged, not below
    assert c.admit("d", OP_READ, 0, 4096, 0, 11, 2_001).reason == "predicted"
    # deadlines are whole µs: the threshold's whole µs (188 for 188.41) is judged by it
    assert t0(c) != math.floor(t0(c))
    d = c.admit("d", OP_READ, 0, 4096, math.floor(t0(c)), 12, 2_002)
    assert (d.threshold_index, d.reason) == (0, "predicted")


@pytest.mark.parametrize("fuse", [True, False])
def test_judge_asks_the_lowest_head(fuse: bool) -> None:
    c = core(fuse, "judge")
    d = c.admit("d", OP_READ, 0, 4096, 1.0, 1, 1_000)
    assert (d.admit, d.threshold_index, d.reason) == (False, 0, "predicted")
    assert c.stats()["d"].below_model == 0


def test_in_process_fast_path_answers_ebusy() -> None:
    c = core(True, p=1.0)  # p = 1: the model admits all it is asked
    assert c.admit_next("d", OP_READ, 0, 4096, 1.0) == 0
    assert c.admit_next("d", OP_READ, 0, 4096, t0(c)) > 0
    s = c.stats()["d"]
    assert (s.below_model, s.rejected, s.admitted, s.pending) == (1, 1, 1, 1)


@pytest.mark.parametrize("fuse", [True, False])
def test_shadow_mode_makes_it_a_shadow_reject(fuse: bool) -> None:
    c = core(fuse, mode="shadow", p=1.0)
    d = c.admit("d", OP_READ, 0, 4096, 1.0, 1, 1_000)
    assert (d.admit, d.reason) == (True, "shadow")
    s = c.stats()["d"]
    assert (s.shadow_rejects, s.admitted, s.rejected, s.below_model, s.pending) == (
        1, 1, 0, 0, 1)


def test_bursts_agree_with_one_by_one() -> None:
    one, burst = core(False, p=0.5), core(False, p=0.5)
    th = t0(one)
    dl = np.array([1.0, 0.0, th * 0.9, th, 1e12, th * 0.1])
    n = len(dl)
    ids = np.arange(1, n + 1)
    offs = np.arange(n) * 4096
    d = burst.admit_burst("d", np.zeros(n, np.int64), offs, np.full(n, 4096), dl, ids, 5_000)
    reasons = [fp.REASONS[r] for r in d.reason]
    assert reasons[0] == reasons[2] == reasons[5] == "deadline-below-model"
    assert not d.admit[[0, 2, 5]].any() and (d.threshold_index[[0, 2, 5]] == -1).all()
    assert np.isnan(d.p_slow[[0, 2, 5]]).all()
    sb = burst.stats()["d"]
    assert sb.below_model == 3 and sb.rejected >= 3 and sb.pending == int(d.admit.sum())
    for j in range(n):
        x = one.admit("d", 0, int(offs[j]), 4096, float(dl[j]), int(ids[j]), 5_000)
        if fp.REASONS[d.reason[j]] != "predicted":  # predictions differ within a burst
            assert (x.admit, x.reason) == (bool(d.admit[j]), fp.REASONS[d.reason[j]])
    so = one.stats()["d"]
    assert (so.below_model, so.beyond_model) == (sb.below_model, sb.beyond_model)


def test_a_fault_in_a_burst_still_rejects_below_the_model(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    c = core(False)
    st = c.state("d")

    def boom(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    monkeypatch.setattr(st.engine, "logits", boom)
    d = c.admit_burst("d", np.zeros(2, np.int64), np.array([0, 4096]), np.full(2, 4096),
                      np.array([1.0, t0(c)]), np.array([1, 2]), 1_000)
    assert d.admit.tolist() == [False, True] and d.fail_open.tolist() == [False, True]
    assert c.stats()["d"].fail_open == 1 and c.stats()["d"].below_model == 1


def _config(tmp_path: Path, **dev: object) -> dict:
    (tmp_path / "d.img").write_bytes(b"\0" * 8192)
    model = shipped_bundle(BUNDLE)
    return {"server": {"unix_socket": str(tmp_path / "s.sock")},
            "devices": {"d0": {"path": str(tmp_path / "d.img"), "model": str(model), **dev}}}


def test_config_key(tmp_path: Path) -> None:
    cfg = parse_config(_config(tmp_path), tmp_path / "m.toml")
    assert cfg.devices["d0"].below_model == "reject"
    assert cfg.to_dict()["devices"]["d0"]["below_model"] == "reject"
    cfg = parse_config(_config(tmp_path, below_model="judge"), tmp_path / "m.toml")
    assert cfg.devices["d0"].below_model == "judge"
    with pytest.raises(ConfigError) as ei:
        parse_config(_config(tmp_path, below_model="admit"), tmp_path / "m.toml")
    assert str(ei.value) == (f"{tmp_path / 'm.toml'}: devices.d0.below_model: 'admit' is not "
                             "one of reject, judge")


def test_a_default_deadline_below_the_model_is_refused() -> None:
    """``slo_us`` below every threshold would make every IO without a deadline EBUSY:
    refused where servability is decided (serve, HUP, ``mittd check``), unless judged."""
    b = read_bundle(shipped_bundle(BUNDLE))
    low = b.latency_thresholds_us()[0] / 2
    with pytest.raises(DeviceError, match=r"slo_us .* below_model = \"judge\""):
        build_state(b, "csr", slo_us=low)
    assert build_state(b, "csr", slo_us=low, below_model="judge").default_deadline_us == low


def test_embedded_accepts_it() -> None:
    with Embedded.from_bundles({"a": shipped_bundle(BUNDLE)}, below_model="judge") as adm:
        assert adm.decide("a", OP_READ, 0, 4096, 1.0)[1].threshold_index == 0
    with Embedded.from_bundles({"a": shipped_bundle(BUNDLE)}) as adm:
        assert adm.decide("a", OP_READ, 0, 4096, 1.0)[1].reason == "deadline-below-model"
    with pytest.raises(EmbeddedError, match="below_model must be one of reject, judge"):
        Embedded.from_bundles({"a": shipped_bundle(BUNDLE)}, below_model="maybe")
