"""The in-process path: ``Embedded`` and the fused kernel behind it.

The fused kernel must decide exactly as the Python path of the same core (the
reference sequence of expire, featurise, run, rules, issue): the same IOs, fed
with the same ids and times to two cores, get the same decisions, P(slow),
reasons, counters and tracker state, for every shipped model and through the
rules (cap, probes, beyond the model). Then the embedding itself: tickets,
EBUSY, thread safety, hot reload that keeps the old model on a bad bundle,
metrics in the host's registry, bad input named in one line.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mittd.daemon import fastpath
from mittd.daemon.admission import AdmissionCore, UnknownDevice
from mittd.daemon.devices import build_state, read_bundle
from mittd.daemon.embedded import OP_READ, OP_WRITE, Embedded, EmbeddedError
from mittd.predictor.bundle import save_bundle
from mittd.predictor.shipped import SHIPPED_BUNDLES, shipped_bundle
from mittd.predictor.synthetic import synthetic_bundle
from mittd.proto import MAX_DEADLINE_US
from tests.daemon.test_devices import edit_manifest, thresholds


def _cores(name: str, p: float, probe_after: int = 0, max_share: float | None = None,
           below_model: str = "reject") -> tuple[AdmissionCore, AdmissionCore]:
    b = read_bundle(shipped_bundle(name))
    make = lambda fuse: AdmissionCore(  # noqa: E731
        {"d": build_state(b, "csr", decision_threshold=p, max_reject_share=max_share,
                          below_model=below_model)},
        predict_budget_us=1e9, probe_after=probe_after, fuse=fuse)
    fused, python = make(True), make(False)
    assert fused.state("d").admit_args is not None
    return fused, python


def _replay(core: AdmissionCore, seed: int, n: int = 600) -> list[tuple]:
    """A seeded mix of reads and writes, deadlines (default, below, in, beyond the model),
    completions out of order and a few that never come (expired by the tracker)."""
    rng = np.random.default_rng(seed)
    st = core.state("d")
    th = st.thresholds_us
    out, pending = [], []
    now = 1_000
    for i in range(n):
        now += int(rng.integers(0, 400)) + (2_000_000 if i % 50 == 0 else 0)  # expiries too
        dl = [0, th[0] * 0.5, th[-1], MAX_DEADLINE_US][int(rng.integers(0, 4))]
        op = OP_READ if rng.random() < 0.7 else OP_WRITE
        off = int(rng.integers(0, 1 << 30)) * 4096
        d = core.admit("d", op, off, 4096 << int(rng.integers(0, 4)), dl, i, now)
        out.append((d.admit, None if math.isnan(d.p_slow) else round(d.p_slow, 5),
                    d.threshold_index, d.reason))
        if d.admit:
            pending.append(i)
        while pending and rng.random() < 0.55:
            rid = pending.pop(int(rng.integers(0, len(pending))))
            if rng.random() < 0.9:  # the rest never complete
                lat = float(rng.lognormal(5, 1))
                out.append(("c", core.complete("d", rid, lat, now + 1)))
    s = st.stats()
    out.append(("counts", {k: v for k, v in s.as_dict().items()
                           if k not in ("predict_ns", "model_version", "model_sha256")}))
    out.append(("hist", st.tracker.recent_completions(8).round(3).tolist()))
    return out


@pytest.mark.parametrize("name", sorted(SHIPPED_BUNDLES))
def test_fused_decides_as_the_python_path(name: str) -> None:
    for p, probe, share in ((0.5, 0, None), (0.3, 3, 1.0), (0.05, 0, 0.2)):
        fused, python = _cores(name, p, probe, share)
        a, b = _replay(fused, 7), _replay(python, 7)
        assert a == b, (name, p)
    counts = a[-2][1]
    assert counts["admitted"] > 0 and counts["beyond_model"] > 0
    assert counts["below_model"] > 0 and counts["rejected"] >= counts["below_model"]
    assert counts["tracker"]["expired"] > 0
    fused, python = _cores(name, 0.5, below_model="judge")  # the lowest head judges
    a, b = _replay(fused, 7), _replay(python, 7)
    assert a == b, (name, "judge")
    assert a[-2][1]["below_model"] == 0


def test_fused_path_rejects_and_caps() -> None:
    fused, python = _cores("heimdall", 0.0, 0, 0.3)  # P(slow) > 0: reject all, cap at 30 %
    a, b = _replay(fused, 3, 1500), _replay(python, 3, 1500)
    assert a == b
    counts = a[-2][1]
    assert counts["rejected"] > 0 and counts["capped"] > 0


def test_the_kernel_clock_is_perf_counter() -> None:
    t0 = time.perf_counter_ns()
    k = fastpath.monotonic_ns()
    t1 = time.perf_counter_ns()
    assert t0 <= k <= t1


# -- Embedded ----------------------------------------------------------------------------

def test_tickets_complete_and_ebusy() -> None:
    with Embedded.from_bundles({"a": shipped_bundle("heimdall")}) as adm:
        t = adm.admit("a", OP_READ, 4096, 4096, 0)
        assert t > 0 and adm.stats()["a"].pending == 1
        assert adm.complete("a", t, 80.0)
        assert not adm.complete("a", t, 80.0)  # once
        assert adm.stats()["a"].pending == 0 and adm.stats()["a"].completions == 1
        t2, d = adm.decide("a", OP_READ, 0, 4096)
        assert t2 > t and d.admit and d.reason == "predicted" and 0 <= d.p_slow <= 1
        assert adm.admit("a", OP_READ, 0, 4096, MAX_DEADLINE_US) > 0  # beyond: not judged
        assert adm.stats()["a"].beyond_model == 1
    with Embedded.from_bundles({"a": shipped_bundle("heimdall")}, decision_threshold=0.0,
                               max_reject_share=1.0, probe_after=0) as adm:
        assert adm.admit("a", OP_READ, 0, 4096, 0) == 0  # EBUSY
        assert adm.stats()["a"].pending == 0 and adm.stats()["a"].rejected == 1


def test_overrun_admits_late_rejections() -> None:
    with Embedded.from_bundles({"a": shipped_bundle("heimdall")}, decision_threshold=0.0,
                               max_reject_share=1.0, predict_budget_us=1e-6) as adm:
        assert all(adm.admit("a", OP_READ, i * 4096, 4096, 0) for i in range(20))
        s = adm.stats()["a"]
        assert s.overruns == 20 and s.rejected == 0 and s.predict_ns.count == 20


def test_hedge_policy_never_rejects(tmp_path: Path) -> None:
    b = tmp_path / "h.mittd"
    shutil.copy(shipped_bundle("heimdall"), b)
    edit_manifest(b, lambda m: m.update(policy={"mode": "hedge", "hedge_after_us": 300.0}))
    with Embedded.from_bundles({"a": b}) as adm:
        assert adm.policy("a").mode == "hedge" and adm.policy("a").hedge_after_us == 300.0
        assert all(adm.admit("a", OP_READ, i * 4096, 4096, 1) for i in range(50))


def test_threads_share_a_device_safely() -> None:
    adm = Embedded.from_bundles({"a": shipped_bundle("heimdall"),
                                 "b": shipped_bundle("linnos")}, decision_threshold=0.4)
    per = 2000
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            dev = "ab"[k % 2]
            for i in range(per):
                t = adm.admit(dev, OP_READ, (k * per + i) * 4096, 4096, 0)
                if t:
                    assert adm.complete(dev, t, 50.0 + i % 300)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for dev in "ab":
        s = adm.stats()[dev]
        assert s.admitted + s.rejected == 2 * per
        assert s.pending == 0 and s.completions == s.admitted


def test_hot_reload_keeps_the_old_model_on_a_bad_bundle(tmp_path: Path) -> None:
    live = tmp_path / "live.mittd"
    shutil.copy(shipped_bundle("heimdall"), live)
    adm = Embedded.from_bundles({"a": live})
    v0 = adm.model_version("a")
    t = adm.admit("a", OP_READ, 0, 4096, 0)
    assert adm.reload() == {}  # nothing changed
    live.write_bytes(b"not a bundle")
    r = adm.reload()
    assert r["a"].startswith("refused") and adm.model_version("a") == v0
    assert adm.admit("a", OP_READ, 0, 4096, 0) > 0  # still serving the old model
    assert adm.reload() == {}  # the same bad file is not retried
    save_bundle(synthetic_bundle("heimdall", 0.9, "node", seed=3), tmp_path / "new.mittd")
    os.replace(tmp_path / "new.mittd", live)
    adm.watch(0.05)
    deadline = time.monotonic() + 20
    while adm.model_version("a") == v0 and time.monotonic() < deadline:
        time.sleep(0.05)
    adm.close()
    assert adm.model_version("a") != v0
    assert adm.reload_counts()["a"]["refused"] == 1 and adm.reload_counts()["a"]["reloaded"] == 1
    assert adm.complete("a", t, 90.0) in (True, False)  # a ticket of the old model: no error
    reg = adm.register_metrics(CollectorRegistry())
    text = generate_latest(reg).decode()
    assert 'mittd_reloads_total{device="a",result="refused"} 1.0' in text
    assert 'mittd_decisions_total{device="a",outcome="admit"}' in text


def test_from_config_runs_the_servability_check(tmp_path: Path) -> None:
    from tests.daemon.test_devices import write_config

    model = tmp_path / "m.mittd"
    shutil.copy(shipped_bundle("precise_linear_node95"), model)
    cfg = write_config(tmp_path, model)
    adm = Embedded.from_config(cfg)
    assert adm.devices == ("d0",) and adm.device_path("d0") == tmp_path / "disk.img"
    assert adm.admit("d0", OP_READ, 0, 4096) > 0
    bad = write_config(tmp_path, model, server="max_pending_per_device = 8")
    with pytest.raises(EmbeddedError, match="max_pending_per_device = 8"):
        Embedded.from_config(bad)
    edit_manifest(model, thresholds(p_slow=[1.5]))
    with pytest.raises(EmbeddedError, match=r"devices\.d0.*thresholds\.p_slow\[0\]"):
        Embedded.from_config(write_config(tmp_path, model))


@pytest.mark.parametrize("call, match", [
    (lambda a: a.admit("nope", OP_READ, 0, 4096), "nope"),
    (lambda a: a.admit("a", OP_READ, -1, 4096), "offset must be an int >= 0"),
    (lambda a: a.admit("a", OP_READ, "x", 4096), "offset must be an int >= 0"),
    (lambda a: a.admit("a", OP_READ, 1 << 70, 4096), "offset"),
    (lambda a: a.admit("a", OP_READ, 0, 0), "length must be an int > 0"),
    (lambda a: a.admit("a", 7, 0, 4096), "op must be an op code"),
    (lambda a: a.admit("a", OP_READ, 0, 4096, math.nan), "NaN"),
    (lambda a: a.admit("a", OP_READ, 0, 4096, "soon"), "deadline_us must be a number"),
    (lambda a: a.complete("a", a.admit("a", OP_READ, 0, 4096), "slow"), "latency_us"),
])
def test_bad_input_is_one_named_error(call, match) -> None:
    adm = Embedded.from_bundles({"a": shipped_bundle("heimdall")})
    with pytest.raises((ValueError, UnknownDevice), match=match):
        call(adm)
    s = adm.stats()["a"]
    assert s.pending == s.admitted - s.completions  # nothing half-done


@pytest.mark.parametrize("kw, match", [
    ({"bundles": {}}, "at least one"),
    ({"bundles": {"a b": "x"}}, "alias"),
    ({"bundles": {"a": "/nonexistent.mittd"}}, "no such bundle"),
    ({"probe_after": -1}, "probe_after"),
    ({"predict_budget_us": 0}, "predict_budget_us"),
    ({"engine": "fast"}, "engine fast"),
    ({"paths": {"zz": "/dev/null"}}, "paths"),
])
def test_from_bundles_names_the_bad_setting(kw, match) -> None:
    args = {"bundles": {"a": shipped_bundle("heimdall")}, **kw}
    with pytest.raises(EmbeddedError, match=match):
        Embedded.from_bundles(**args)


def test_an_out_of_range_io_on_the_general_path_is_decided_as_unfused() -> None:
    """The kernel refuses a negative offset (``BAD_RANGE``) without touching the
    tracker; the daemon's ``admit`` then decides it on the Python path, as an
    unfused core does, and the id -> slot map stays whole."""
    fused, python = _cores("heimdall", 0.5)
    for core in (fused, python):
        core.admit("d", OP_READ, 4096, 4096, 0, 1, 1_000)
        d = core.admit("d", OP_READ, -4096, 4096, 0, 2, 1_010)
        assert d.admit
        assert sorted(core.state("d").tracker.pending_ids()) == [1, 2]
        assert core.complete("d", 1, 50.0, 1_100) and core.complete("d", 2, 50.0, 1_100)
    assert fused.stats()["d"].completions == python.stats()["d"].completions == 2
