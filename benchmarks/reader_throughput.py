"""Reader throughput and memory benchmark for the MSR and fio trace readers.

Why: mittd must turn multi-GB public traces into canonical Parquet on small
machines, so two numbers matter: records per second (target >= 1M/s on 2 cores)
and peak memory that stays flat however large the input is (readers stream
fixed-size blocks). Each measurement therefore runs in a fresh Python
subprocess, so the peak RSS it reports is that one reader's, not the harness's
nor a previous run's.

Modes
  parse    iterate open_trace(path).batches() (format auto-detection, Arrow CSV
           parse, validation, conversion to canonical batches), counting rows.
  convert  the same, plus writing every batch to Parquet with TraceWriter (zstd),
           i.e. what `mittd trace convert` does.

Inputs are deterministic synthetic files from gen_traces.py (an MSR Cambridge
CSV and a fio 3.x *_lat.1.log), generated once per size under --data-dir and
reused. Every size in --scale-lines is measured as well as --lines, so a peak
RSS that grows with the file shows up in the second table.

Output columns (Markdown on stdout; per-run progress on stderr)
  records/s       rows / wall time; median of --runs runs, then each run.
  MB/s            input file bytes (10^6) / wall time, median.
  peak RSS MiB    the child's own high-water RSS (VmHWM; ru_maxrss off Linux).
  ru_maxrss MiB   getrusage(RUSAGE_SELF).ru_maxrss in the child. On Linux it
                  survives execve, so it can never read below the harness's
                  own RSS; the harness stays small so the two normally agree.
  RSS after imports  the child's RSS before it opens the trace: the floor.

Timing starts just before open_trace() and ends after the last batch (for
convert, after the Parquet file is closed); interpreter start-up and imports
are excluded. Inputs are read from the page cache (they were just written), so
this measures the reader, not the disk.

Examples
  python benchmarks/reader_throughput.py                 # 2M lines, plus 1M and 4M
  python benchmarks/reader_throughput.py --runs 5 --json results.json
  python benchmarks/reader_throughput.py --lines 1000000 --scale-lines  # no scaling sizes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_traces import GENERATORS  # noqa: E402

MODES = ("parse", "convert")
TARGET_RPS = 1_000_000


@dataclass
class Run:
    """One subprocess measurement."""

    format: str
    lines: int
    mode: str
    run: int
    rows: int
    bad_lines: int
    seconds: float
    file_bytes: int
    parquet_bytes: int
    base_rss_mib: float  # after imports, before reading
    peak_rss_mib: float  # the child's own peak RSS (VmHWM), see _peak_rss_mib
    ru_maxrss_mib: float  # the child's ru_maxrss, for comparison

    @property
    def rps(self) -> float:
        return self.rows / self.seconds

    @property
    def mbps(self) -> float:
        return self.file_bytes / 1e6 / self.seconds


def _status_mib(key: str) -> float | None:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MiB; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _maxrss_mib() -> float:
    """``ru_maxrss`` in MiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def _peak_rss_mib() -> float:
    """This process image's own peak RSS.

    ``ru_maxrss`` survives execve (getrusage(2)), and Python's subprocess uses vfork,
    so in a child it starts at the *launcher's* peak. VmHWM belongs to the new address
    space only, so it is preferred; ``ru_maxrss`` is the fallback off Linux, and is
    reported alongside (the harness keeps itself small so the two agree).
    """
    hwm = _status_mib("VmHWM")
    return hwm if hwm is not None else _maxrss_mib()


def child(mode: str, path: Path, block_bytes: int | None) -> dict[str, object]:
    """Body of one measurement; runs in its own process."""
    from mittd.traces.formats.base import ReadOptions
    from mittd.traces.registry import open_trace
    from mittd.traces.schema import TraceWriter, build_metadata

    options = ReadOptions(block_bytes=block_bytes) if block_bytes else ReadOptions()
    base = _status_mib("VmRSS") or _maxrss_mib()
    parquet_bytes = 0
    with tempfile.TemporaryDirectory(prefix="mittd-bench-") as tmp:
        out = Path(tmp) / "trace.parquet"
        t0 = time.perf_counter()
        stream = open_trace(path, "auto", options)
        if mode == "parse":
            rows = sum(b.num_rows for b in stream.batches())
        else:
            meta = build_metadata(stream.format.name, str(path))
            with TraceWriter(out, meta) as writer:
                for batch in stream.batches():
                    writer.write(batch)
            rows = writer.rows
        seconds = time.perf_counter() - t0
        if out.exists():
            parquet_bytes = out.stat().st_size
    return {
        "rows": rows,
        "bad_lines": stream.bad.count,
        "seconds": seconds,
        "base_rss_mib": base,
        "peak_rss_mib": _peak_rss_mib(),
        "ru_maxrss_mib": _maxrss_mib(),
        "parquet_bytes": parquet_bytes,
        "detected": stream.format.name,
    }


def measure(
    fmt: str, lines: int, mode: str, run: int, path: Path, block_bytes: int | None
) -> Run:
    """Run one measurement in a fresh interpreter and collect its report."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(path)]
    if block_bytes:
        cmd += ["--block-bytes", str(block_bytes)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"measurement failed ({' '.join(cmd)}):\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res["detected"] != fmt:
        raise SystemExit(f"{path}: auto-detected as {res['detected']!r}, expected {fmt!r}")
    if res["rows"] != lines or res["bad_lines"]:
        print(
            f"warning: {path} ({mode}): {res['rows']} rows, {res['bad_lines']} bad lines, "
            f"expected {lines} clean rows",
            file=sys.stderr,
        )
    return Run(
        fmt, lines, mode, run, res["rows"], res["bad_lines"], res["seconds"],
        path.stat().st_size, res["parquet_bytes"], res["base_rss_mib"], res["peak_rss_mib"],
        res["ru_maxrss_mib"],
    )


def inputs(
    data_dir: Path, lines: int, seed: int, formats: Sequence[str], regen: bool
) -> dict[str, Path]:
    """Generated input files for one size, reused when already present."""
    out = data_dir / f"lines-{lines}-seed-{seed}"
    paths = {f: out / GENERATORS[f][0] for f in formats}
    missing = [f for f, p in paths.items() if regen or not p.exists()]
    if missing:
        t0 = time.perf_counter()
        # In a subprocess, so the harness stays small (see _peak_rss_mib).
        cmd = [sys.executable, str(HERE / "gen_traces.py"), "--lines", str(lines)]
        cmd += ["--out", str(out), "--seed", str(seed)]
        for f in missing:
            cmd += ["--format", f]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(
            f"generated {lines} lines of {', '.join(missing)} in {out} "
            f"({time.perf_counter() - t0:.1f} s)",
            file=sys.stderr,
        )
    return paths


# -- reporting ------------------------------------------------------------------------


@dataclass
class Summary:
    """One (format, lines, mode): medians over its runs, peak RSS as the max."""

    format: str
    lines: int
    mode: str
    file_mb: float
    parquet_mb: float
    records_per_s_median: float
    records_per_s_runs: list[float]
    mb_per_s_median: float
    seconds_median: float
    peak_rss_mib: float
    ru_maxrss_mib: float
    base_rss_mib: float


def summarise(runs: Sequence[Run]) -> list[Summary]:
    """Group runs by (format, lines, mode) and reduce each group to one row."""
    groups: dict[tuple[str, int, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.format, r.lines, r.mode), []).append(r)
    return [
        Summary(
            format=fmt,
            lines=lines,
            mode=mode,
            file_mb=rs[0].file_bytes / 1e6,
            parquet_mb=rs[0].parquet_bytes / 1e6,
            records_per_s_median=statistics.median(r.rps for r in rs),
            records_per_s_runs=[r.rps for r in rs],
            mb_per_s_median=statistics.median(r.mbps for r in rs),
            seconds_median=statistics.median(r.seconds for r in rs),
            peak_rss_mib=max(r.peak_rss_mib for r in rs),
            ru_maxrss_mib=max(r.ru_maxrss_mib for r in rs),
            base_rss_mib=max(r.base_rss_mib for r in rs),
        )
        for (fmt, lines, mode), rs in groups.items()
    ]


def _m(x: float) -> str:
    return f"{x / 1e6:.2f}M"


def markdown(summary: Sequence[Summary], main_lines: int, target: float) -> str:
    """The results as Markdown: a throughput table and a memory-scaling table."""
    out = [
        "| format | lines | file MB | mode | records/s (median) | runs (records/s) | MB/s "
        "| peak RSS MiB | ru_maxrss MiB | RSS after imports MiB |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for s in sorted(summary, key=lambda s: (s.format, s.lines, MODES.index(s.mode))):
        runs = ", ".join(_m(x) for x in s.records_per_s_runs)
        out.append(
            f"| {s.format} | {s.lines:,} | {s.file_mb:.1f} | {s.mode} "
            f"| **{_m(s.records_per_s_median)}** | {runs} | {s.mb_per_s_median:.0f} "
            f"| {s.peak_rss_mib:.0f} | {s.ru_maxrss_mib:.0f} | {s.base_rss_mib:.0f} |"
        )
    sizes = sorted({s.lines for s in summary})
    if len(sizes) > 1:
        out += ["", "Peak RSS (MiB) by input size; it must not grow with the file:", ""]
        out.append(
            "| format | mode | " + " | ".join(f"{n:,} lines" for n in sizes)
            + f" | change {sizes[0]:,} → {sizes[-1]:,} |"
        )
        out.append("|---|---|" + "---:|" * (len(sizes) + 1))
        by = {(s.format, s.mode, s.lines): s.peak_rss_mib for s in summary}
        for fmt in sorted({s.format for s in summary}):
            for mode in MODES:
                if not all((fmt, mode, n) in by for n in sizes):
                    continue
                vals = [by[fmt, mode, n] for n in sizes]
                cells = " | ".join(f"{v:.0f}" for v in vals)
                out.append(f"| {fmt} | {mode} | {cells} | {round(vals[-1] - vals[0]):+d} MiB |")
    out += ["", f"Target: >= {_m(target)} records/s at {main_lines:,} lines:", ""]
    for s in summary:
        if s.lines == main_lines:
            verdict = "meets" if s.records_per_s_median >= target else "BELOW"
            out.append(
                f"- {s.format} {s.mode}: {_m(s.records_per_s_median)} records/s "
                f"({verdict} target)"
            )
    return "\n".join(out)


def environment() -> dict[str, object]:
    """What the numbers were measured on."""
    import numpy
    import pyarrow

    return {
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# -- command line ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--lines", type=int, default=2_000_000,
        help="lines per input file for the main measurement (default: 2000000; >= 1M advised)",
    )
    p.add_argument(
        "--scale-lines", type=int, nargs="*", default=[1_000_000, 4_000_000], metavar="N",
        help="extra input sizes for the memory-scaling check (default: 1000000 4000000; "
        "give the option with no value to skip)",
    )
    p.add_argument("--runs", type=int, default=3, help="runs per measurement (default: 3)")
    p.add_argument(
        "--formats", nargs="+", choices=sorted(GENERATORS), default=["msr", "fio"],
        help="formats to measure (default: msr fio)",
    )
    p.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES),
        help="parse: iterate batches only; convert: also write Parquet (default: both)",
    )
    p.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "mittd-bench",
        help="where generated inputs live (default: $TMPDIR/mittd-bench)",
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    p.add_argument("--regen", action="store_true", help="regenerate inputs even if present")
    p.add_argument(
        "--block-bytes", type=int, default=None,
        help="reader block size in bytes (default: the reader's own, ReadOptions.block_bytes)",
    )
    p.add_argument(
        "--target", type=float, default=TARGET_RPS,
        help="records/s each format should reach (default: 1000000)",
    )
    p.add_argument("--json", type=Path, help="also write every run and the summary as JSON here")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("path", nargs="?", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        if args.path is None:
            raise SystemExit("--child needs a trace path")
        print(json.dumps(child(args.child, args.path, args.block_bytes)))
        return 0
    if args.path is not None:
        raise SystemExit(f"unexpected argument: {args.path}")
    if args.lines < 1 or args.runs < 1 or any(n < 1 for n in args.scale_lines):
        raise SystemExit("--lines, --scale-lines and --runs must be >= 1")
    sizes = sorted({args.lines, *args.scale_lines})
    runs: list[Run] = []
    t_start = time.perf_counter()
    for lines in sizes:
        paths = inputs(args.data_dir, lines, args.seed, args.formats, args.regen)
        for fmt in args.formats:
            for mode in args.modes:
                for i in range(args.runs):
                    r = measure(fmt, lines, mode, i + 1, paths[fmt], args.block_bytes)
                    runs.append(r)
                    print(
                        f"{fmt:4} {lines:>9,} {mode:8} run {i + 1}: {r.rps / 1e6:.2f}M rec/s, "
                        f"{r.seconds:.2f} s, peak RSS {r.peak_rss_mib:.0f} MiB",
                        file=sys.stderr,
                    )
    summary = summarise(runs)
    env = environment()
    print(
        f"Measured on {env['cpus']} CPUs ({env['cpu']}), Python {env['python']}, "
        f"pyarrow {env['pyarrow']}, numpy {env['numpy']}; {args.runs} run(s) each, "
        f"total {time.perf_counter() - t_start:.0f} s.\n"
    )
    print(markdown(summary, args.lines, args.target))
    if args.json:
        args.json.write_text(json.dumps(
            {"environment": env, "args": {k: str(v) for k, v in vars(args).items()},
             "summary": [asdict(x) for x in summary], "runs": [asdict(r) for r in runs]},
            indent=2,
        ) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
