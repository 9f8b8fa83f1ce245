"""One servability check: ``mittd check``, ``mittd serve`` at start and a HUP reload
give the same verdict on the same bundle and config, because they run the same
code (``mittd.daemon.devices``); and the check itself names each problem."""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mittd.daemon.check import check_config
from mittd.daemon.config import ConfigError, load_config
from mittd.daemon.devices import DeviceError, Limits, build_state, servable
from mittd.daemon.serve import Daemon
from mittd.predictor.bundle import MANIFEST, load_bundle, manifest_sha256, save_bundle
from mittd.predictor.shipped import shipped_bundle
from mittd.predictor.synthetic import synthetic_bundle

Manifest = dict[str, Any]


def edit_manifest(path: Path, change: Callable[[Manifest], Any]) -> None:
    """Rewrite a bundle's manifest.json in place, resealed (the payload stays)."""
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    manifest = json.loads(members[MANIFEST])
    new = change(manifest)
    manifest = manifest if new is None else new
    if isinstance(manifest, dict) and "sha256" in manifest:  # reseal: the edit is on purpose
        manifest["sha256"] = manifest_sha256(manifest)
    members[MANIFEST] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def feat(**kw: Any) -> Callable[[Manifest], None]:
    return lambda m: m["featuriser"].update(kw)


def thresholds(**kw: Any) -> Callable[[Manifest], None]:
    return lambda m: m["thresholds"].update(kw)


def drop_bounds(m: Manifest) -> None:
    del m["featuriser"]["min"], m["featuriser"]["max"]


# (bundle source, manifest edit, extra [server] lines, extra device lines, servable?)
CASES: dict[str, tuple[str, Callable[[Manifest], Any] | None, str, str, bool]] = {
    "good": ("synthetic", None, "", "", True),
    "shipped": ("shipped", None, "", "", True),
    "shipped, max_pending_per_device = 8": ("shipped", None, "max_pending_per_device = 8",
                                            "", False),
    "pending_timeout_ms = 1": ("synthetic", None, "pending_timeout_ms = 1", "", False),
    "featuriser nosuch": ("synthetic", feat(name="nosuch"), "", "", False),
    "featuriser pending = -5": ("synthetic", feat(pending=-5), "", "", False),
    "featuriser pending = 'ten'": ("synthetic", feat(pending="ten"), "", "", False),
    "featuriser of other width": ("synthetic", feat(pending=2, dim=None), "", "", False),
    "unfitted heimdall": ("heimdall", drop_bounds, "", "", False),
    "latency_us = [-5]": ("synthetic", thresholds(latency_us=[-5]), "", "", False),
    "latency_us = [nan]": ("synthetic", thresholds(latency_us=[math.nan]), "", "", False),
    "latency_us = []": ("synthetic", thresholds(latency_us=[]), "", "", False),
    "latency_us = [], slo_us set": ("synthetic", thresholds(latency_us=[]), "", "slo_us = 300",
                                    False),
    # a default deadline below every trained threshold (500 µs) would make every IO
    # without a deadline EBUSY (below_model = "reject"): refused unless judged
    "slo_us = 300": ("synthetic", None, "", "slo_us = 300", False),
    "slo_us = 300, below_model judge": ("synthetic", None, "",
                                        'slo_us = 300\nbelow_model = "judge"', True),
    "slo_us = 600": ("synthetic", None, "", "slo_us = 600", True),
    "two thresholds, one head": ("synthetic", thresholds(latency_us=[100.0, 200.0]), "", "",
                                 False),
    "latency_us = 'fast'": ("synthetic", thresholds(latency_us="fast"), "", "", False),
    "p_slow = [1.5]": ("synthetic", thresholds(p_slow=[1.5]), "", "", False),
    "p_slow = [nan]": ("synthetic", thresholds(p_slow=[math.nan]), "", "", False),
    "p_slow = [1.5], config overrides": ("synthetic", thresholds(p_slow=[1.5]), "",
                                         "decision_threshold = 0.9", False),  # refused at load
    "p_slow = [1.0] (never reject)": ("synthetic", thresholds(p_slow=[1.0]), "", "", True),
    "manifest is [1, 2, 3]": ("synthetic", lambda m: [1, 2, 3], "", "", False),
    "garbage file": ("garbage", None, "", "", False),
}


def make_bundle(kind: str, path: Path) -> None:
    if kind == "garbage":
        path.write_bytes(b"not a bundle at all")
    elif kind == "shipped":
        path.write_bytes(shipped_bundle("precise_linear_node95").read_bytes())
    elif kind == "heimdall":
        path.write_bytes(shipped_bundle("heimdall").read_bytes())
    else:
        save_bundle(synthetic_bundle("precise_linear", 0.95, "node", seed=1), path)


def write_config(tmp: Path, model: Path, server: str = "", device: str = "") -> Path:
    dev = tmp / "disk.img"
    if not dev.exists():
        dev.write_bytes(b"\0" * 65536)
    cfg = tmp / "mittd.toml"
    cfg.write_text(f'[server]\nunix_socket = "{tmp / "s.sock"}"\nmetrics = ""\n'
                   f"predict_budget_us = 1000000\n{server}\n"
                   f'[devices.d0]\npath = "{dev}"\nmodel = "{model}"\nengine = "csr"\n'
                   f"{device}\n")
    return cfg


def apply(case: str, tmp: Path) -> tuple[Path, Path]:
    kind, edit, server, device, _ = CASES[case]
    model = tmp / "m.mittd"
    make_bundle(kind, model)
    if edit is not None:
        edit_manifest(model, edit)
    return model, write_config(tmp, model, server, device)


def check_verdict(cfg: Path) -> tuple[bool, list[str]]:
    (report,) = check_config(load_config(cfg))
    return report.ok, report.problems


@pytest.mark.parametrize("case", list(CASES))
def test_check_serve_and_hup_agree(case: str, tmp_path: Path) -> None:
    expected = CASES[case][-1]
    # check
    model, cfg = apply(case, tmp_path)
    ok, problems = check_verdict(cfg)
    assert ok is expected, problems
    assert all("\n" not in p for p in problems)
    # serve at start
    if expected:
        Daemon(cfg)
    else:
        with pytest.raises(ConfigError) as ei:
            Daemon(cfg)
        assert "\n" not in str(ei.value) and str(ei.value).startswith("devices.d0: ")
    # HUP: a daemon serving a good bundle reloads into the case
    good = tmp_path / "good"
    good.mkdir()
    _, good_cfg = apply("good", good)
    daemon = Daemon(good_cfg)
    before = daemon.core.state("d0").model_version
    model.replace(good / "m.mittd")
    (good / "mittd.toml").write_text(
        cfg.read_text().replace(str(model), str(good / "m.mittd")))
    assert daemon.reload() == (1 if expected else 0)
    if not expected:  # a refused reload keeps the old model serving
        assert daemon.core.state("d0").model_version == before


def test_problems_name_the_rule(tmp_path: Path) -> None:
    want = {
        "shipped, max_pending_per_device = 8": "more than max_pending_per_device = 8",
        "pending_timeout_ms = 1": "longer than pending_timeout_ms = 1",
        "featuriser nosuch": "unknown featuriser 'nosuch'",
        "featuriser pending = -5": "pending",
        "featuriser of other width": "model/featuriser mismatch",
        "unfitted heimdall": "no fitted bounds",
        "latency_us = [-5]": "thresholds.latency_us[0]: expected a finite number > 0",
        "latency_us = []": "no latency threshold",
        "two thresholds, one head": "2 latency thresholds for 1 output head",
        "p_slow = [1.5]": "thresholds.p_slow[0]: expected a probability in (0, 1]",
        "manifest is [1, 2, 3]": "m.mittd",
        "garbage file": "m.mittd",
    }
    for i, (case, text) in enumerate(want.items()):
        d = tmp_path / str(i)
        d.mkdir()
        _, cfg = apply(case, d)
        ok, problems = check_verdict(cfg)
        assert not ok and len(problems) == 1 and text in problems[0], (case, problems)


def test_servable_without_a_config_has_no_tracker_limits() -> None:
    b = load_bundle(shipped_bundle("precise_linear_node95"))
    assert servable(b).featuriser.capacity > 8  # the replayer's case: no limits
    with pytest.raises(DeviceError, match="max_pending_per_device = 8"):
        servable(b, limits=Limits(max_pending=8))
    with pytest.raises(DeviceError, match=r"\[1\.5\] not probabilities"):
        servable(b, decision_threshold=1.5)


def test_build_state_shares_a_given_engine() -> None:
    b = synthetic_bundle("precise_linear", 0.95, "node")
    first = build_state(b, "csr")
    second = build_state(b, first.engine)
    assert second.engine is first.engine and second.tracker is not first.tracker
    with pytest.raises(DeviceError, match="engine nosuch failed"):
        build_state(b, "nosuch")
