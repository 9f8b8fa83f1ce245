"""The model bundle: one self-contained file the daemon loads without TensorFlow.

A ``.mittd`` file is a zip archive (numpy's ``.npz`` layout) holding:

- ``manifest.json``: format name and version, the graph, the featuriser config,
  the latency threshold(s) the model was trained for and the decision
  threshold(s), the decision policy (``mittd.predictor.policy``), training
  provenance, per-layer storage, engine hints, the sha256 of the payload and
  (format version 2) the sha256 of the whole bundle;
- one array per stored tensor: ``<layer>.bias`` and either ``<layer>.kernel``
  (dense, Keras (in, out) layout) or ``<layer>.csr_data`` / ``.csr_indices`` /
  ``.csr_indptr`` (the kernel's transpose, (out, in), in CSR — the layout the
  sparse kernels read), whichever is smaller.

Checksums. ``payload_sha256`` covers the arrays. From format version 2,
``sha256`` covers everything: it is the sha256 of the canonical JSON (sorted
keys, no spaces) of the manifest without the ``sha256`` field, which includes
``payload_sha256``; an edited manifest (a threshold changed by hand) is refused
as a checksum mismatch. ``Bundle.sha256`` (the daemon's ``model_sha``) is that
whole-bundle hash. Version 1 bundles (every bundle written before) are still
read: their ``sha256`` is the payload hash, which does not cover the manifest;
``mittd check`` and ``mittd model describe`` warn of them and ``mittd model
upgrade`` re-exports one (same weights). Kept readable because refusing them
would break every model already trained and deployed.

The loader refuses, with one line naming the file and the problem, a file that
is not a zip, is truncated or corrupted (zip CRC, payload or manifest sha256),
has a newer or unknown format version, whose manifest has a field of the wrong
type or value (``x.mittd: manifest field thresholds.latency_us[1]: expected a
finite number > 0, got 'x'``), or whose featuriser does not match what the caller
expects (a model trained on other features would give garbage). So everything
``load_bundle`` returns can be formatted and served; unknown top-level manifest
fields are ignored (forward compatibility within a version).

Writing is atomic and durable (``mittd.traces.atomic``): after ``kill -9``, a
full disk or a power cut the path holds the old bundle or the whole new one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mittd.predictor.graph import Graph, GraphError, Params, check_params
from mittd.traces.atomic import OutputError, atomic_path

FORMAT = "mittd-bundle"
VERSION = 2
MANIFEST = "manifest.json"
STORAGES = ("dense", "csr")
MAX_WEIGHTS = 1 << 28  # per layer (1 GiB of float32); the paper's largest has 123,904
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BundleError(Exception):
    """A bundle cannot be used; the message is one line for the operator."""


@dataclass
class Bundle:
    graph: Graph
    params: Params
    featuriser: dict[str, Any]
    thresholds: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    hints: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    policy: dict[str, Any] = field(default_factory=dict)  # mittd.predictor.policy
    format_version: int = VERSION  # as read (1: the manifest is not under the checksum)

    def old_format_warning(self) -> str | None:
        """What ``check`` and ``model describe`` say of a bundle read in an older
        format (None when current)."""
        if self.format_version >= VERSION:
            return None
        return (f"bundle format {self.format_version}: its manifest (thresholds, policy) "
                "is not covered by the checksum; re-export it with `mittd model upgrade`")

    @property
    def version_id(self) -> str:
        """Short id for logs and metrics: model name and the bundle hash prefix."""
        return f"{self.graph.name}@{self.sha256[:12]}"

    def latency_thresholds_us(self) -> list[float]:
        return [float(t) for t in self.thresholds.get("latency_us", [])]

    def decision_thresholds(self) -> list[float]:
        n = self.graph.output_dim if self.graph.head == "sigmoid" else 1
        return [float(t) for t in self.thresholds.get("p_slow", [0.5] * n)]

    def degenerate_reason(self) -> str | None:
        """Why training flagged this model degenerate (``mittd check`` and ``model
        describe`` show it), None when it did not: its test split held one class
        only, or it predicts one class for nearly every IO."""
        tm = self.provenance.get("test_metrics")
        tm = tm if isinstance(tm, Mapping) else {}
        if not (self.provenance.get("degenerate") is True or tm.get("degenerate") is True):
            return None
        reason = self.provenance.get("degenerate_reason") or tm.get("warning")
        return str(reason) if reason else "degenerate (see provenance.test_metrics)"


def _payload_hash(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(json.dumps(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def manifest_sha256(manifest: Mapping[str, Any]) -> str:
    """The whole-bundle hash of a version 2 manifest: sha256 of its canonical JSON
    without the ``sha256`` field (``payload_sha256``, inside it, covers the arrays).

    Public so that a tool (or a test) that edits a manifest on purpose can seal
    it again: ``m["sha256"] = manifest_sha256(m)``.
    """
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _encode_layer(name: str, kernel: np.ndarray, bias: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    k = np.asarray(kernel, np.float32)
    nnz = int(np.count_nonzero(k))
    info: dict[str, Any] = {"shape": list(k.shape), "nnz": nnz,
                            "sparsity": 1.0 - nnz / k.size if k.size else 0.0}
    arrays = {f"{name}.bias": np.asarray(bias, np.float32)}
    # CSR costs 8 bytes a non-zero (value + index) against 4 per dense weight
    if nnz * 2 < k.size:
        kt = np.ascontiguousarray(k.T)
        nz = kt != 0
        indptr = np.zeros(kt.shape[0] + 1, np.int64)
        indptr[1:] = np.cumsum(nz.sum(axis=1))
        arrays[f"{name}.csr_data"] = kt[nz]
        arrays[f"{name}.csr_indices"] = np.nonzero(nz)[1].astype(np.int32)
        arrays[f"{name}.csr_indptr"] = indptr
        info["storage"] = "csr"
    else:
        arrays[f"{name}.kernel"] = k
        info["storage"] = "dense"
    return arrays, info


def _array(layer: str, arrays: Mapping[str, np.ndarray], suffix: str, ndim: int,
           kinds: str) -> np.ndarray:
    """A stored array of the expected rank and kind (f: float, iu: integer)."""
    key = f"{layer}.{suffix}"
    a = arrays.get(key)
    if a is None:
        raise BundleError(f"layer {layer}: missing array {key}")
    if a.ndim != ndim or a.dtype.kind not in kinds:
        what = "floats" if kinds == "f" else "integers"
        raise BundleError(f"layer {layer}: array {key} is {a.dtype} of shape {a.shape}, "
                          f"expected {ndim}-D {what}")
    return a.astype(np.float32, copy=False) if kinds == "f" else a


def _decode_layer(name: str, info: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray]:
    n_in, n_out = (int(x) for x in info["shape"])
    bias = _array(name, arrays, "bias", 1, "f")
    if info["storage"] == "dense":
        return _array(name, arrays, "kernel", 2, "f"), bias
    data = _array(name, arrays, "csr_data", 1, "f")
    idx = _array(name, arrays, "csr_indices", 1, "iu")
    ptr = _array(name, arrays, "csr_indptr", 1, "iu").astype(np.int64)
    if len(ptr) != n_out + 1 or ptr[0] != 0 or ptr[-1] != len(data) \
            or len(idx) != len(data) or (np.diff(ptr) < 0).any() \
            or (len(idx) and (idx.min() < 0 or idx.max() >= n_in)):
        raise BundleError(f"layer {name}: inconsistent sparse structure")
    if n_in * n_out > MAX_WEIGHTS:  # a crafted shape must not allocate without end
        raise BundleError(f"layer {name}: {n_in}x{n_out} is more weights than a bundle may "
                          f"hold ({MAX_WEIGHTS:,})")
    kt = np.zeros((n_out, n_in), np.float32)
    rows = np.repeat(np.arange(n_out), np.diff(ptr))
    kt[rows, idx] = data
    return np.ascontiguousarray(kt.T), bias


# -- manifest validation: one home for "what a manifest field may hold" -----------------

def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v)


class _Fields:
    """Checks one manifest's fields; every failure is one line naming the field."""

    def __init__(self, where: str, manifest: Mapping[str, Any]) -> None:
        self.where = where
        self.m = manifest

    def error(self, fld: str, text: str) -> BundleError:
        return BundleError(f"{self.where}: manifest field {fld}: {text}")

    def expect(self, fld: str, expected: str, got: Any) -> BundleError:
        return self.error(fld, f"expected {expected}, got {_show(got)}")

    def table(self, fld: str, v: Any, optional: bool = True) -> dict[str, Any]:
        """An object (a missing or null one is empty when ``optional``)."""
        if v is None and optional:
            return {}
        if not isinstance(v, dict):
            raise self.expect(fld, "an object", v)
        return v

    def sha(self, fld: str) -> str:
        v = self.m.get(fld)
        if not isinstance(v, str) or not _HEX64.fullmatch(v):
            raise self.expect(fld, "64 lowercase hex digits (sha256)", v)
        return v

    def graph(self) -> Graph:
        d = self.table("graph", self.m.get("graph"), optional=False)
        try:
            return Graph.from_dict(d)
        except GraphError as e:
            raise self.error("graph", _one_line(e)) from None

    def layers(self, graph: Graph) -> dict[str, dict[str, Any]]:
        layers = self.m.get("layers")
        if not isinstance(layers, dict):
            raise self.expect("layers", "an object of layer name -> storage", layers)
        shapes = graph.kernel_shapes()
        for name, info in layers.items():
            fld = f"layers.{name}"
            if name not in shapes:
                raise self.error("layers", f"{name!r} is not a dense layer of the graph")
            info = self.table(fld, info, optional=False)
            shape = info.get("shape")
            if not (isinstance(shape, list) and len(shape) == 2
                    and all(_is_int(x) and x >= 0 for x in shape)):
                raise self.expect(f"{fld}.shape", "[inputs, units]: two integers >= 0", shape)
            if tuple(shape) != shapes[name]:
                raise self.expect(f"{fld}.shape", f"{list(shapes[name])} (the graph's)", shape)
            if info.get("storage") not in STORAGES:
                raise self.expect(f"{fld}.storage", f"one of {', '.join(STORAGES)}",
                                  info.get("storage"))
        missing = sorted(set(shapes) - set(layers))
        if missing:
            raise self.error("layers", f"no weights for layer(s) {', '.join(missing)}")
        return layers

    def featuriser(self, graph: Graph) -> dict[str, Any]:
        """The config must rebuild a featuriser of the model's input width (an empty
        one is a bare model: it runs, but cannot featurise a trace)."""
        feat = self.table("featuriser", self.m.get("featuriser"))
        if not feat:
            return {}
        dim = feat.get("dim")
        if dim is not None and not (_is_int(dim) and dim >= 1):
            raise self.expect("featuriser.dim", "an integer >= 1", dim)
        if dim is not None and dim != graph.input_dim:
            raise BundleError(f"{self.where}: featuriser gives {dim} inputs but the model "
                              f"takes {graph.input_dim}")
        if not isinstance(feat.get("name"), str):
            raise self.expect("featuriser.name", "a featuriser name", feat.get("name"))
        from mittd.predictor.features import make_featuriser  # numba: only when loading

        try:
            built = make_featuriser(feat)
        except Exception as e:  # any content of a manifest: refused, never raised through
            raise self.error("featuriser", _one_line(e)) from None
        if built.dim != graph.input_dim:
            raise BundleError(f"{self.where}: model/featuriser mismatch: the {built.name} "
                              f"featuriser gives {built.dim} inputs, the model takes "
                              f"{graph.input_dim}")
        return feat

    def thresholds(self, graph: Graph) -> dict[str, Any]:
        from mittd.predictor.thresholds import check_thresholds

        thr = self.table("thresholds", self.m.get("thresholds"))
        unknown = sorted(str(k) for k in set(thr) - {"latency_us", "p_slow"})
        if unknown:
            raise self.error("thresholds", f"unknown field(s) {', '.join(unknown)}")
        heads = graph.output_dim if graph.head == "sigmoid" else 1
        lat = thr.get("latency_us")
        if lat is None or lat == []:
            raise self.error("thresholds.latency_us", "no latency threshold (the SLO the "
                             "model was trained for, in µs)")
        if not isinstance(lat, list):
            raise self.expect("thresholds.latency_us", "a list of latencies in µs", lat)
        for i, t in enumerate(lat):
            if not (_finite(t) and t > 0):
                raise self.expect(f"thresholds.latency_us[{i}]", "a finite number > 0", t)
        try:
            check_thresholds(lat)  # the one home of the ladder rules (ascending)
        except ValueError as e:
            raise self.error("thresholds.latency_us", _one_line(e)) from None
        if len(lat) != heads:
            raise self.error("thresholds.latency_us", f"{len(lat)} latency thresholds for "
                             f"{heads} output head(s)")
        p = thr.get("p_slow")
        if "p_slow" in thr:
            if not isinstance(p, list):
                raise self.expect("thresholds.p_slow", "a list of P(slow) cutoffs", p)
            for i, v in enumerate(p):
                if not (_finite(v) and 0.0 < v <= 1.0):
                    raise self.expect(f"thresholds.p_slow[{i}]",
                                      "a probability in (0, 1] (1: never reject)", v)
            if len(p) != heads:
                raise self.error("thresholds.p_slow", f"{len(p)} decision thresholds for "
                                 f"{heads} output head(s)")
        return thr

    def policy(self) -> dict[str, Any]:
        from mittd.predictor.policy import DecisionPolicy

        pol = self.table("policy", self.m.get("policy"))
        try:
            DecisionPolicy.from_dict(pol)
        except ValueError as e:
            text = _one_line(e)
            raise BundleError(f"{self.where}: manifest field "
                              f"{text if text.startswith('policy') else 'policy: ' + text}"
                              ) from None
        return pol

    def provenance(self) -> dict[str, Any]:
        """The parts that mittd reads back (training flows, the daemon's quality)."""
        prov = self.table("provenance", self.m.get("provenance"))
        for key in ("data", "test_metrics", "validation_metrics", "policy_selection"):
            self.table(f"provenance.{key}", prov.get(key))
        data = prov.get("data") or {}
        src = data.get("sources")
        if src is not None and not (isinstance(src, list)
                                    and all(isinstance(s, str) for s in src)):
            raise self.expect("provenance.data.sources", "a list of trace paths", src)
        tf = data.get("test_fraction")
        if tf is not None and not (_finite(tf) and 0.0 < tf < 1.0):
            raise self.expect("provenance.data.test_fraction", "a number in (0, 1)", tf)
        for key in ("reads_only",):
            if data.get(key) is not None and not isinstance(data[key], bool):
                raise self.expect(f"provenance.data.{key}", "true or false", data[key])
        if prov.get("degenerate") is not None and not isinstance(prov["degenerate"], bool):
            raise self.expect("provenance.degenerate", "true or false", prov["degenerate"])
        for key in ("test_metrics", "validation_metrics"):
            auc = (prov.get(key) or {}).get("roc_auc")
            if auc is not None and not _is_number(auc):  # NaN: one class in the split
                raise self.expect(f"provenance.{key}.roc_auc", "a number", auc)
        spec = prov.get("policy_selection")
        if spec:
            self._selection(spec)
        return prov

    def _selection(self, spec: Mapping[str, Any]) -> None:
        f = "provenance.policy_selection"
        if not isinstance(spec.get("trace"), str):
            raise self.expect(f"{f}.trace", "a trace path", spec.get("trace"))
        w = spec.get("window_ts_us")
        if not (isinstance(w, list) and len(w) == 2 and all(_is_int(x) for x in w)
                and w[0] <= w[1]):
            raise self.expect(f"{f}.window_ts_us", "[start, end] in µs", w)
        if spec.get("replica") is not None and not isinstance(spec["replica"], str):
            raise self.expect(f"{f}.replica", "a trace path or null", spec["replica"])
        rb = spec.get("reject_budget")
        if not (_finite(rb) and 0.0 < rb < 1.0):
            raise self.expect(f"{f}.reject_budget", "a number in (0, 1)", rb)
        slo = spec.get("slo_us")
        if not (_finite(slo) and slo > 0):
            raise self.expect(f"{f}.slo_us", "a finite number > 0", slo)

    def hints(self) -> dict[str, Any]:
        hints = self.table("hints", self.m.get("hints"))
        books = self.table("hints.codebooks", hints.get("codebooks"))
        for name, cb in books.items():
            if not (isinstance(cb, list) and all(_finite(c) for c in cb)):
                raise self.expect(f"hints.codebooks.{name}", "a list of finite numbers", cb)
        return hints


def _check_header(where: str, manifest: Any) -> int:
    """Format and version, before anything else is read; returns the version."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: not a mittd bundle ({MANIFEST} holds a "
                          f"{type(manifest).__name__}, expected an object)")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{where}: not a mittd bundle (format {manifest.get('format')!r})")
    version = manifest.get("version")
    if not _is_int(version) or version < 1:
        raise BundleError(f"{where}: bad bundle format version {version!r}")
    if version > VERSION:
        raise BundleError(f"{where}: bundle format version {version} is newer than "
                          f"this mittd reads (<= {VERSION}); upgrade mittd")
    return version


def _build(where: str, manifest: dict[str, Any], arrays: Mapping[str, np.ndarray],
           sha: str) -> Bundle:
    """A Bundle from a verified manifest and its arrays, every field checked."""
    f = _Fields(where, manifest)
    graph = f.graph()
    layers = f.layers(graph)
    try:
        params = {name: _decode_layer(name, info, arrays) for name, info in layers.items()}
        check_params(graph, params)
    except (BundleError, GraphError, KeyError, ValueError, TypeError, IndexError) as e:
        raise BundleError(f"{where}: invalid model: {_one_line(e)}") from None
    return Bundle(graph, params, dict(f.featuriser(graph)), dict(f.thresholds(graph)),
                  dict(f.provenance()), dict(f.hints()), sha, dict(f.policy()))


def save_bundle(bundle: Bundle, path: str | Path, *, validate: bool = True) -> str:
    """Write ``bundle`` atomically and durably; returns its sha256 (``Bundle.sha256``).

    A bundle that :func:`load_bundle` would refuse is not written (BundleError;
    ``validate=False`` writes it anyway: for tests of the refusals); nor is
    anything when the disk is full: the old file, if any, stays whole.
    """
    path = Path(path)
    check_params(bundle.graph, bundle.params)
    arrays: dict[str, np.ndarray] = {}
    layers: dict[str, Any] = {}
    for name, (k, b) in bundle.params.items():
        a, info = _encode_layer(name, k, b)
        arrays.update(a)
        layers[name] = info
    manifest: Any = {
        "format": FORMAT,
        "version": VERSION,
        "graph": bundle.graph.to_dict(),
        "featuriser": bundle.featuriser,
        "thresholds": bundle.thresholds,
        "provenance": bundle.provenance,
        "hints": bundle.hints,
        "policy": bundle.policy,
        "layers": layers,
        "payload_sha256": _payload_hash(arrays),
    }
    try:  # hash exactly what a reader will parse (tuples become lists, and so on)
        manifest = json.loads(json.dumps(manifest))
    except (TypeError, ValueError) as e:
        raise BundleError(f"{path}: cannot write the bundle: manifest is not JSON "
                          f"({_one_line(e)})") from None
    sha = manifest["sha256"] = manifest_sha256(manifest)
    if validate:
        _build(f"{path} (refusing to write it)", manifest, arrays, sha)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as z:
                z.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
                for name in sorted(arrays):
                    buf = io.BytesIO()
                    np.save(buf, arrays[name], allow_pickle=False)
                    z.writestr(f"{name}.npy", buf.getvalue())
            fh.flush()
    except OutputError as e:  # ENOSPC, EFBIG, EACCES: the partial is gone already
        raise BundleError(str(e)) from None
    bundle.sha256 = sha
    bundle.format_version = VERSION
    return sha


def _same_featuriser(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal configs, ignoring fitted statistics the caller cannot know."""
    skip = {"min", "max"}  # Heimdall's fitted ranges
    return {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }


def _read(p: Path, where: str) -> tuple[dict[str, Any], int, dict[str, np.ndarray]]:
    """The manifest (format and version checked) and the arrays of a bundle file."""
    try:
        with zipfile.ZipFile(p) as z:
            try:
                manifest = json.loads(z.read(MANIFEST))
            except KeyError:
                raise BundleError(f"{where}: not a mittd bundle (no {MANIFEST})") from None
            version = _check_header(where, manifest)
            arrays = {}
            for info in z.infolist():
                if info.filename.endswith(".npy"):
                    with z.open(info) as f:
                        arrays[info.filename[:-4]] = np.load(
                            io.BytesIO(f.read()), allow_pickle=False)
    except BundleError:
        raise
    except PermissionError as e:
        raise BundleError(f"{where}: cannot read the bundle: {e.strerror}") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, RecursionError,
            NotImplementedError, RuntimeError, zlib.error, zipfile.LargeZipFile) as e:
        # RuntimeError: an encrypted member; zlib.error: a corrupted deflate stream
        raise BundleError(f"{where}: corrupted or truncated bundle ({_one_line(e)})"
                          ) from None
    return manifest, version, arrays


def load_bundle(path: str | Path, expect_featuriser: Mapping[str, Any] | None = None
                ) -> Bundle:
    """Read and verify a bundle; any problem is a one-line ``BundleError``."""
    p = Path(path)
    where = str(p)
    if p.is_dir():
        raise BundleError(f"{where}: is a directory, not a bundle file")
    if not p.is_file():
        raise BundleError(f"{where}: no such bundle file")
    manifest, version, arrays = _read(p, where)
    f = _Fields(where, manifest)
    if _payload_hash(arrays) != f.sha("payload_sha256"):
        raise BundleError(f"{where}: payload checksum mismatch (corrupted bundle)")
    if version >= 2:
        sha = f.sha("sha256")
        if manifest_sha256(manifest) != sha:
            raise BundleError(f"{where}: manifest checksum mismatch (the manifest was edited "
                              "or corrupted)")
    else:  # version 1: the payload hash only (see the module docstring)
        sha = manifest["payload_sha256"]
    bundle = _build(where, manifest, arrays, sha)
    bundle.format_version = version
    if expect_featuriser is not None and not _same_featuriser(bundle.featuriser,
                                                               expect_featuriser):
        feat = bundle.featuriser
        raise BundleError(
            f"{where}: featuriser mismatch: bundle was trained with "
            f"{feat.get('name')} {json.dumps(feat, sort_keys=True)}, "
            f"expected {json.dumps(dict(expect_featuriser), sort_keys=True)}"
        )
    return bundle


def bundle_summary(bundle: Bundle) -> dict[str, Any]:
    """Per-layer shape, non-zeros and sparsity, for ``mittd model describe``."""
    rows = []
    total = nnz = 0
    for node in bundle.graph.dense_nodes():
        k, b = bundle.params[node.name]
        z = int(np.count_nonzero(k))
        rows.append({"layer": node.name, "shape": f"{k.shape[0]}x{k.shape[1]}",
                     "weights": int(k.size + b.size), "nonzero": z + int(np.count_nonzero(b)),
                     "sparsity": 1.0 - z / k.size if k.size else 0.0})
        total += k.size
        nnz += z
    return {"layers": rows, "kernel_sparsity": 1.0 - nnz / total if total else 0.0}
