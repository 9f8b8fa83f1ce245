"""The bundle file: round trip, and a one-line refusal of every broken file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mittd.predictor.bundle import BundleError, load_bundle, manifest_sha256, save_bundle
from mittd.predictor.synthetic import synthetic_bundle


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "m.mittd"
    save_bundle(synthetic_bundle("precise_linear", 0.95, "magnitude", seed=2), path)
    return path


@pytest.mark.parametrize(("model", "sparsity"), [("precise_linear", 0.98),
                                                 ("good_custom", 0.0), ("heimdall", 0.0)])
def test_round_trip(tmp_path: Path, model: str, sparsity: float) -> None:
    b = synthetic_bundle(model, sparsity, seed=1)
    path = tmp_path / "m.mittd"
    sha = save_bundle(b, path)
    got = load_bundle(path)
    assert got.sha256 == sha and len(sha) == 64
    assert got.graph == b.graph
    for name, (k, bias) in b.params.items():
        assert np.array_equal(got.params[name][0], k)
        assert np.array_equal(got.params[name][1], bias)
    assert got.featuriser == b.featuriser
    assert got.thresholds == b.thresholds
    assert got.provenance["synthetic"] is True


def test_sparse_layers_are_stored_sparse(saved: Path) -> None:
    manifest = json.loads(zipfile.ZipFile(saved).read("manifest.json"))
    assert manifest["layers"]["fc1"]["storage"] == "csr"
    # 95 % sparse: far smaller than the 2.3 MB of dense float32 weights
    assert saved.stat().st_size < 600_000


def test_truncated(saved: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mittd"
    cut.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(BundleError, match=r"cut\.mittd: corrupted or truncated"):
        load_bundle(cut)


def test_flipped_byte_is_detected(saved: Path, tmp_path: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad = tmp_path / "bad.mittd"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"bad\.mittd: (corrupted|payload checksum)"):
        load_bundle(bad)


def _rewrite(src: Path, dst: Path, edit_manifest=None, edit_arrays=None,  # type: ignore[no-untyped-def]
             reseal: bool = True) -> None:
    """Copy a bundle, editing its manifest (sealed again with the new manifest hash
    unless ``reseal`` is false: a hand edit) or its arrays."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "manifest.json" and edit_manifest:
                m = json.loads(data)
                edit_manifest(m)
                if reseal and isinstance(m, dict) and "sha256" in m:
                    m["sha256"] = manifest_sha256(m)
                data = json.dumps(m).encode()
            elif edit_arrays and item.filename.endswith(".npy"):
                data = edit_arrays(item.filename, data)
            zout.writestr(item, data)


def test_tampered_weights_fail_the_checksum(saved: Path, tmp_path: Path) -> None:
    import io

    def edit(name: str, data: bytes) -> bytes:
        if name != "fc1.bias.npy":
            return data
        a = np.load(io.BytesIO(data))
        a[0] += 1.0
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    bad = tmp_path / "tampered.mittd"
    _rewrite(saved, bad, edit_arrays=edit)
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(bad)


def test_newer_version_is_refused(saved: Path, tmp_path: Path) -> None:
    bad = tmp_path / "v9.mittd"
    _rewrite(saved, bad, edit_manifest=lambda m: m.update(version=9))
    with pytest.raises(BundleError, match="version 9 is newer"):
        load_bundle(bad)


def test_featuriser_mismatch(saved: Path) -> None:
    b = load_bundle(saved)
    other = dict(b.featuriser, lba_unit=512)
    with pytest.raises(BundleError, match="featuriser mismatch"):
        load_bundle(saved, expect_featuriser=other)
    assert load_bundle(saved, expect_featuriser=b.featuriser).sha256 == b.sha256


def test_featuriser_width_must_match_the_model(saved: Path, tmp_path: Path) -> None:
    bad = tmp_path / "w.mittd"
    _rewrite(saved, bad, edit_manifest=lambda m: m["featuriser"].update(dim=31))
    with pytest.raises(BundleError, match="featuriser gives 31 inputs"):
        load_bundle(bad)


def test_not_a_bundle(tmp_path: Path) -> None:
    p = tmp_path / "x.mittd"
    p.write_text("hello")
    with pytest.raises(BundleError, match="corrupted or truncated"):
        load_bundle(p)
    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(tmp_path / "missing.mittd")
