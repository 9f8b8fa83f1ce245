"""``mittd bench embedded``: what one in-process decision costs, beside its floors.

A storage server that links mittd in (``mittd.daemon.embedded.Embedded``) pays the
decision on its own IO path, so the number that matters is the decision next to
what the server pays anyway: the model alone (``engine.run1``), the unfused Python
path (an ``AdmissionCore`` with its compiled decision off), the general core
(``AdmissionCore.admit`` + ``complete``), the fused call, a bare 4 KiB O_DIRECT
``preadv`` (the device floor), a real QD1 read loop that decides every read, and
the model alone right after a read (a thread that blocked wakes on a cold CPU:
on a VM that alone costs several times the warm number). All of them are measured
in rounds, interleaved (the bare reads even read by read with the decided ones), so
a noisy shared machine slows all alike; per operation ``time.perf_counter_ns``
around the call, warm after a warm-up.

Everything here returns plain data (:func:`run_embedded` a dict) so ``mittd demo``
and the docs can reuse it; :func:`render` makes the table. Timings are never
asserted anywhere: they are per machine.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mittd.traces.schema import OP_READ

__all__ = [
    "DEVICE",
    "READ_BYTES",
    "TARGETS",
    "EmbeddedBenchError",
    "default_dir",
    "default_models",
    "machine",
    "read_file",
    "render",
    "run_embedded",
    "summarize",
]

MiB = 1 << 20
READ_BYTES = 4096  # one aligned 4 KiB read, the unit of every IO measured
DEVICE = "d0"  # the one device alias each model is served under
QS = (50.0, 90.0, 99.0, 99.9)
QKEYS = ("p50_us", "p90_us", "p99_us", "p999_us")
MIN_SIZE = MiB
MEMORY_FS = frozenset({"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"})  # no device under them
_CPU_BATCH = 512  # ops per timed batch when running for --seconds
_IO_BATCH = 32  # read pairs per timed batch
_CHUNK_WARMUP = 64  # untimed ops before every timed chunk: warm caches after a switch
# (name, what, limit, unit): the targets for the fused in-process API
TARGETS = (
    ("fused_p50", "admit+complete p50 (warm, no IO)", 5.0, "µs"),
    ("loop_overhead_p50", "read-loop overhead p50 (loop − bare preadv)", 10.0, "µs"),
    ("loop_overhead_p99_share", "decision p99 in the read loop / device p99 read", 0.10,
     "share"),
)
_DEFAULT_ORDER = ("heimdall", "linnos", "precise_linear_node95", "precise_linear_hist_node95")


class EmbeddedBenchError(Exception):
    """The benchmark cannot run as asked; the message is one line naming the option."""


class _Terminated(SystemExit):
    """SIGTERM while running: unwinds like Ctrl-C so the read file is removed."""


# -- defaults and the machine --------------------------------------------------------------


def default_models() -> list[Path]:
    """Every shipped bundle (``predictor/bundles/*.mittd``), the four known ones first."""
    from mittd.predictor.shipped import BUNDLES_DIR

    found = {p.stem: p for p in sorted(BUNDLES_DIR.glob("*.mittd"))}
    first = [found.pop(n) for n in _DEFAULT_ORDER if n in found]
    return first + list(found.values())


def default_dir() -> Path:
    """The repository's ``out/`` when writable (disk-backed here), else the cwd: never
    the temp dir, which is often tmpfs and refuses O_DIRECT."""
    out = Path(__file__).resolve().parents[2] / "out"
    if out.is_dir() and os.access(out, os.W_OK):
        return out
    return Path.cwd()


def _fs_type(path: Path) -> str:
    """The file system type of ``path`` from /proc/mounts (longest mount prefix)."""
    best, kind = "", "unknown"
    try:
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                mnt = parts[1].replace("\\040", " ")
                if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and \
                        len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def machine() -> dict[str, Any]:
    """What the numbers are per: CPUs, CPU model, Python, numpy, numba."""
    import numba

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": cpu or "unknown",
            "processor": platform.processor() or platform.machine(),
            "kernel": platform.release(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__}


def summarize(samples_ns: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """n, p50/p90/p99/p99.9 and mean of per-op times, in µs (empty: n = 0 only)."""
    a = np.asarray(samples_ns, np.float64) / 1e3
    if not len(a):
        return {"n": 0}
    ps = np.percentile(a, QS)
    out: dict[str, Any] = {"n": len(a)}
    out.update({k: float(v) for k, v in zip(QKEYS, ps, strict=True)})
    out["mean_us"] = float(a.mean())
    return out


# -- the read file -------------------------------------------------------------------------


def check_dir(directory: Path, size: int) -> None:
    """The read file can go in ``directory``: a writable dir, O_DIRECT, room for it."""
    from mittd.traces.collect import direct_io_error

    if not directory.is_dir():
        raise EmbeddedBenchError(f"--dir {directory}: not a directory")
    if not os.access(directory, os.W_OK):
        raise EmbeddedBenchError(f"--dir {directory}: not writable")
    fs = _fs_type(directory)
    if fs in MEMORY_FS:  # recent kernels let tmpfs take O_DIRECT: a memcpy, no device floor
        raise EmbeddedBenchError(
            f"--dir {directory}: {fs} is memory, not a disk (its O_DIRECT reads are copies); "
            "pass --dir on a disk-backed file system, or --no-io")
    e = direct_io_error(directory)
    if e is not None:
        raise EmbeddedBenchError(
            f"--dir {directory}: the file system ({fs}) refuses O_DIRECT ({e.strerror}); "
            "pass --dir on a disk-backed file system, or --no-io")
    free = shutil.disk_usage(directory).free
    if free < size + 16 * MiB:
        raise EmbeddedBenchError(f"--dir {directory}: {size / MiB:,.0f} MiB needed for the "
                                 f"read file, {free / MiB:,.0f} MiB free; use a smaller --size")


@contextlib.contextmanager
def read_file(directory: Path, size: int, seed: int,
              say: Callable[[str], None] = lambda _m: None) -> Iterator[Path]:
    """A ``size``-byte file of random data (written, fsynced, dropped from the page
    cache: real blocks, not fallocated holes the file system answers without the
    disk) in a fresh temp dir under ``directory``; removed on exit, whatever happens."""
    check_dir(directory, size)
    work = Path(tempfile.mkdtemp(prefix="mittd-bench-embedded-", dir=directory))
    try:
        path = work / "reads.bin"
        say(f"… writing the {size / MiB:,.0f} MiB read file {path}")
        rng = np.random.default_rng(seed)
        block = bytearray(rng.bytes(MiB))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            left, i = size, 0
            while left > 0:
                block[:8] = i.to_bytes(8, "little")  # every MiB differs: no dedup
                n = min(left, MiB)
                os.write(fd, memoryview(block)[:n])
                left -= n
                i += 1
            os.fsync(fd)
            with contextlib.suppress(AttributeError, OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        yield path
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _term_unwinds() -> Iterator[None]:
    """SIGTERM raises (so ``finally`` blocks remove the read file); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated(128 + signum)

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# -- the measurements: each step(n) runs n timed ops and returns lists of ns -----------------

Step = Callable[[int], dict[str, list[int]]]


def _collect(step: Step, ops: int | None, seconds: float, batch: int) -> dict[str, list[int]]:
    """``step(ops)``, or batches of ``step(batch)`` until ``seconds`` have passed; a few
    untimed ops first (the chunk's warm-up)."""
    step(_CHUNK_WARMUP if batch > _IO_BATCH else 4)
    if ops:
        return step(ops)
    out: dict[str, list[int]] = {}
    end = time.perf_counter() + seconds
    while True:
        for k, v in step(batch).items():
            out.setdefault(k, []).extend(v)
        if time.perf_counter() >= end:
            return out


def timer_step(n: int) -> dict[str, list[int]]:
    """Two ``perf_counter_ns`` calls back to back: the floor under every other row."""
    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        out[i] = clock() - t0
    return {"ns": out}


def engine_step(engine: Any) -> Step:
    """``engine.run1()`` on a filled input: the model alone, no featurising."""
    run1 = engine.run1

    def step(n: int) -> dict[str, list[int]]:
        clock = time.perf_counter_ns
        out = [0] * n
        for i in range(n):
            t0 = clock()
            run1()
            out[i] = clock() - t0
        return {"ns": out}

    return step


class _Inputs:
    """Random aligned 4 KiB offsets in the file and plausible latencies, cycled."""

    def __init__(self, size: int, seed: int, n: int = 1 << 16) -> None:
        rng = np.random.default_rng(seed)
        blocks = max(1, size // READ_BYTES)
        self.offsets = (rng.integers(0, blocks, n) * READ_BYTES).tolist()
        # what a virtio disk answers, roughly: median 100 µs, a tail past the SLO
        self.latencies = rng.lognormal(math.log(100.0), 0.6, n).round(1).tolist()
        self.mask = n - 1
        self.i = 0


def _split(out: list[int], ok: list[bool]) -> dict[str, list[int]]:
    """All ops, and the admitted ones alone: a rejected IO is never completed, so
    only those pay the whole admit + complete (what the targets are about)."""
    return {"ns": out, "admitted": [t for t, a in zip(out, ok, strict=True) if a]}


def general_step(core: Any, inputs: _Inputs) -> Step:
    """``AdmissionCore.admit`` + ``complete`` (the clock reads the caller must make
    included), the general Python path the fused call replaces."""
    admit, complete = core.admit, core.complete
    rid = [0]

    def step(n: int) -> dict[str, list[int]]:
        clock = time.perf_counter_ns
        offs, lats, mask = inputs.offsets, inputs.latencies, inputs.mask
        j, r = inputs.i, rid[0]
        out = [0] * n
        ok = [False] * n
        for i in range(n):
            off = offs[j & mask]
            lat = lats[j & mask]
            j += 1
            r += 1
            t0 = clock()
            if admit(DEVICE, OP_READ, off, READ_BYTES, 0, r, t0 // 1000).admit:
                complete(DEVICE, r, lat, clock() // 1000)
                out[i] = clock() - t0
                ok[i] = True
            else:
                out[i] = clock() - t0
        inputs.i, rid[0] = j, r
        return _split(out, ok)

    return step


def fused_step(adm: Any, inputs: _Inputs) -> Step:
    """``Embedded.admit`` + ``Embedded.complete``: the fused in-process call."""
    admit, complete = adm.admit, adm.complete

    def step(n: int) -> dict[str, list[int]]:
        clock = time.perf_counter_ns
        offs, lats, mask = inputs.offsets, inputs.latencies, inputs.mask
        j = inputs.i
        out = [0] * n
        ok = [False] * n
        for i in range(n):
            off = offs[j & mask]
            lat = lats[j & mask]
            j += 1
            t0 = clock()
            t = admit(DEVICE, OP_READ, off, READ_BYTES, 0)
            if t:
                complete(DEVICE, t, lat)
                out[i] = clock() - t0
                ok[i] = True
            else:
                out[i] = clock() - t0
        inputs.i = j
        return _split(out, ok)

    return step


BURST = 64  # IOs per burst of the burst rows (an AdmitStream column block)


def burst_step(core: Any, inputs: _Inputs) -> Step:
    """``AdmissionCore.admit_burst`` of :data:`BURST` reads + ``complete_burst`` of the
    admitted ones, per IO (one sample per burst: its time / BURST): the daemon's
    AdmitStream path without the RPC."""
    rid = [0]
    ops = np.full(BURST, OP_READ, np.int64)
    lengths = np.full(BURST, READ_BYTES, np.int64)
    deadlines = np.zeros(BURST)

    def step(n: int) -> dict[str, list[int]]:
        clock = time.perf_counter_ns
        offs, lats, mask = inputs.offsets, inputs.latencies, inputs.mask
        admit, complete = core.admit_burst, core.complete_burst
        out = [0] * max(1, n // BURST)
        for i in range(len(out)):
            j = inputs.i
            idx = [(j + t) & mask for t in range(BURST)]
            off = np.array([offs[t] for t in idx], np.int64)
            lat = np.array([lats[t] for t in idx])
            ids = np.arange(rid[0] + 1, rid[0] + 1 + BURST, dtype=np.int64)
            inputs.i, rid[0] = j + BURST, rid[0] + BURST
            t0 = clock()
            d = admit(DEVICE, ops, off, lengths, deadlines, ids, t0 // 1000)
            complete(DEVICE, ids[d.admit], lat[d.admit], clock() // 1000)
            out[i] = (clock() - t0) // BURST
        return {"ns": out}

    return step


def _core_as_api(core: Any) -> tuple[Callable[..., int], Callable[..., bool]]:
    """The general core behind Embedded's admit/complete signatures (ticket = request
    id), so the read loop runs on it when ``mittd.daemon.embedded`` is missing."""
    rid = [0]
    clock = time.perf_counter_ns

    def admit(device: str, op: int, offset: int, length: int, deadline_us: float) -> int:
        rid[0] += 1
        ok = core.admit(device, op, offset, length, deadline_us, rid[0], clock() // 1000).admit
        return rid[0] if ok else 0

    def complete(device: str, ticket: int, latency_us: float) -> bool:
        return core.complete(device, ticket, latency_us, clock() // 1000)

    return admit, complete


def read_loop_step(fd: int, admit: Callable[..., int], complete: Callable[..., bool],
                   inputs: _Inputs) -> Step:
    """QD1 reads in the order bare, decided, decided, bare, ... (ABBA: neither kind
    always goes first). Both kinds take the same four clock stamps
    t0 [admit] t1 preadv t2 [complete] t3, so loop − bare totals is the decision
    alone; t2 − t1 is the device's read, (t1 − t0) + (t3 − t2) the decision in place.
    A rejected read is still read (and not completed): the bench costs, it does not
    fail over; rejections are counted."""
    buf = mmap.mmap(-1, READ_BYTES)  # page-aligned, as O_DIRECT needs
    bufs = [buf]

    def step(n: int) -> dict[str, list[int]]:
        clock = time.perf_counter_ns
        preadv = os.preadv
        offs, mask = inputs.offsets, inputs.mask
        j = inputs.i
        bare_total, bare_dev, loop_total, loop_dev, decision = [], [], [], [], []
        loop_ok, decision_ok = [], []
        rejected = 0
        for k in range(2 * n):
            off = offs[j & mask]
            j += 1
            if (k & 1) == ((k >> 1) & 1):  # k % 4 in (0, 3): bare
                t0 = clock()
                t1 = clock()
                preadv(fd, bufs, off)
                t2 = clock()
                t3 = clock()
                bare_total.append(t3 - t0)
                bare_dev.append(t2 - t1)
            else:
                t0 = clock()
                t = admit(DEVICE, OP_READ, off, READ_BYTES, 0)
                t1 = clock()
                preadv(fd, bufs, off)
                t2 = clock()
                if t:
                    complete(DEVICE, t, (t2 - t1) / 1000.0)
                    t3 = clock()
                    loop_ok.append(t3 - t0)
                    decision_ok.append(t3 - t0 - (t2 - t1))
                else:
                    t3 = clock()
                    rejected += 1
                loop_total.append(t3 - t0)
                loop_dev.append(t2 - t1)
                decision.append(t3 - t0 - (t2 - t1))
        inputs.i = j
        return {"bare": bare_total, "device": bare_dev, "loop": loop_total,
                "loop_admitted": loop_ok, "loop_device": loop_dev, "decision": decision,
                "decision_admitted": decision_ok, "rejected": [rejected]}

    return step


def engine_after_read_step(fd: int, engine: Any, inputs: _Inputs) -> Step:
    """``engine.run1()`` timed right after an (untimed) QD1 read: the model alone once
    the thread has blocked, so the CPU's caches and predictors went cold (the floor
    under a decision made in a read loop; the warm rows above do not see it)."""
    run1 = engine.run1
    buf = mmap.mmap(-1, READ_BYTES)
    bufs = [buf]

    def step(n: int) -> dict[str, list[int]]:
        clock = time.perf_counter_ns
        preadv = os.preadv
        offs, mask = inputs.offsets, inputs.mask
        j = inputs.i
        out = [0] * n
        for i in range(n):
            preadv(fd, bufs, offs[j & mask])
            j += 1
            t0 = clock()
            run1()
            out[i] = clock() - t0
        inputs.i = j
        return {"ns": out}

    return step


# -- one model's rig ------------------------------------------------------------------------


@dataclass
class _Model:
    """What one bundle is measured through: the general core, Embedded, the engine."""

    name: str
    path: Path
    core: Any
    state: Any
    adm: Any  # an Embedded, or None when mittd.daemon.embedded is missing
    engine: Any
    py_core: Any = None  # an AdmissionCore whose fused kernel is off, when it has one
    fd: int = -1
    inputs: Any = None
    steps: dict[str, Step] = field(default_factory=dict)
    samples: dict[str, list[list[int]]] = field(default_factory=dict)  # per round
    rejected_in_loop: int = 0


def _engine_label(engine: Any) -> str:
    """``auto (dense, csr)``: the engine's name and its layers' formats."""
    try:
        d = engine.describe()
    except Exception:
        return type(engine).__name__
    layers = d.get("layers") or {}
    fmts = ", ".join(str(v.get("format", "?")) for v in layers.values()
                     if isinstance(v, dict))
    return f"{d.get('engine', '?')}" + (f" ({fmts})" if fmts else "")


def _load_embedded() -> tuple[Any, str | None]:
    """The Embedded class, or None and why (it is written alongside this bench)."""
    try:
        from mittd.daemon.embedded import Embedded
    except ImportError as e:
        return None, f"mittd.daemon.embedded is not importable ({e}): no fused row; the " \
                     "read loop runs on the general core"
    return Embedded, None


def _load_model(path: Path, engine: str, embedded_cls: Any) -> _Model:
    from mittd.daemon.admission import AdmissionCore
    from mittd.daemon.devices import DeviceError, build_state, read_bundle

    try:
        bundle = read_bundle(path, "--model")
        state = build_state(bundle, engine, where="--model")
        py_state = build_state(bundle, engine, where="--model")
        adm = embedded_cls.from_bundles({DEVICE: str(path)}, engine=engine) \
            if embedded_cls is not None else None
    except DeviceError as e:
        raise EmbeddedBenchError(f"--model {path}: {_one_line(e)}") from None
    except Exception as e:  # whatever the file or the API raised: one line
        raise EmbeddedBenchError(f"--model {path}: {type(e).__name__}: {_one_line(e)}") \
            from None
    settings = {"predict_budget_us": _server_default("predict_budget_us", 50.0),
                "probe_after": _server_default("probe_after", 32)}
    core = AdmissionCore({DEVICE: state}, **settings)
    # the Python path (featurise, run1, rules in Python): what the fused call replaced
    py_core = AdmissionCore({DEVICE: py_state}, fuse=False, **settings)
    eng = state.engine
    if adm is not None and hasattr(adm, "engine"):
        with contextlib.suppress(Exception):
            eng = adm.engine(DEVICE)
    return _Model(path.stem, path, core, state, adm, eng, py_core)


def _server_default(name: str, fallback: Any) -> Any:
    """A ``[server]`` setting's default, so the general core is built as ``mittd serve``
    builds it (prediction budget, probe rule)."""
    from dataclasses import MISSING, fields

    from mittd.daemon.config import ServerConfig

    for f in fields(ServerConfig):
        if f.name == name and f.default is not MISSING:
            return f.default
    return fallback


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _check(models: Sequence[str | Path] | None, ops: int | None, seconds: float | None,
           rounds: int, size: int, engine: str) -> tuple[list[Path], int | None, float]:
    from mittd.predictor.engines import ENGINE_NAMES

    if ops is not None and seconds is not None:
        raise EmbeddedBenchError("--ops and --seconds: give one of them, not both")
    if ops is not None and (not isinstance(ops, int) or ops < 1):
        raise EmbeddedBenchError(f"--ops must be an integer >= 1, got {ops}")
    if seconds is None:
        seconds = 0.5
    if not (isinstance(seconds, int | float) and 0 < seconds <= 600):
        raise EmbeddedBenchError(f"--seconds must be in (0, 600], got {seconds}")
    if not isinstance(rounds, int) or rounds < 1:
        raise EmbeddedBenchError(f"--rounds must be an integer >= 1, got {rounds}")
    if size < MIN_SIZE:
        raise EmbeddedBenchError(f"--size must be at least 1 MiB, got {size} bytes")
    if engine != "auto" and engine not in ENGINE_NAMES:
        raise EmbeddedBenchError(f"--engine {engine!r}: choose auto or one of "
                                 f"{', '.join(ENGINE_NAMES)}")
    paths = [Path(m) for m in models] if models else default_models()
    if not paths:
        raise EmbeddedBenchError("--model: no bundle given and none shipped in "
                                 "predictor/bundles/")
    for p in paths:
        if not p.is_file():
            raise EmbeddedBenchError(f"--model {p}: no such file")
    if len({p.stem for p in paths}) != len(paths):
        raise EmbeddedBenchError("--model: two bundles with the same name")
    return paths, ops, float(seconds)


# -- the run ---------------------------------------------------------------------------------


def run_embedded(models: Sequence[str | Path] | None = None, *, ops: int | None = None,
                 seconds: float | None = None, rounds: int = 5,
                 directory: str | Path | None = None, size: int = 256 * MiB, seed: int = 0,
                 io: bool = True, engine: str = "auto",
                 say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Measure every model's rows, interleaved in ``rounds``; returns plain data.

    Per round: the timer floor, then for each model (order rotated each round) the bare
    engine, the Python path, the general core and the fused call, then each model's
    read loop (with its own interleaved bare reads) and its engine after a read.
    ``ops`` (ops, or read pairs, per measurement and round) or ``seconds`` (default
    0.5) sizes each measurement. ``io=False`` skips the read file and the read rows.
    Raises :class:`EmbeddedBenchError` on bad input.
    """
    paths, ops, seconds = _check(models, ops, seconds, rounds, size, engine)
    base = Path(directory) if directory not in (None, "") else default_dir()
    if io:
        check_dir(base, size)  # before the minutes of loading and warming up
    embedded_cls, note = _load_embedded()
    notes = [note] if note else []
    with _term_unwinds():
        loaded = []
        for p in paths:
            say(f"… loading {p.name} (engine {engine})")
            loaded.append(_load_model(p, engine, embedded_cls))
        inputs = _Inputs(size, seed)
        with contextlib.ExitStack() as stack:
            fd = -1
            if io:
                f = stack.enter_context(read_file(base, size, seed, say))
                fd = os.open(f, os.O_RDONLY | os.O_DIRECT)
                stack.callback(os.close, fd)
            _build_steps(loaded, inputs, fd)
            _warm_up(loaded, ops, say)
            timer = _rounds(loaded, ops, seconds, rounds, say)
        return _report(loaded, timer, notes=notes, settings={
            "rounds": rounds, "ops": ops, "seconds": None if ops else seconds,
            "size": size, "seed": seed, "io": io, "engine": engine,
            "dir": str(base.absolute()) if io else None,
            "fs": _fs_type(base) if io else None})


def _build_steps(loaded: list[_Model], inputs: _Inputs, fd: int) -> None:
    for m in loaded:
        m.steps["general"] = general_step(m.core, inputs)
        m.steps["burst"] = burst_step(m.core, inputs)
        if m.py_core is not None:
            m.steps["python"] = general_step(m.py_core, inputs)
            m.steps["python_burst"] = burst_step(m.py_core, inputs)
        if m.adm is not None:
            m.steps["fused"] = fused_step(m.adm, inputs)
        if fd >= 0:
            api = (m.adm.admit, m.adm.complete) if m.adm is not None else _core_as_api(m.core)
            m.steps["loop"] = read_loop_step(fd, *api, inputs)
            m.fd, m.inputs = fd, inputs  # the engine-after-a-read step, once warm


def _warm_up(loaded: list[_Model], ops: int | None, say: Callable[[str], None]) -> None:
    """Every path once, untimed: numba compiles, caches and trackers fill; then the
    engine's input holds a real featurised IO (the general core's last one)."""
    say("… warming up")
    cpu = min(ops or 2000, 2000)
    for m in loaded:
        for k in ("python", "general", "fused", "burst", "python_burst"):
            if k in m.steps:
                m.steps[k](cpu)
        if m.engine.input.shape == m.state.input.shape:
            m.engine.input[:] = m.state.input
        m.steps["engine"] = engine_step(m.engine)
        m.steps["engine"](cpu)
        if "loop" in m.steps:
            m.steps["loop"](min(ops or 200, 200))
            m.steps["engine_cold"] = engine_after_read_step(m.fd, m.engine, m.inputs)
            m.steps["engine_cold"](min(ops or 100, 100))
    timer_step(cpu)


def _rounds(loaded: list[_Model], ops: int | None, seconds: float, rounds: int,
            say: Callable[[str], None]) -> list[list[int]]:
    """The interleaved rounds; samples land in each model's ``samples`` per round."""
    timer: list[list[int]] = []
    for r in range(rounds):
        say(f"… round {r + 1}/{rounds}")
        order = loaded[r % len(loaded):] + loaded[:r % len(loaded)]
        timer.append(_collect(timer_step, ops, seconds, _CPU_BATCH)["ns"])
        for m in order:
            for k in ("engine", "python", "general", "fused", "burst", "python_burst"):
                if k in m.steps:
                    got = _collect(m.steps[k], ops, seconds, _CPU_BATCH)
                    m.samples.setdefault(k, []).append(got["ns"])
                    if "admitted" in got:
                        m.samples.setdefault(f"{k}_admitted", []).append(got["admitted"])
        for m in order:
            if "loop" in m.steps:
                got = _collect(m.steps["loop"], ops, seconds, _IO_BATCH)
                m.rejected_in_loop += sum(got.pop("rejected"))
                for k, v in got.items():
                    m.samples.setdefault(k, []).append(v)
                got = _collect(m.steps["engine_cold"], ops, seconds, _IO_BATCH)
                m.samples.setdefault("engine_cold", []).append(got["ns"])
    return timer


def _row(per_round: list[list[int]] | None) -> dict[str, Any] | None:
    """Pooled percentiles plus each round's p50 (the noise between rounds)."""
    if not per_round or not any(per_round):
        return None
    s = summarize(np.concatenate([np.asarray(x, np.int64) for x in per_round]))
    s["round_p50_us"] = [float(np.percentile(x, 50)) / 1e3 for x in per_round if x]
    return s


def _stats(adm: Any, core: Any) -> dict[str, Any]:
    """The fused path's counters (the general core's without Embedded), plain."""
    from mittd.daemon.admission import COUNT_NAMES

    try:
        st = (adm if adm is not None else core).stats()[DEVICE]
    except Exception as e:
        return {"error": _one_line(e)}
    out: dict[str, Any] = {n: getattr(st, n) for n in COUNT_NAMES if hasattr(st, n)}
    h = getattr(st, "predict_ns", None)
    if h is not None and getattr(h, "count", 0):
        out["predict_ns_mean"] = h.sum / h.count
    return out


MIN_ADMITTED = 100  # admitted samples needed to judge a target on admitted IOs alone


def _basis(rows: dict[str, Any], key: str) -> tuple[dict[str, Any] | None, str]:
    """The row a target is judged on: the admitted ops (they pay admit AND complete)
    when there are enough of them, else every op."""
    adm = rows.get(f"{key}_admitted")
    if adm and adm["n"] >= MIN_ADMITTED:
        return adm, "admitted"
    return rows.get(key), "all"


def _overhead(rows: dict[str, Any], m: _Model) -> dict[str, Any] | None:
    """Loop − bare preadv (totals, same stamps), the decision in place, the device p99."""
    bare, dev = rows.get("bare"), rows.get("device")
    loop, loop_basis = _basis(rows, "loop")
    dec, _ = _basis(rows, "decision")
    if not (loop and bare and dev and dec):
        return None
    p99 = dev["p99_us"]
    all_loop = rows["loop"]
    return {
        "basis": loop_basis,  # which decided reads the numbers below are over
        "p50_us": loop["p50_us"] - bare["p50_us"],
        "p99_us": loop["p99_us"] - bare["p99_us"],
        "all_reads_p50_us": all_loop["p50_us"] - bare["p50_us"],
        "all_reads_p99_us": all_loop["p99_us"] - bare["p99_us"],
        "decision_p50_us": dec["p50_us"], "decision_p99_us": dec["p99_us"],
        "device_p99_us": p99,
        "share_of_device_p99": dec["p99_us"] / p99 if p99 > 0 else None,
        "diff_share_of_device_p99": (loop["p99_us"] - bare["p99_us"]) / p99 if p99 > 0
        else None,
        "loop_api": "fused" if m.adm is not None else "general",
        "rejected_reads": m.rejected_in_loop,
    }


def _targets(rows: dict[str, Any], overhead: dict[str, Any] | None,
             fused: bool) -> list[dict[str, Any]]:
    """The issue's targets for the fused API, with the value and met / not met."""
    f, f_basis = _basis(rows, "fused")
    got = {
        "fused_p50": (f["p50_us"] if f else None, f_basis),
        "loop_overhead_p50": (overhead["p50_us"] if overhead and fused else None,
                              overhead["basis"] if overhead else ""),
        "loop_overhead_p99_share": (overhead["share_of_device_p99"] if overhead and fused
                                    else None, overhead["basis"] if overhead else ""),
    }
    out = []
    for name, what, limit, unit in TARGETS:
        value, basis = got[name]
        out.append({"name": name, "what": what, "limit": limit, "unit": unit,
                    "value": value, "basis": basis if value is not None else "",
                    "met": None if value is None else bool(value <= limit)})
    return out


def _report(loaded: list[_Model], timer: list[list[int]], *, notes: list[str],
            settings: dict[str, Any]) -> dict[str, Any]:
    models = []
    all_bare: list[list[int]] = []
    for m in loaded:
        rows = {k: _row(v) for k, v in m.samples.items()}
        all_bare += m.samples.get("device", [])
        overhead = _overhead(rows, m)
        models.append({
            "model": m.name, "path": str(m.path),
            "engine": _engine_label(m.engine), "core_engine": _engine_label(m.state.engine),
            "core_fused": getattr(m.core, "_fuse", None),
            "features": int(m.state.featuriser.dim),
            "default_deadline_us": float(m.state.default_deadline_us),
            "rows": rows, "overhead": overhead,
            "targets": _targets(rows, overhead, m.adm is not None),
            "stats": _stats(m.adm, m.core),
            "stats_of": "Embedded" if m.adm is not None else "general core",
        })
    return {"machine": machine(), "settings": settings, "timer": _row(timer),
            "device": _row(all_bare), "models": models, "notes": notes}


# -- the table ---------------------------------------------------------------------------------

_LABELS = (
    ("engine", "bare engine: engine.run1()"),
    ("python", "Python path: AdmissionCore unfused, admit + complete"),
    ("python_admitted", "  admitted ones"),
    ("general", "general core: AdmissionCore.admit + complete"),
    ("general_admitted", "  admitted ones"),
    ("fused", "fused: Embedded.admit + complete"),
    ("fused_admitted", "  admitted ones"),
    ("burst", f"burst of {BURST} (AdmitStream path): admit_burst + complete_burst, per IO"),
    ("python_burst", "  the same unfused: featurise kernel, batched model, rules"),
    ("device", "bare preadv 4 KiB O_DIRECT QD1"),
    ("bare", "  the same, with the loop's 4 clock stamps"),
    ("loop", "read loop: admit → preadv → complete"),
    ("loop_admitted", "  admitted reads"),
    ("decision", "decision inside the loop"),
    ("decision_admitted", "  admitted reads"),
    ("engine_cold", "bare engine right after a read (cold CPU)"),
)
_IO_ROWS = ("device", "bare", "loop", "loop_admitted", "decision", "decision_admitted",
            "engine_cold")


def _us(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"


def _line(label: str, s: dict[str, Any] | None) -> str:
    if not s:
        return f"| {label} | – | – | – | – | – | – |"
    spread = s.get("round_p50_us") or []
    rng = f"{_us(min(spread))}–{_us(max(spread))}" if len(spread) > 1 else "–"
    return (f"| {label} | {s['n']:,} | {_us(s['p50_us'])} | {_us(s['p90_us'])} | "
            f"{_us(s['p99_us'])} | {_us(s['p999_us'])} | {rng} |")


def _model_lines(m: dict[str, Any], io: bool) -> list[str]:
    rows = m["rows"]
    o = m["overhead"]
    lines = ["", f"## {m['model']}: {m['features']} features, engine {m['engine']}, "
             f"default deadline {m['default_deadline_us']:g} µs", "",
             "| operation | n | p50 | p90 | p99 | p99.9 | round p50s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in _LABELS:
        if key in _IO_ROWS and not io:
            continue
        if key.endswith("_admitted"):  # only worth a row when some ops were rejected
            whole, part = rows.get(key.removesuffix("_admitted")), rows.get(key)
            if not part or not whole or part["n"] == whole["n"]:
                continue
        elif key in ("loop", "decision") and o and o["loop_api"] == "general":
            label += " (general core)"
        lines.append(_line(label, rows.get(key)))
    if o:
        lines.append(f"| overhead: loop − bare preadv ({o['basis']} reads) | | "
                     f"{_us(o['p50_us'])} | | {_us(o['p99_us'])} | | |")
        share, diff = o["share_of_device_p99"], o["diff_share_of_device_p99"]
        lines += ["", f"device p99 read {_us(o['device_p99_us'])} µs; decision p99 in the loop "
                  f"{_us(o['decision_p99_us'])} µs = {'–' if share is None else f'{share:.1%}'} "
                  f"of it (loop − bare p99: {'–' if diff is None else f'{diff:+.1%}'}); "
                  f"{o['rejected_reads']:,} decided reads rejected (read anyway, not "
                  "completed)"]
    else:
        lines.append("")
    for tg in m["targets"]:
        if tg["value"] is None:
            if tg["name"] != "fused_p50" and not io:
                continue
            val, verdict = "–", "n/a (no Embedded)"
        else:
            val = f"{tg['value']:.1%}" if tg["unit"] == "share" else f"{_us(tg['value'])} µs"
            val += f" ({tg['basis']} {'reads' if tg['name'] != 'fused_p50' else 'ops'})"
            verdict = "met" if tg["met"] else "NOT met"
        lim = f"{tg['limit']:.0%}" if tg["unit"] == "share" else f"{tg['limit']:g} µs"
        lines.append(f"target {tg['what']} ≤ {lim}: {val} — {verdict}")
    s = m["stats"]
    if s and "error" not in s:
        lines.append(f"counters of the {m['stats_of']}: "
                     f"{s.get('admitted', 0):,} admitted, {s.get('rejected', 0):,} rejected, "
                     f"{s.get('probes', 0):,} probes, {s.get('overruns', 0):,} overruns, "
                     f"{s.get('fail_open', 0):,} fail-open")
    return lines


def render(r: dict[str, Any]) -> str:
    """The result as markdown-ish tables, one per model, the targets beside."""
    mc, st = r["machine"], r["settings"]
    per = f"{st['ops']:,} ops" if st["ops"] else f"{st['seconds']:g} s"
    lines = [
        f"machine: {mc['cpus']} CPUs, {mc['cpu_model']} ({mc['processor']}); Python "
        f"{mc['python']}, numpy {mc['numpy']}, numba {mc['numba']}",
        f"{st['rounds']} interleaved rounds, {per} per measurement and round, warm; "
        f"µs per operation (perf_counter_ns around it); engine {st['engine']}",
    ]
    if st["io"]:
        lines.append(f"reads: 4 KiB at random aligned offsets of a {st['size'] / MiB:,.0f} MiB "
                     f"file in {st['dir']} ({st['fs']}), O_DIRECT, QD1; bare and decided "
                     "reads alternate (ABBA)")
    t = r["timer"]
    if t:
        lines.append(f"timer floor (two perf_counter_ns back to back): p50 {_us(t['p50_us'])} "
                     f"µs, p99 {_us(t['p99_us'])} µs")
    for m in r["models"]:
        lines += _model_lines(m, st["io"])
    if r["device"] and st["io"]:
        d = r["device"]
        lines += ["", f"device floor, all bare reads pooled: p50 {_us(d['p50_us'])} µs, p99 "
                  f"{_us(d['p99_us'])} µs, p99.9 {_us(d['p999_us'])} µs ({d['n']:,} reads)"]
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)
