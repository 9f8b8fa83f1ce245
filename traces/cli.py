"""``mittd trace info|convert|formats`` and ``mittd collect``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from mittd.traces.argtypes import (
    at_most,
    int_in,
    output_dir,
    output_file,
    positive_float,
    positive_int,
)
from mittd.traces.collect import MAX_IODEPTH, RW_MODES, CollectSpec, collect, parse_jobs
from mittd.traces.errors import TraceError
from mittd.traces.formats.base import ReadOptions
from mittd.traces.registry import FORMAT_NAMES, FORMATS, TraceStream, open_trace
from mittd.traces.schema import SCHEMA, TraceWriter, build_metadata
from mittd.traces.stats import render, render_records, summarise, summarise_records
from mittd.traces.units import parse_duration, parse_size

FORMAT_HELP = (
    "source format; 'auto' (default) recognises it from the content: "
    + ", ".join(FORMATS)
)


@contextmanager
def byte_progress(total: int, label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A tqdm bar sized by the trace's bytes on disk, every file of a set together
    (quiet when not a terminal)."""
    bar = tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024,
        desc=label, disable=not enabled, leave=False, file=sys.stderr,
    )
    try:
        yield bar.update
    finally:
        bar.close()


def _report_bad(stream: TraceStream) -> None:
    if stream.bad.count:
        print(stream.bad.summary(), file=sys.stderr)
        print(f"  (use --strict to stop at the first malformed {stream.bad.unit})",
              file=sys.stderr)


def _add_read_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", "-f", choices=FORMAT_NAMES, default="auto", help=FORMAT_HELP)
    p.add_argument("--device", help="device name to record for every IO (default: as the "
                   "source names it, e.g. host_disk for MSR, lunN for SYSTOR)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first malformed line instead of skipping and counting it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _options(args: argparse.Namespace) -> ReadOptions:
    return ReadOptions(strict=args.strict, device=args.device)


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def cmd_info(args: argparse.Namespace) -> int:
    stream = open_trace(args.trace, args.format, _options(args))
    with byte_progress(stream.size_bytes, "reading", _progress_enabled(args)) as progress:
        summary = summarise(stream.batches(progress))
    records = summarise_records(stream.record_paths) if stream.is_records else None
    if stream.rows == 0 and not (records and records.rows):
        raise TraceError(f"{stream.path}: no valid IO records ({stream.format.title})")
    info = summary.to_dict()
    info["file"] = str(stream.path)
    info["format"] = stream.format.name
    info["malformed_lines"] = stream.bad.count
    if stream.is_set:
        info["files"] = len(stream.paths)
    meta = stream.source_metadata()
    if meta:
        info["source"] = {k: meta.get(k) for k in ("source_format", "source_file")}
    if records is not None:
        info["records"] = records.to_dict()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        what = "mittd IO records" if records is not None else stream.format.title
        title = f"{stream.path}  ({what}"
        title += f", {len(stream.paths):,} files)" if stream.is_set else ")"
        if meta.get("source_format"):
            title += f"  from {meta['source_format']}"
            if not stream.is_set:
                title += f": {meta.get('source_file')}"
        print(render(info, title))
        if records is not None:
            print(render_records(info["records"]))
    _report_bad(stream)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix != ".parquet":
        raise TraceError(f"{out}: output must be a .parquet file")
    if out.exists() and not args.force:
        raise TraceError(f"{out}: already exists (use --force to overwrite)")
    if not out.parent.is_dir():
        raise TraceError(f"{out.parent}: output directory does not exist")
    stream = open_trace(args.trace, args.format, _options(args))
    if any(p.resolve() == out.resolve() for p in stream.paths):
        raise TraceError(f"{out}: output would overwrite the input")
    source_meta = stream.source_metadata()
    meta = build_metadata(
        source_meta.get("source_format", stream.format.name),
        source_meta.get("source_file", str(stream.path)),
        source_meta.get("collection"),
        reader={"format": stream.format.name, "device_override": args.device,
                "sorted_by_issue": args.sort},
    )
    with byte_progress(stream.size_bytes, "converting", _progress_enabled(args)) as progress:
        if args.sort:
            table = pa.Table.from_batches(list(stream.batches(progress)), schema=SCHEMA)
            batches = table.sort_by("ts_issue_us").to_batches(max_chunksize=1 << 20)
        else:
            batches = stream.batches(progress)
        with TraceWriter(out, meta) as writer:
            for batch in batches:
                writer.write(batch)
            if writer.rows == 0:
                raise TraceError(f"{stream.path}: no valid IO records ({stream.format.title})")
    print(f"wrote {writer.rows:,} IOs from {stream.path} ({stream.format.title}) to {out}")
    _report_bad(stream)
    return 0


def cmd_formats(args: argparse.Namespace) -> int:
    for fmt in FORMATS.values():
        lat = "latency" if fmt.has_latency else "no latency (workload only)"
        print(f"{fmt.name:<11} {fmt.title} — {lat}")
        print(f"{'':<11} e.g. {fmt.example}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``trace`` and ``collect`` on the ``mittd`` parser."""
    trace = commands.add_parser(
        "trace", help="inspect and convert block traces",
        description="Read block traces (fio latency logs, MSR Cambridge, SNIA SYSTOR '17, "
        "blkparse, LinnOS replayer, Alibaba, Tencent CBS; plain or gzip/bz2/zstd/lz4 "
        "compressed) and convert them to mittd's canonical Parquet trace.",
    )
    sub = trace.add_subparsers(dest="trace_command", metavar="SUBCOMMAND")
    sub.required = True

    info = sub.add_parser(
        "info", help="summary of a trace: IOs, duration, R:W, IOPS, size and latency percentiles",
        description="Print the summary of a trace: IO count, duration, read:write ratio, "
        "IOPS, bytes, size percentiles and latency percentiles (p50/p90/p99/p99.9/max, "
        "per op). One streaming pass with bounded memory; latency percentiles are exact "
        "to within 0.1 %%.",
    )
    info.add_argument("trace", help="trace file (any supported format, or a .parquet trace), "
                      "or a directory or glob of Parquet segments (e.g. the daemon's IO "
                      "records: records/nvme0, 'records/**/*.parquet')")
    _add_read_options(info)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=cmd_info)

    conv = sub.add_parser(
        "convert", help="convert a trace to canonical Parquet",
        description="Convert a trace to mittd's canonical Parquet trace (columns ts_issue_us, "
        "latency_us, op, offset, size, device; provenance in the file's metadata). "
        "Streams with bounded memory unless --sort is given. Malformed lines are skipped, "
        "counted and reported with their line numbers.",
    )
    conv.add_argument("trace", help="input trace file, or a directory or glob of Parquet "
                      "segments (read as one trace)")
    conv.add_argument("output", type=output_file, help="output .parquet file")
    _add_read_options(conv)
    conv.add_argument("--sort", action="store_true",
                      help="sort IOs by issue time (loads the whole trace into memory; fio "
                      "and blkparse logs are in completion order)")
    conv.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    conv.set_defaults(func=cmd_convert)

    formats = sub.add_parser("formats", help="list the supported trace formats",
                             description="List the trace formats mittd reads, with a sample "
                             "line of each.")
    formats.set_defaults(func=cmd_formats)

    _add_collect(commands)


def cmd_collect(args: argparse.Namespace) -> int:
    try:
        spec = CollectSpec(
            target=Path(args.target),
            output=Path(args.output),
            size=parse_size(args.size, "--size") if args.size else None,
            runtime_s=None if args.runtime is None else parse_duration(args.runtime, "--runtime"),
            jobs=parse_jobs(args.job),
            rw=args.rw,
            rwmixread=args.rwmixread,
            bs=args.bs,
            iodepth=args.iodepth,
            ioengine=args.ioengine,
            direct=not args.buffered,
            allow_write=args.allow_write,
            replay=Path(args.replay) if args.replay else None,
            replay_format=args.replay_format,
            replay_speed=args.replay_speed,
            device=args.device,
            fio=args.fio,
            keep_logs=Path(args.keep_logs) if args.keep_logs else None,
            force=args.force,
        )
    except ValueError as e:
        raise TraceError(str(e)) from None
    show = not args.no_progress and sys.stderr.isatty()
    bar = tqdm(total=None, unit="s", desc="fio", disable=not show, leave=False,
               file=sys.stderr, bar_format="{desc}: {n:.0f}/{total_fmt} s {bar}")

    def tick(stage: str, elapsed: float, expected: float) -> None:
        if expected and bar.total != expected:
            bar.total = expected
        bar.n = min(elapsed, expected) if expected else elapsed
        bar.refresh()

    try:
        result = collect(spec, tick)
    finally:
        bar.close()
    total_bad = sum(j["inconsistent"] for j in result.join)
    matched = sum(j["matched"] for j in result.join)
    print(f"wrote {result.ios:,} IOs measured by {result.fio_version} on {spec.target} "
          f"to {result.output}")
    if result.replay_truncated:
        print(f"  note: replayed the first {spec.runtime_s:g} s of {spec.replay} "
              f"(--runtime); {result.replay_truncated:,} later IOs were left out",
              file=sys.stderr)
    unmatched = sum(j["completed"] - j["matched"] for j in result.join)
    if unmatched or total_bad:
        print(f"  note: {unmatched} IOs of the latency log had no iolog entry; "
              f"{total_bad} of {matched} joined IOs disagree with fio's completion "
              "times by more than 1.5 ms", file=sys.stderr)
    return 0


def _add_collect(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "collect", help="measure a labelled trace on a real file or block device with fio",
        description="Run a workload on TARGET with fio and write a labelled canonical trace "
        "(per-IO issue time in µs, latency in ns precision, op, offset, size). The workload "
        "is either a spec (--rw/--bs/--iodepth/--runtime, or several --job) or a recorded "
        "trace replayed at its own pace (--replay). Direct IO (O_DIRECT) by default, so the "
        "latencies are the device's and not the page cache's.",
        epilog="Examples:\n"
        "  mittd collect /data/mittd.img --size 1G --runtime 60s -o trace.parquet\n"
        "  mittd collect /data/mittd.img --size 1G --job rw=randread,iodepth=32 "
        "--job rw=write,bs=1m,rate=50m -o mixed.parquet\n"
        "  mittd collect /dev/nvme1n1 --replay msr_src1.csv.gz --allow-write "
        "-o replayed.parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", help="file (created with --size when missing) or block device")
    p.add_argument("-o", "--output", required=True, type=output_file,
                   help="output .parquet trace")
    p.add_argument("--size", help="bytes of the target to use, e.g. 1G (required for a new "
                   "file; default: the whole existing file or device)")
    p.add_argument("--runtime",
                   help="how long to run, e.g. 30s, 2m (default 30s; for --replay: replay "
                   "only this much of the trace, default all of it)")
    p.add_argument("--rw", default="randrw", choices=RW_MODES,
                   help="fio IO pattern of the default job (default randrw)")
    p.add_argument("--rwmixread", type=int_in(0, 100), default=70,
                   help="percent reads for rw/randrw (default 70)")
    p.add_argument("--bs", default="4k", help="block size of the default job (default 4k)")
    p.add_argument("--iodepth", type=at_most(positive_int, MAX_IODEPTH), default=16,
                   help="IOs in flight per job (default 16)")
    p.add_argument("--job", action="append", metavar="OPT=VAL,...",
                   help="add a job with these fio options on top of the defaults (repeat for "
                   "several concurrent jobs), e.g. rw=write,bs=1m,rate=50m,iodepth=2; with "
                   "--replay, concurrent contention jobs beside the replayed trace (their "
                   "IOs are in the output trace too)")
    p.add_argument("--ioengine", default="libaio", help="fio ioengine (default libaio)")
    p.add_argument("--buffered", action="store_true",
                   help="buffered IO instead of O_DIRECT (latencies include the page cache)")
    p.add_argument("--allow-write", action="store_true",
                   help="allow writes to a block device (destroys its data)")
    p.add_argument("--replay", metavar="TRACE",
                   help="replay this trace (any supported format) instead of a workload spec; "
                   "offsets are wrapped into the target's size and aligned to 4 KiB")
    p.add_argument("--replay-format", choices=FORMAT_NAMES, default="auto",
                   help="format of the --replay trace (default: auto-detect)")
    p.add_argument("--replay-speed", type=positive_float, default=1.0,
                   help="time scale of the replay: 2 = twice as fast (default 1)")
    p.add_argument("--device", help="device name recorded in the trace (default: the "
                   "target's file name)")
    p.add_argument("--fio", default="fio", help="fio binary (default: fio on PATH)")
    p.add_argument("--keep-logs", metavar="DIR", type=output_dir,
                   help="keep fio's job file, logs and JSON report in DIR")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_collect)
