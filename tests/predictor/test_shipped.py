"""The trained bundles shipped as package data load and run on the auto engine."""

from __future__ import annotations

import numpy as np
import pytest

from mittd.predictor.bundle import load_bundle
from mittd.predictor.engines import make_engine
from mittd.predictor.features import make_featuriser
from mittd.predictor.graph import decision_margin, forward
from mittd.predictor.shipped import BUNDLES_DIR, SHIPPED_BUNDLES, shipped_bundle
from mittd.traces.schema import read_trace
from mittd.traces.shipped import shipped_trace

SAMPLE = shipped_trace()


@pytest.fixture(scope="module")
def sample():  # type: ignore[no-untyped-def]
    return read_trace(SAMPLE).slice(100_000, 2_000)


def test_every_bundle_file_is_listed_and_small() -> None:
    files = {p.stem for p in BUNDLES_DIR.glob("*.mittd")}
    assert files == set(SHIPPED_BUNDLES)
    for name in SHIPPED_BUNDLES:
        assert shipped_bundle(name).stat().st_size < 2 << 20
    readme = (BUNDLES_DIR / "README.md").read_text()
    assert all(f"{name}.mittd" in readme for name in SHIPPED_BUNDLES)


@pytest.mark.parametrize("name", list(SHIPPED_BUNDLES))
def test_shipped_bundle_loads_and_runs_on_auto_engine(name: str, sample) -> None:  # type: ignore[no-untyped-def]
    b = load_bundle(shipped_bundle(name))
    assert b.graph.name == name.removesuffix("_node95")
    assert b.latency_thresholds_us() and b.provenance["test_metrics"]["roc_auc"] > 0.85
    feat = make_featuriser(b.featuriser)
    x = feat.encode_trace(sample)
    engine = make_engine("auto", b.graph, b.params, sample=x[:64])
    got = engine.logits(x)
    ref = forward(b.graph, b.params, x)
    assert np.allclose(got, ref, rtol=1e-5, atol=1e-5)
    engine.input[:] = x[0]  # the daemon's batch-1 path
    assert engine.margin1() == pytest.approx(float(decision_margin(b.graph, ref[:1])[0]),
                                             rel=1e-5, abs=1e-5)


def test_unknown_name_is_refused() -> None:
    assert shipped_bundle("heimdall.mittd") == shipped_bundle("heimdall")
    with pytest.raises(ValueError, match="shipped: precise_linear_node95"):
        shipped_bundle("nope")
