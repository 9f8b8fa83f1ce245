"""The live-quality and shadow-mode metrics of ``CoreCollector``, on a real core.

The core of ``test_status`` (a bundle claiming validation ROC-AUC 0.95; device
"shadow" in shadow mode and fed so that its live quality is known; "disk"
idle), driven in process, scraped through a registry as Prometheus would.
"""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mittd.daemon.admission import AdmissionCore
from mittd.daemon.metrics import QUALITY_GAUGES, CoreCollector
from mittd.daemon.quality import LiveQuality
from tests.daemon.test_status import (
    N_IOS,
    N_SLOW,
    VALIDATION_AUC,
    feed_shadow,
    make_config,
    make_core,
)


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> AdmissionCore:
    c = make_core(make_config(tmp_path_factory.mktemp("metrics")))
    clock = iter(range(1_000, 10**9, 1_000))

    def admit(rid: int, offset: int) -> float:
        d = c.admit("shadow", 0, offset, 4096, 0.0, rid, next(clock))
        assert d.admit
        return d.p_slow

    def complete(rid: int, latency_us: float) -> None:
        assert c.complete("shadow", rid, latency_us, next(clock))

    feed_shadow(admit, complete)
    return c


def scrape(collector: CoreCollector) -> dict[str, dict[str, float]]:
    """``{sample name: {device: value}}`` of one scrape, through the text format."""
    reg = CollectorRegistry()
    reg.register(collector)
    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            if set(s.labels) == {"device"}:
                out.setdefault(s.name, {})[s.labels["device"]] = s.value
    return out


def test_quality_gauges_carry_the_live_quality(core: AdmissionCore) -> None:
    m = scrape(CoreCollector(core.stats, quality=core.quality))
    q = core.quality("shadow")
    assert q.drift and q.labelled == N_IOS  # the fixture's premise
    assert m["mittd_live_roc_auc"]["shadow"] == pytest.approx(q.roc_auc)
    assert m["mittd_live_precision"]["shadow"] == pytest.approx(N_SLOW / N_IOS)
    assert m["mittd_live_recall"]["shadow"] == 1.0
    assert m["mittd_would_reject_share"]["shadow"] == 1.0
    assert m["mittd_live_labelled_ios"] == {"disk": 0.0, "shadow": float(N_IOS)}
    assert m["mittd_validation_roc_auc"] == {"disk": VALIDATION_AUC, "shadow": VALIDATION_AUC}
    assert m["mittd_model_drift"] == {"disk": 0.0, "shadow": 1.0}
    assert m["mittd_shadow_mode"] == {"disk": 0.0, "shadow": 1.0}
    assert m["mittd_shadow_rejects_total"] == {"disk": 0.0, "shadow": float(N_IOS)}
    st = core.stats()
    for name in ("records_written", "records_dropped"):
        assert m[f"mittd_{name}_total"] == {d: float(getattr(s, name)) for d, s in st.items()}


def test_shadow_admissions_are_admit_decisions(core: AdmissionCore) -> None:
    reg = CollectorRegistry()
    reg.register(CoreCollector(core.stats, quality=core.quality))
    text = generate_latest(reg).decode()
    assert f'mittd_decisions_total{{device="shadow",outcome="admit"}} {float(N_IOS)}' in text
    assert 'mittd_decisions_total{device="shadow",outcome="ebusy"} 0.0' in text


def test_undefined_quality_is_left_out_not_nan(core: AdmissionCore) -> None:
    m = scrape(CoreCollector(core.stats, quality=core.quality))
    for name in ("mittd_live_roc_auc", "mittd_live_precision", "mittd_live_recall",
                 "mittd_would_reject_share"):
        assert "disk" not in m[name], name  # the idle device: no sample at all
        assert "shadow" in m[name], name
    assert not any(math.isnan(v) for vals in m.values() for v in vals.values())


def test_without_a_quality_callable_there_are_no_quality_gauges(core: AdmissionCore) -> None:
    m = scrape(CoreCollector(core.stats))
    for name, _, _ in QUALITY_GAUGES:
        assert name not in m, name
    assert "mittd_model_drift" not in m
    # mode and the shadow/record counters come from stats, so they stay
    assert m["mittd_shadow_mode"] == {"disk": 0.0, "shadow": 1.0}
    assert m["mittd_shadow_rejects_total"]["shadow"] == float(N_IOS)
    assert "mittd_records_written_total" in m and "mittd_records_dropped_total" in m


def test_a_failing_quality_spoils_only_its_device(core: AdmissionCore,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    def quality(dev: str) -> LiveQuality:
        if dev == "disk":
            raise RuntimeError("boom")
        return core.quality(dev)

    m = scrape(CoreCollector(core.stats, quality=quality))
    assert m["mittd_live_labelled_ios"] == {"shadow": float(N_IOS)}
    assert m["mittd_model_drift"] == {"shadow": 1.0}
    assert m["mittd_shadow_mode"] == {"disk": 0.0, "shadow": 1.0}  # the rest is intact
    assert "live quality of device 'disk' failed" in caplog.text


def test_metric_names_follow_the_conventions(core: AdmissionCore) -> None:
    reg = CollectorRegistry()
    reg.register(CoreCollector(core.stats, quality=core.quality))
    text = generate_latest(reg).decode()
    for name in ("mittd_live_roc_auc", "mittd_live_precision", "mittd_live_recall",
                 "mittd_would_reject_share", "mittd_live_labelled_ios",
                 "mittd_validation_roc_auc", "mittd_model_drift", "mittd_shadow_mode"):
        assert f"# TYPE {name} gauge" in text, name
    for name in ("mittd_shadow_rejects", "mittd_records_written", "mittd_records_dropped"):
        assert f"# TYPE {name}_total counter" in text, name
        assert f'{name}_total{{device="shadow"}}' in text, name


def test_serve_metrics_passes_the_quality_callable(core: AdmissionCore,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import mittd.daemon.metrics as metrics

    started: list[tuple[int, str]] = []
    monkeypatch.setattr(metrics, "start_http_server",
                        lambda port, addr, registry: started.append((port, addr)))
    reg = metrics.serve_metrics(core.stats, "127.0.0.1", 9464, quality=core.quality)
    assert started == [(9464, "127.0.0.1")]
    text = generate_latest(reg).decode()
    assert 'mittd_model_drift{device="shadow"} 1.0' in text
    plain = generate_latest(metrics.serve_metrics(core.stats, "127.0.0.1", 9465)).decode()
    assert "mittd_model_drift" not in plain and 'mittd_shadow_mode{device="shadow"} 1.0' in plain


def test_decision_outcomes_partition_the_decisions_and_fail_opens_are_not_admits() -> None:
    """Issue 15: a fail-open reply was exported as outcome="admit" too."""
    from tests.daemon.test_rules import cores, workload

    w = workload(300, seed=4)
    core, _, clock, _ = cores(w, probe_after=3)
    for i in range(len(w["lba"])):
        clock.overrun_next(bool(w["overrun"][i]))
        core.admit("d", 0, int(w["lba"][i]) * 4096, 4096, float(w["deadline"][i]), i + 1,
                   10 * i)
    s = core.stats()["d"]
    assert s.fail_open > 0 and s.beyond_model > 0 and s.rejected > 0
    reg = CollectorRegistry()
    reg.register(CoreCollector(core.stats))
    got = {o: reg.get_sample_value("mittd_decisions_total", {"device": "d", "outcome": o})
           for o in ("admit", "ebusy", "fail_open", "beyond_model")}
    assert got["fail_open"] == s.fail_open and got["beyond_model"] == s.beyond_model
    assert got["admit"] == s.admitted - s.fail_open - s.beyond_model
    assert sum(got.values()) == 300  # every decision once


@pytest.mark.parametrize("fuse", [True, False])
def test_a_late_slow_verdict_admitted_unjudged_is_a_fail_open(fuse: bool) -> None:
    """Issue 15: with fail_open_on_overrun a would-be EBUSY that overran the budget
    replies fail_open, and was exported as outcome="admit"; it is a fail-open."""
    from mittd.daemon.devices import build_state
    from mittd.predictor.bundle import load_bundle
    from mittd.predictor.shipped import shipped_bundle

    st = build_state(load_bundle(shipped_bundle("heimdall")), "csr",
                     decision_threshold=1e-4, max_reject_share=1.0)  # every IO "slow"
    core = AdmissionCore({"d": st}, predict_budget_us=1e-3, probe_after=0, fuse=fuse)
    for i in range(10):  # every prediction overruns a 1 ns budget
        d = core.admit("d", 0, 4096 * i, 4096, 0.0, i + 1, 1_000 + i)
        assert (d.admit, d.reason, d.fail_open) == (True, "overrun", True)
    s = core.stats()["d"]
    assert (s.admitted, s.overruns, s.fail_open, s.rejected) == (10, 10, 10, 0)
    reg = CollectorRegistry()
    reg.register(CoreCollector(core.stats))
    got = {o: reg.get_sample_value("mittd_decisions_total", {"device": "d", "outcome": o})
           for o in ("admit", "ebusy", "fail_open", "beyond_model")}
    assert got == {"admit": 0, "ebusy": 0, "fail_open": 10, "beyond_model": 0}
