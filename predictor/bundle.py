"""The model bundle: one self-contained file the daemon loads without TensorFlow.

A ``.mittd`` file is a zip archive (numpy's ``.npz`` layout) holding:

- ``manifest.json``: format name and version, the graph, the featuriser config,
  the latency threshold(s) the model was trained for and the decision
  threshold(s), the decision policy (``mittd.predictor.policy``), training
  provenance, per-layer storage, engine hints, and the sha256 of the payload;
- one array per stored tensor: ``<layer>.bias`` and either ``<layer>.kernel``
  (dense, Keras (in, out) layout) or ``<layer>.csr_data`` / ``.csr_indices`` /
  ``.csr_indptr`` (the kernel's transpose, (out, in), in CSR — the layout the
  sparse kernels read), whichever is smaller.

The loader refuses, with one line naming the file and the problem, a file that
is not a zip, is truncated or corrupted (zip CRC, or payload sha256), has a
newer or unknown format version, or whose featuriser does not match what the
caller expects (a model trained on other features would give garbage).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mittd.predictor.graph import Graph, GraphError, Params, check_params

FORMAT = "mittd-bundle"
VERSION = 1
MANIFEST = "manifest.json"


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

    @property
    def version_id(self) -> str:
        """Short id for logs and metrics: model name and the payload hash prefix."""
        return f"{self.graph.name}@{self.sha256[:12]}"

    def latency_thresholds_us(self) -> list[float]:
        return [float(t) for t in self.thresholds.get("latency_us", [])]

    def decision_thresholds(self) -> list[float]:
        n = self.graph.output_dim if self.graph.head == "sigmoid" else 1
        return [float(t) for t in self.thresholds.get("p_slow", [0.5] * n)]


def _payload_hash(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(json.dumps(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


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


def _decode_layer(name: str, info: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray]:
    n_in, n_out = (int(x) for x in info["shape"])
    bias = arrays[f"{name}.bias"]
    if info["storage"] == "dense":
        return arrays[f"{name}.kernel"], bias
    if info["storage"] == "csr":
        data = arrays[f"{name}.csr_data"]
        idx = arrays[f"{name}.csr_indices"]
        ptr = arrays[f"{name}.csr_indptr"]
        if len(ptr) != n_out + 1 or ptr[-1] != len(data) or len(idx) != len(data) or (
            len(idx) and (idx.min() < 0 or idx.max() >= n_in)
        ):
            raise BundleError(f"layer {name}: inconsistent sparse structure")
        kt = np.zeros((n_out, n_in), np.float32)
        rows = np.repeat(np.arange(n_out), np.diff(ptr))
        kt[rows, idx] = data
        return np.ascontiguousarray(kt.T), bias
    raise BundleError(f"layer {name}: unknown storage {info['storage']!r}")


def save_bundle(bundle: Bundle, path: str | Path) -> str:
    """Write ``bundle`` atomically; returns the payload sha256."""
    check_params(bundle.graph, bundle.params)
    arrays: dict[str, np.ndarray] = {}
    layers: dict[str, Any] = {}
    for name, (k, b) in bundle.params.items():
        a, info = _encode_layer(name, k, b)
        arrays.update(a)
        layers[name] = info
    sha = _payload_hash(arrays)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "graph": bundle.graph.to_dict(),
        "featuriser": bundle.featuriser,
        "thresholds": bundle.thresholds,
        "provenance": bundle.provenance,
        "hints": bundle.hints,
        "policy": bundle.policy,
        "layers": layers,
        "payload_sha256": sha,
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.save(buf, arrays[name], allow_pickle=False)
            z.writestr(f"{name}.npy", buf.getvalue())
    tmp.replace(path)
    bundle.sha256 = sha
    return sha


def _same_featuriser(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal configs, ignoring fitted statistics the caller cannot know."""
    skip = {"min", "max"}  # Heimdall's fitted ranges
    return {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }


def load_bundle(path: str | Path, expect_featuriser: Mapping[str, Any] | None = None
                ) -> Bundle:
    """Read and verify a bundle; any problem is a one-line ``BundleError``."""
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise BundleError(f"{where}: no such bundle file")
    try:
        with zipfile.ZipFile(p) as z:
            try:
                manifest = json.loads(z.read(MANIFEST))
            except KeyError:
                raise BundleError(f"{where}: not a mittd bundle (no {MANIFEST})") from None
            if manifest.get("format") != FORMAT:
                raise BundleError(f"{where}: not a mittd bundle (format "
                                  f"{manifest.get('format')!r})")
            version = manifest.get("version")
            if not isinstance(version, int) or version < 1:
                raise BundleError(f"{where}: bad bundle format version {version!r}")
            if version > VERSION:
                raise BundleError(f"{where}: bundle format version {version} is newer than "
                                  f"this mittd reads (<= {VERSION}); upgrade mittd")
            arrays = {}
            for info in z.infolist():
                if info.filename.endswith(".npy"):
                    with z.open(info) as f:
                        arrays[info.filename[:-4]] = np.load(
                            io.BytesIO(f.read()), allow_pickle=False)
    except BundleError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError,
            json.JSONDecodeError, zipfile.LargeZipFile) as e:
        raise BundleError(f"{where}: corrupted or truncated bundle ({e})") from None
    if _payload_hash(arrays) != manifest.get("payload_sha256"):
        raise BundleError(f"{where}: payload checksum mismatch (corrupted bundle)")
    try:
        graph = Graph.from_dict(manifest["graph"])
        params = {
            name: _decode_layer(name, info, arrays)
            for name, info in manifest["layers"].items()
        }
        check_params(graph, params)
    except (GraphError, KeyError, ValueError, TypeError) as e:
        raise BundleError(f"{where}: invalid model: {e}") from None
    featuriser = dict(manifest.get("featuriser") or {})
    dim = featuriser.get("dim")
    if dim is not None and int(dim) != graph.input_dim:
        raise BundleError(f"{where}: featuriser gives {dim} inputs but the model takes "
                          f"{graph.input_dim}")
    if expect_featuriser is not None and not _same_featuriser(featuriser, expect_featuriser):
        raise BundleError(
            f"{where}: featuriser mismatch: bundle was trained with "
            f"{featuriser.get('name')} {json.dumps(featuriser, sort_keys=True)}, "
            f"expected {json.dumps(dict(expect_featuriser), sort_keys=True)}"
        )
    return Bundle(graph, params, featuriser, dict(manifest.get("thresholds") or {}),
                  dict(manifest.get("provenance") or {}), dict(manifest.get("hints") or {}),
                  manifest["payload_sha256"], manifest.get("policy") or {})


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
