"""Which devices a fleet run covers: a directory, a glob or a manifest of traces.

Why one loader: ``fleet train``, ``replay``, ``tune`` and ``bench`` must agree on
what a device is and what its traces are, and a bad manifest must be one line that
names the file and the line (or field) before any cluster starts.
"""

from __future__ import annotations

import csv
import glob
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mittd.predictor.models import MODELS
from mittd.traces.records import GLOB_CHARS, PARTIAL_SUFFIX, SEGMENT_SUFFIX

__all__ = ["DEFAULT_MODEL", "DEFAULT_SLO", "DeviceJob", "FleetError", "load_fleet"]

DEFAULT_MODEL = "precise_linear"  # as ``mittd train``
DEFAULT_SLO = "auto"
MANIFEST_SUFFIXES = (".csv", ".json")
# not traces, when a directory is the fleet
NOT_TRACES = (".md", ".txt", ".rst", ".mittd", ".png", ".log")
DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")
MANIFEST_KEYS = ("device", "trace", "model", "slo", "class")


class FleetError(Exception):
    """A fleet command cannot run as asked (a bad manifest, no devices); one line."""


@dataclass(frozen=True)
class DeviceJob:
    """One device of the fleet: its name (the bundle is ``<device>.mittd``), its
    trace(s) — files, directories or globs of segments, as ``mittd train`` takes —
    the model to train, the SLO to label with and, from a manifest, its device class
    (``fleet tune`` can tune one configuration per class)."""

    device: str
    traces: tuple[str, ...]
    model: str = DEFAULT_MODEL
    slo: str = DEFAULT_SLO
    device_class: str | None = None  # a manifest's ``class``: devices tuned together

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["traces"] = list(self.traces)
        return d


def _check_device(name: str, where: str) -> str:
    name = name.strip()
    if not DEVICE_NAME.fullmatch(name):
        raise FleetError(f"{where}: device name {name!r} must be letters, digits and . _ @ + - "
                         "(it names the bundle file), starting with a letter or digit")
    return name


def _check_model(name: str, where: str) -> str:
    if name not in MODELS:
        raise FleetError(f"{where}: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return name


def _unique(jobs: Iterable[DeviceJob], where: str) -> list[DeviceJob]:
    seen: dict[str, DeviceJob] = {}
    for j in jobs:
        if j.device in seen:
            first = seen[j.device].traces[0]
            raise FleetError(f"{where}: device {j.device!r} appears twice ({first} and "
                             f"{j.traces[0]}); name the devices in a manifest")
        seen[j.device] = j
    if not seen:
        raise FleetError(f"{where}: no device found (expected trace files, directories of "
                         "segments, or a manifest .csv/.json)")
    return list(seen.values())


def _is_trace_file(p: Path) -> bool:
    return (p.is_file() and not p.name.startswith(".") and not p.name.endswith(PARTIAL_SUFFIX)
            and p.suffix.lower() not in NOT_TRACES and not p.name.endswith(".inputs.json"))


def _from_paths(paths: Sequence[Path], model: str, slo: str, where: str) -> list[DeviceJob]:
    jobs = []
    for p in paths:
        if p.is_dir():  # one device's segments (the daemon's IO records); a report or
            if not any(p.rglob("*" + SEGMENT_SUFFIX)):  # other folder is not a device
                continue
            jobs.append(DeviceJob(_check_device(p.name, str(p)), (str(p),), model, slo))
        elif _is_trace_file(p):
            jobs.append(DeviceJob(_check_device(p.stem, str(p)), (str(p),), model, slo))
    return _unique(jobs, where)


def _resolve(trace: str, base: Path) -> str:
    p = Path(trace).expanduser()
    return str(p if p.is_absolute() else base / p)


def _job(row: Mapping[str, Any], where: str, base: Path, model: str, slo: str,
         traces: list[str]) -> DeviceJob:
    device = row.get("device")
    if not isinstance(device, str) or not device.strip():
        raise FleetError(f"{where}: missing device")
    if not traces or any(not t.strip() for t in traces):
        raise FleetError(f"{where}: device {device.strip()!r} has no trace")
    m = row.get("model") or model
    s = row.get("slo") or slo
    c = row.get("class") or None
    if not isinstance(m, str) or not isinstance(s, str) or not isinstance(c, str | None):
        raise FleetError(f"{where}: model, slo and class must be text")
    return DeviceJob(_check_device(device, where),
                     tuple(_resolve(t.strip(), base) for t in traces),
                     _check_model(m.strip(), where), s.strip(), c.strip() if c else None)


def _csv(path: Path, model: str, slo: str) -> list[DeviceJob]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FleetError(f"{path}: cannot read the manifest: {e}") from None
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1)
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise FleetError(f"{path}: empty manifest (expected a header: device,trace[,model,slo])")
    reader = csv.reader([ln for _, ln in lines])
    try:
        rows = list(reader)
    except csv.Error as e:
        raise FleetError(f"{path}: not CSV: {e}") from None
    header = [h.strip().lower() for h in rows[0]]
    hline = lines[0][0]
    unknown = [h for h in header if h not in MANIFEST_KEYS]
    if unknown or "device" not in header or "trace" not in header or len(set(header)) < len(header):
        raise FleetError(f"{path}:{hline}: header must name device and trace (and optionally "
                         f"model, slo, class) once each, got {','.join(rows[0])}")
    jobs = []
    for (lineno, _), row in zip(lines[1:], rows[1:], strict=True):
        where = f"{path}:{lineno}"
        if len(row) != len(header):
            raise FleetError(f"{where}: {len(row)} fields, expected {len(header)} "
                             f"({','.join(header)})")
        rec = dict(zip(header, row, strict=True))
        traces = [t for t in rec["trace"].split(";") if t.strip()] if rec["trace"].strip() else []
        jobs.append(_job(rec, where, path.parent, model, slo, traces))
    return _unique(jobs, str(path))


def _json(path: Path, model: str, slo: str) -> list[DeviceJob]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise FleetError(f"{path}: cannot read the manifest: {e}") from None
    except json.JSONDecodeError as e:
        raise FleetError(f"{path}:{e.lineno}: not JSON: {e.msg}") from None
    if isinstance(doc, Mapping):
        if set(doc) - {"devices"} or not isinstance(doc.get("devices"), list):
            raise FleetError(f"{path}: expected a list of devices or {{\"devices\": [...]}}")
        doc = doc["devices"]
    if not isinstance(doc, list):
        raise FleetError(f"{path}: expected a list of devices or {{\"devices\": [...]}}")
    jobs = []
    for i, rec in enumerate(doc):
        where = f"{path}: devices[{i}]"
        if not isinstance(rec, Mapping):
            raise FleetError(f"{where}: expected an object with device and trace")
        unknown = sorted(set(rec) - set(MANIFEST_KEYS))
        if unknown:
            raise FleetError(f"{where}: unknown field(s) {', '.join(unknown)} (known: "
                             f"{', '.join(MANIFEST_KEYS)})")
        t = rec.get("trace")
        traces = [t] if isinstance(t, str) else t
        if not isinstance(traces, list) or not all(isinstance(x, str) for x in traces):
            raise FleetError(f"{where}.trace: expected a path or a list of paths")
        jobs.append(_job(rec, where, path.parent, model, slo, traces))
    return _unique(jobs, str(path))


def load_fleet(spec: str | Path, *, model: str = DEFAULT_MODEL, slo: str = DEFAULT_SLO
               ) -> list[DeviceJob]:
    """The devices ``spec`` names, in a stable order (sorted by path, or manifest order).

    ``spec`` is a manifest (``.csv`` with a header ``device,trace[,model,slo,class]``, several
    traces ``;``-separated, or ``.json``: a list of ``{"device", "trace": path or list,
    "model", "slo", "class"}``; relative paths are from the manifest's directory), a directory
    (one device per trace file, named by its stem, and one per subdirectory of
    segments, named by the subdirectory) or a glob (one device per match). ``model``
    and ``slo`` are the defaults where a manifest leaves them out. A bad manifest or a
    name used twice is a one-line :class:`FleetError`."""
    _check_model(model, "--model")
    text = str(spec)
    if not text:
        raise FleetError("no fleet named (the path is empty)")
    p = Path(text).expanduser()
    if p.is_file() and p.suffix.lower() == ".csv":
        return _csv(p, model, slo)
    if p.is_file() and p.suffix.lower() == ".json":
        return _json(p, model, slo)
    if p.is_dir():
        return _from_paths(sorted(q for q in p.iterdir() if not q.name.startswith(".")),
                           model, slo, text)
    if p.is_file():  # one trace: a fleet of one
        return _from_paths([p], model, slo, text)
    if any(c in text for c in GLOB_CHARS):
        matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
        return _from_paths(matches, model, slo, text)
    raise FleetError(f"{text}: no such file or directory (expected a directory or glob of "
                     "traces, or a manifest .csv/.json)")
