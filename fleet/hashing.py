"""What makes a device's bundle up to date: one SHA-256 over everything it was
trained from.

Why: a nightly fleet retrain must skip the devices whose recorded IOs, model, SLO
and settings did not change (resumable after a crash or Ctrl-C, too), and must
retrain every other one. The hash covers the bytes of every trace file (read
streaming, 1 MiB at a time; a directory or glob of segments is its sorted files,
each with its name and size), the model, the SLO, the training settings and the
mittd version (a new release may train differently). It is kept in a sidecar,
``<device>.inputs.json`` next to ``<device>.mittd``, with the bundle's own SHA-256,
so a bundle replaced by hand is not taken for the one the hash describes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mittd.fleet.manifest import DeviceJob
from mittd.traces.atomic import write_text
from mittd.traces.records import segment_paths

__all__ = ["file_sha256", "inputs_sha", "mittd_version", "read_sidecar", "sidecar_path",
           "up_to_date", "write_sidecar"]

CHUNK = 1 << 20


def mittd_version() -> str:
    try:
        return version("mittd")
    except PackageNotFoundError:
        return "unknown"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def inputs_sha(job: DeviceJob, settings: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the job's trace bytes, model, SLO, ``settings`` (JSON-able)
    and the mittd version; a missing trace raises TraceError (an error row)."""
    h = hashlib.sha256()
    head = {"model": job.model, "slo": job.slo, "settings": dict(settings),
            "mittd": mittd_version(), "traces": len(job.traces)}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for spec in job.traces:
        for f in segment_paths(spec):
            h.update(f"\0{f.name}\0{f.stat().st_size}\0".encode())
            with open(f, "rb") as src:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
    return h.hexdigest()


def sidecar_path(bundle: str | Path) -> Path:
    b = Path(bundle)
    return b.with_name(b.stem + ".inputs.json")


def read_sidecar(bundle: str | Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(sidecar_path(bundle).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_sidecar(bundle: str | Path, sha: str, job: DeviceJob, settings: Mapping[str, Any],
                  row: Mapping[str, Any]) -> None:
    """Record (atomically, after the bundle itself) what ``bundle`` was trained from."""
    doc = {"fleet_inputs_sha256": sha, "bundle_sha256": file_sha256(bundle),
           "job": job.to_dict(), "settings": dict(settings), "mittd": mittd_version(),
           "row": dict(row)}
    write_text(sidecar_path(bundle), json.dumps(doc, indent=1, default=float) + "\n")


def up_to_date(bundle: str | Path, sha: str) -> dict[str, Any] | None:
    """The sidecar of ``bundle`` when the bundle exists, is the one recorded and was
    trained from inputs hashing to ``sha``; else None (train it)."""
    b = Path(bundle)
    doc = read_sidecar(b)
    if not b.is_file() or doc is None or doc.get("fleet_inputs_sha256") != sha:
        return None
    try:
        if file_sha256(b) != doc.get("bundle_sha256"):
            return None
    except OSError:
        return None
    return doc
