"""Broken bundles and failed writes (issue 15): every bad manifest field is one line
naming the file and the field, at load, in every command that reads a bundle; the
manifest is covered by the checksum; a bundle write is atomic under a full disk and
``kill -9``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mittd.daemon.cli import main
from mittd.predictor.bundle import (
    MANIFEST,
    VERSION,
    BundleError,
    load_bundle,
    manifest_sha256,
    save_bundle,
)
from mittd.predictor.shipped import shipped_bundle
from mittd.predictor.synthetic import synthetic_bundle
from mittd.traces.shipped import shipped_trace

REPO = Path(__file__).resolve().parents[2]
Edit = Callable[[dict[str, Any]], Any]


def rewrite(src: Path, dst: Path, edit: Edit, reseal: bool = True) -> Path:
    """Copy ``src`` with its manifest edited (``edit`` changes it in place or returns a
    replacement), sealed again with the manifest hash unless ``reseal`` is false."""
    with zipfile.ZipFile(src) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    m = json.loads(members[MANIFEST])
    new = edit(m)
    m = m if new is None else new
    if reseal and isinstance(m, dict) and "sha256" in m:
        m["sha256"] = manifest_sha256(m)
    members[MANIFEST] = json.dumps(m).encode()
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return dst


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("good") / "m.mittd"
    save_bundle(synthetic_bundle("precise_linear", 0.95, "node", seed=1), path)
    return path


def setter(*keys: str, value: Any) -> Edit:
    def edit(m: dict[str, Any]) -> None:
        d = m
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return edit


def first_node(**kw: Any) -> Edit:
    return lambda m: m["graph"]["nodes"][1].update(kw)


def huge_layer(m: dict[str, Any]) -> None:
    """A crafted shape that would allocate 1.4 TB if the loader trusted it."""
    m["graph"]["input_dim"] = 10**9
    m["layers"]["fc1"].update(shape=[10**9, 352], storage="csr")


# (edit, text the one-line error must hold)
BAD: dict[str, tuple[Edit, str]] = {
    "manifest [1, 2, 3]": (lambda m: [1, 2, 3], "manifest.json holds a list"),
    "version '2'": (setter("version", value="2"), "bad bundle format version '2'"),
    "graph a list": (setter("graph", value=[1, 2]), "manifest field graph: expected an object"),
    "graph nodes garbage": (setter("graph", "nodes", value=[1, 2]), "manifest field graph:"),
    "graph relu without input": (first_node(op="relu", inputs=[]), "manifest field graph:"),
    "graph input_dim 'x'": (setter("graph", "input_dim", value="x"), "manifest field graph:"),
    "layers a string": (setter("layers", value="fc1"), "manifest field layers: expected"),
    "layer shape negative": (setter("layers", "fc1", "shape", value=[-1, 5]),
                             "manifest field layers.fc1.shape"),
    "layer shape strings": (setter("layers", "fc1", "shape", value=["352", "352"]),
                            "manifest field layers.fc1.shape"),
    "layer storage unknown": (setter("layers", "fc1", "storage", value="zstd"),
                              "manifest field layers.fc1.storage: expected one of dense, csr"),
    "layer of 10**9 inputs": (huge_layer, "more weights than a bundle may hold"),
    "layer missing": (lambda m: m["layers"].pop("fc2") and None, "no weights for layer(s) fc2"),
    "thresholds a list": (setter("thresholds", value=[500]),
                          "manifest field thresholds: expected an object"),
    "latency_us 'x'": (setter("thresholds", "latency_us", value=[500.0, "x"]),
                       "manifest field thresholds.latency_us[1]: expected a finite number > 0, "
                       "got 'x'"),
    "latency_us nan": (setter("thresholds", "latency_us", value=[math.nan]),
                       "thresholds.latency_us[0]: expected a finite number > 0, got nan"),
    "latency_us inf": (setter("thresholds", "latency_us", value=[math.inf]),
                       "thresholds.latency_us[0]"),
    "latency_us negative": (setter("thresholds", "latency_us", value=[-5]),
                            "thresholds.latency_us[0]"),
    "latency_us unsorted": (setter("thresholds", "latency_us", value=[500.0, 100.0]),
                            "thresholds.latency_us: thresholds_us must be strictly ascending"),
    "latency_us two for one head": (setter("thresholds", "latency_us", value=[100.0, 500.0]),
                                    "2 latency thresholds for 1 output head"),
    "latency_us empty": (setter("thresholds", "latency_us", value=[]),
                         "thresholds.latency_us: no latency threshold"),
    "latency_us a string": (setter("thresholds", "latency_us", value="fast"),
                            "thresholds.latency_us: expected a list"),
    "p_slow 1.5": (setter("thresholds", "p_slow", value=[1.5]), "thresholds.p_slow[0]"),
    "p_slow nan": (setter("thresholds", "p_slow", value=[math.nan]), "thresholds.p_slow[0]"),
    "p_slow 0": (setter("thresholds", "p_slow", value=[0]), "thresholds.p_slow[0]"),
    "p_slow 'x'": (setter("thresholds", "p_slow", value="x"), "thresholds.p_slow: expected"),
    "thresholds unknown key": (setter("thresholds", "slo", value=1), "unknown field(s) slo"),
    "featuriser a list": (setter("featuriser", value=["lba"]),
                          "manifest field featuriser: expected an object"),
    "featuriser dim 'x'": (setter("featuriser", "dim", value="x"),
                           "manifest field featuriser.dim: expected an integer >= 1"),
    "featuriser unknown": (setter("featuriser", "name", value="nosuch"),
                           "manifest field featuriser: unknown featuriser 'nosuch'"),
    "featuriser pending 'ten'": (setter("featuriser", "pending", value="ten"),
                                 "manifest field featuriser:"),
    "featuriser of other width": (lambda m: m["featuriser"].update(pending=2, dim=None),
                                  "model/featuriser mismatch"),
    "policy garbage": (setter("policy", value="garbage"), "manifest field policy: expected"),
    "policy mode": (setter("policy", value={"mode": "sometimes"}),
                    "manifest field policy.mode must be one of"),
    "policy hedge nan": (setter("policy", value={"mode": "hedge",
                                                 "hedge_after_us": math.nan}),
                         "manifest field policy.hedge_after_us"),
    "provenance a string": (setter("provenance", value="x"),
                            "manifest field provenance: expected an object"),
    "test_metrics a list": (setter("provenance", "test_metrics", value=[1]),
                            "manifest field provenance.test_metrics"),
    "sources a string": (setter("provenance", "data", value={"sources": "a.parquet"}),
                         "manifest field provenance.data.sources"),
    "degenerate 'no'": (setter("provenance", "degenerate", value="no"),
                        "manifest field provenance.degenerate"),
    "policy_selection garbage": (setter("provenance", "policy_selection",
                                        value={"trace": 1}),
                                 "manifest field provenance.policy_selection.trace"),
    "hints a list": (setter("hints", value=[]), "manifest field hints: expected an object"),
    "codebooks nan": (setter("hints", "codebooks", value={"fc1": [0.1, math.nan]}),
                      "manifest field hints.codebooks.fc1"),
    "payload_sha256 int": (setter("payload_sha256", value=12), "payload_sha256"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_manifest_field_is_one_line_naming_file_and_field(case: str, good: Path,
                                                                 tmp_path: Path) -> None:
    edit, text = BAD[case]
    bad = rewrite(good, tmp_path / "x.mittd", edit)
    with pytest.raises(BundleError) as e:
        load_bundle(bad)
    msg = str(e.value)
    assert msg.startswith(f"{bad}: ") and "\n" not in msg, msg
    assert text in msg, msg


def test_an_edited_manifest_fails_the_checksum(good: Path, tmp_path: Path) -> None:
    b = load_bundle(good)
    edited = rewrite(good, tmp_path / "e.mittd",
                     setter("thresholds", "latency_us", value=[900.0]), reseal=False)
    with pytest.raises(BundleError, match=r"e\.mittd: manifest checksum mismatch"):
        load_bundle(edited)
    # the bundle's sha covers the manifest: same weights, other threshold, other sha
    resealed = load_bundle(rewrite(good, tmp_path / "r.mittd",
                                   setter("thresholds", "latency_us", value=[900.0])))
    assert resealed.sha256 != b.sha256 and len(b.sha256) == 64
    assert json.loads(zipfile.ZipFile(good).read(MANIFEST))["version"] == VERSION == 2
    assert b.version_id == f"precise_linear@{b.sha256[:12]}"


def _as_version_1(m: dict) -> None:
    """A format-1 manifest: no whole-bundle sha256 (as every bundle before format 2)."""
    m["version"] = 1
    del m["sha256"]


def test_version_1_bundles_still_load_with_the_payload_hash(tmp_path: Path) -> None:
    """Format 1 is read (its sha is the payload hash), warned of and upgraded."""
    path = rewrite(shipped_bundle("heimdall"), tmp_path / "v1.mittd", _as_version_1)
    m = json.loads(zipfile.ZipFile(path).read(MANIFEST))
    v1 = load_bundle(path)
    assert (v1.sha256, v1.format_version) == (m["payload_sha256"], 1)
    assert "mittd model upgrade" in (v1.old_format_warning() or "")
    # a bad field is refused in version 1 too
    bad = rewrite(path, tmp_path / "bad1.mittd", setter("thresholds", "p_slow", value=[2]))
    with pytest.raises(BundleError, match=r"thresholds\.p_slow\[0\]"):
        load_bundle(bad)
    # mittd model upgrade: version 2, same weights, thresholds and policy, no warning
    assert main(["model", "upgrade", str(path), "-o", str(tmp_path / "v2.mittd")]) == 0
    v2 = load_bundle(tmp_path / "v2.mittd")
    assert v2.sha256 != m["payload_sha256"] and v2.format_version == VERSION
    assert v2.old_format_warning() is None
    assert (v2.thresholds, v2.policy) == (v1.thresholds, v1.policy)
    for name, (k, b) in v1.params.items():
        assert np.array_equal(v2.params[name][0], k) and np.array_equal(v2.params[name][1], b)


def test_the_shipped_bundles_are_the_current_format() -> None:
    """So an edited shipped manifest is a checksum mismatch, not a silent change."""
    for name in ("heimdall", "linnos", "precise_linear_node95", "precise_linear_hist_node95"):
        b = load_bundle(shipped_bundle(name))
        assert b.format_version == VERSION and b.old_format_warning() is None, name


def test_an_unloadable_bundle_is_not_written(tmp_path: Path) -> None:
    b = synthetic_bundle("linnos")
    b.thresholds["latency_us"] = [math.nan]
    with pytest.raises(BundleError, match=r"refusing to write it\): manifest field "
                                          r"thresholds\.latency_us\[0\]"):
        save_bundle(b, tmp_path / "n.mittd")
    assert not list(tmp_path.iterdir())
    save_bundle(b, tmp_path / "n.mittd", validate=False)  # a broken one, for tests
    with pytest.raises(BundleError, match=r"n\.mittd: manifest field thresholds"):
        load_bundle(tmp_path / "n.mittd")


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "garbage", "truncated"])
def test_unreadable_files_are_one_line(kind: str, good: Path, tmp_path: Path) -> None:
    p = tmp_path / "f.mittd"
    if kind == "directory":
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "garbage":
        p.write_bytes(os.urandom(3000))
    elif kind == "truncated":
        p.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(BundleError) as e:
        load_bundle(p)
    assert str(e.value).startswith(f"{p}: ") and "\n" not in str(e.value)


# -- every command that reads a bundle ------------------------------------------------------

T = str(shipped_trace())


def _config(tmp: Path, model: Path) -> Path:
    dev = tmp / "disk.img"
    dev.write_bytes(b"\0" * 65536)
    cfg = tmp / "mittd.toml"
    cfg.write_text(f'[server]\nunix_socket = "{tmp / "s.sock"}"\nmetrics = ""\n'
                   f'[devices.d0]\npath = "{dev}"\nmodel = "{model}"\nengine = "csr"\n')
    return cfg


COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "model describe": lambda b, t: ["model", "describe", str(b)],
    "prune": lambda b, t: ["prune", str(b), "--sparsity", "0.5", "-o", str(t / "o.mittd")],
    "compress": lambda b, t: ["compress", str(b), "--weights", "fp16", "-o",
                              str(t / "o.mittd")],
    "evaluate": lambda b, t: ["evaluate", str(b), "--trace", T],
    "replay -m": lambda b, t: ["replay", T, "-m", str(b), "-o", str(t / "r")],
    "eie report": lambda b, t: ["eie", "report", str(b)],
}


@pytest.mark.parametrize("command", [*COMMANDS, "check"])
def test_every_command_refuses_a_bad_manifest_in_one_line(
        command: str, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = rewrite(good, tmp_path / "bad.mittd",
                  setter("thresholds", "latency_us", value=[500.0, "x"]))
    want = "manifest field thresholds.latency_us[1]: expected a finite number > 0, got 'x'"
    if command == "check":  # a FAIL line for the device, exit 1
        assert main(["check", "--config", str(_config(tmp_path, bad))]) == 1
        out = capsys.readouterr().out
        assert want in out and "Traceback" not in out
        return
    assert main(COMMANDS[command](bad, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mittd: error: ") and want in err, err


def test_check_formats_any_number_without_crashing() -> None:
    from mittd.daemon.check import _fmt

    assert _fmt([188.41, 500.0, math.nan, math.inf, 1e300]) == \
        "[188.41, 500.0, nan, inf, 1e+300]"


def test_check_and_describe_show_the_degenerate_flag(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    b = synthetic_bundle("precise_linear", 0.95, "node", seed=1)
    b.provenance.update(degenerate=True, degenerate_reason="degenerate: the labels hold "
                        "one class only (NON-EBUSY: no EBUSY IO)")
    path = tmp_path / "d.mittd"
    save_bundle(b, path)
    assert main(["check", "--config", str(_config(tmp_path, path))]) == 0
    out = capsys.readouterr().out
    assert "warn  d0" in out and "degenerate model" in out and "one class only" in out
    assert main(["model", "describe", str(path)]) == 0
    assert "WARNING degenerate model" in capsys.readouterr().out


def test_check_and_describe_warn_of_a_format_1_bundle(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = rewrite(shipped_bundle("heimdall"), tmp_path / "v1.mittd", _as_version_1)
    assert main(["check", "--config", str(_config(tmp_path, path))]) == 0
    out = capsys.readouterr().out
    assert "warn  d0" in out and "bundle format 1" in out and "mittd model upgrade" in out
    assert main(["model", "describe", str(path)]) == 0
    assert "WARNING bundle format 1" in capsys.readouterr().out


# -- atomic, durable writes ------------------------------------------------------------------

_FULL = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of a killed process
from mittd.predictor.bundle import BundleError, save_bundle
from mittd.predictor.synthetic import synthetic_bundle
b = synthetic_bundle("precise_linear", 0.0, seed=3)   # ~2 MB of dense weights
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, hard))
try:
    save_bundle(b, sys.argv[1])
except BundleError as e:
    print(e)
    sys.exit(3)
"""


def test_a_full_disk_leaves_the_old_bundle_and_no_partial(good: Path, tmp_path: Path) -> None:
    target = tmp_path / "m.mittd"
    target.write_bytes(good.read_bytes())
    r = subprocess.run([sys.executable, "-c", _FULL, str(target)], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    assert r.returncode == 3, r.stderr
    assert r.stdout.strip() == f"cannot write {target}: File too large", r.stdout
    assert load_bundle(target).sha256 == load_bundle(good).sha256
    assert [p.name for p in tmp_path.iterdir()] == ["m.mittd"]


_WRITER = """
import sys
from mittd.predictor.bundle import save_bundle
from mittd.predictor.synthetic import synthetic_bundle
b = synthetic_bundle("precise_linear", 0.0, seed=4)
print("ready", flush=True)
while True:
    save_bundle(b, sys.argv[1])
"""


def test_kill_9_while_writing_leaves_a_whole_bundle(good: Path, tmp_path: Path) -> None:
    """Three writers killed at random points of their rewrite loops: each target loads
    (the old bundle or a whole new one), whatever the moment."""
    rng = np.random.default_rng(15)
    targets, procs = [], []
    for i in range(3):
        t = tmp_path / f"w{i}" / "m.mittd"
        t.parent.mkdir()
        t.write_bytes(good.read_bytes())
        targets.append(t)
        procs.append(subprocess.Popen([sys.executable, "-c", _WRITER, str(t)], cwd=REPO,
                                      stdout=subprocess.PIPE, text=True))
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            time.sleep(float(rng.uniform(0.05, 0.6)))
            p.send_signal(signal.SIGKILL)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    new = save_bundle(synthetic_bundle("precise_linear", 0.0, seed=4), tmp_path / "new.mittd")
    for t in targets:
        assert load_bundle(t).sha256 in {load_bundle(good).sha256, new}  # raises if torn


# -- whatever load_bundle accepts can be described, checked and served ---------------------

FUZZ_VALUES = [None, "x", [], -1, 0, 1.5, math.nan, math.inf, True, 10**20]


def test_whatever_load_accepts_is_described_and_served_without_a_traceback(
        tmp_path: Path) -> None:
    """Every manifest field (two levels deep, graph nodes aside) set to each odd value:
    load refuses it in one line, or describe, the daemon's servability rules and the
    check formatter all run on it (found: a null p_slow and a null reject cap)."""
    import argparse
    import contextlib
    import io

    from mittd.daemon.check import _fmt
    from mittd.daemon.devices import DeviceError, servable
    from mittd.predictor.cli import cmd_describe

    b = synthetic_bundle("linnos", 0.5, seed=1)
    b.policy = {"mode": "both", "hedge_after_us": 300.0, "max_reject_share": 0.1}
    b.provenance.update(test_metrics={"roc_auc": 0.9, "degenerate": False},
                        data={"sources": ["a"], "test_fraction": 0.3, "reads_only": False})
    b.hints = {"codebooks": {"fc1": [0.1, 0.2]}}
    src = tmp_path / "src.mittd"
    save_bundle(b, src)
    base = json.loads(zipfile.ZipFile(src).read(MANIFEST))
    paths: list[tuple[str, ...]] = []

    def walk(d: Any, pre: tuple[str, ...]) -> None:
        for k, v in d.items():
            if pre != ("graph",) or k != "nodes":
                paths.append((*pre, k))
                if isinstance(v, dict) and len(pre) < 2:
                    walk(v, (*pre, k))
    walk(base, ())
    accepted = 0
    for path in paths:
        for value in FUZZ_VALUES:
            q = rewrite(src, tmp_path / "q.mittd", setter(*path, value=value))
            try:
                got = load_bundle(q)
            except BundleError as e:
                assert "\n" not in str(e)
                continue
            accepted += 1
            try:
                s = servable(got)
                _fmt(s.thresholds_us)
                _fmt(s.p_thresholds)
            except DeviceError:
                pass
            with contextlib.redirect_stdout(io.StringIO()):
                cmd_describe(argparse.Namespace(model=str(q), json=False))
            got.degenerate_reason()
    assert len(paths) > 40 and accepted > 100
