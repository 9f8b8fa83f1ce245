"""``mittd bench …``: what mittd costs and what it cuts, on this machine.

The benchmarks are tools, not the service: they start daemons, fio and client
processes, and the predictor one compares against TensorFlow when installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from mittd.daemon.bench.tailcut.run import MODELS as TAILCUT_MODELS
from mittd.daemon.config import KEEP_WARM_MS_MAX, ServerConfig
from mittd.daemon.replay.report import jsonable
from mittd.predictor.bundle import BundleError, load_bundle
from mittd.predictor.engines import ENGINES
from mittd.predictor.shipped import SHIPPED_BUNDLES, shipped_bundle
from mittd.predictor.slo import parse_slo
from mittd.traces.argtypes import (
    MAX_COUNT,
    at_most,
    count,
    non_negative_count,
    non_negative_float,
    non_negative_int,
    output_dir,
    output_file,
    png_file,
    positive_float,
    positive_int,
    probability,
    share,
    sparsity,
)
from mittd.traces.atomic import write_text
from mittd.traces.units import parse_size

__all__ = ["add_commands"]


def cmd_bench_predictor(args: argparse.Namespace) -> int:
    from mittd.daemon.bench import predictor as bench

    configs = bench.DEFAULT_CONFIGS
    if args.models:
        configs = tuple((m, s) for m, s in bench.DEFAULT_CONFIGS if m in args.models)
    if args.sparsity is not None:
        configs = tuple((m, tuple(args.sparsity)) for m, _ in configs)
    engines = args.engines or list(ENGINES)

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"… {msg}", file=sys.stderr, flush=True)

    results = bench.run(configs, args.methods or bench.METHODS, engines, args.calls,
                        args.batch, not args.no_tf, progress=progress)
    print(bench.render(results))
    return _write_json(args.json, results)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,4, got {text!r}") from None
    if not values or min(values) < 1 or max(values) > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"counts must be >= 1 and <= {MAX_COUNT}, got "
                                         f"{text!r}")
    return values


def cmd_bench_rpc(args: argparse.Namespace) -> int:
    from mittd.daemon.bench import rpc as dbench

    if args.bundle not in (None, "synthetic") and not Path(args.bundle).is_file():
        raise BundleError(f"{args.bundle}: no such bundle")
    if args.dir is not None and not Path(args.dir).is_dir():
        return _fail(f"--dir {args.dir}: not an existing directory")
    if msg := _clobbered({"--json": args.json}, [args.bundle]):
        return _fail(msg)
    say = (lambda _m: None) if args.quiet else (lambda m: print(m, flush=True))
    try:
        r = dbench.run(bundle=args.bundle, model=args.model, sparsity=args.sparsity,
                       method=args.method, calls=args.calls, rounds=args.rounds,
                       clients=args.clients, batch=args.batch, batches=args.batches,
                       workers=args.workers, deadline_us=args.deadline_us,
                       directory=args.dir, say=say)
    except RuntimeError as e:  # the daemon would not start: its own one-line error
        return _fail(str(e).splitlines()[0])
    print(dbench.render(r))
    if args.json:
        write_text(args.json, json.dumps(r, indent=1, default=str))
    return 0


def _progress(quiet: bool) -> Callable[[str], None]:
    """Progress lines on stderr (the tables go to stdout), or none with --quiet."""
    if quiet:
        return lambda _m: None
    return lambda m: print(m, file=sys.stderr, flush=True)


def _write_json(path: str | None, result: dict) -> int:
    """``--json FILE``: the results as JSON, atomically; an unwritable FILE is one
    line, exit 2 (``OutputError``, a user error of the CLI)."""
    if path:
        write_text(path, json.dumps(result, indent=1, default=jsonable))
    return 0


def _fail(msg: str) -> int:
    """A user mistake the benchmark found itself: one line, exit status 2."""
    print(f"mittd: error: {msg}", file=sys.stderr)
    return 2


def _clobbered(outputs: dict[str, str | None], inputs: list[str | None]) -> str | None:
    """The one-line complaint when an output option names one of the inputs.

    Checked before the benchmark runs: minutes of work must not end by writing the
    results over the bundle or trace they were measured with."""
    ins = [Path(i) for i in inputs if i and Path(i).exists()]
    for opt, out in outputs.items():
        if out and Path(out).exists() and any(Path(out).samefile(i) for i in ins):
            return f"{opt} {out}: is an input of this benchmark; refusing to overwrite it"
    return None


def _slo(text: str) -> str:
    """An SLO in ``mittd.predictor.slo``'s grammar, checked now (it is resolved only
    after the workloads are recorded, minutes later)."""
    try:
        parse_slo(text, [1.0, 2.0, 3.0])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def cmd_bench_live(args: argparse.Namespace) -> int:
    from mittd.daemon.bench import live

    if msg := _clobbered({"--json": args.json, "--png": args.png},
                         [args.model, args.trace, *(args.target or ())]):
        return _fail(msg)
    size = None
    if args.size is not None:
        try:
            size = parse_size(args.size, "--size")
        except ValueError:
            return _fail(f"--size {args.size!r}: expected a size like 512M or 1G")
    cutoffs = None
    if args.validation_cutoffs:
        try:
            cutoffs = [float(v) for v in args.validation_cutoffs.split(",")]
        except ValueError:
            return _fail(f"--validation-cutoffs {args.validation_cutoffs!r}: expected "
                         "probabilities like 0.9,0.97")
    try:
        r = live.run_live(duration_s=args.duration, replicas=args.replicas, size=size,
                          clients=args.clients, model=args.model, directory=args.dir,
                          targets=args.target or (), period_s=args.period, busy=args.busy,
                          write_qd=args.write_qd, deadline_us=args.deadline_us,
                          hedge_after_us=args.hedge_after_us,
                          decision_threshold=args.decision_threshold,
                          max_reject_share=args.max_reject_share,
                          probe_after=args.probe_after, path=args.path, trace=args.trace,
                          trace_speed=args.trace_speed,
                          allow_block_device=args.allow_block_device,
                          write_targets=args.write_targets, seed=args.seed,
                          keep_files=args.keep_files, out_dir=args.output, quiet=args.quiet,
                          validation_rounds=args.validation_rounds,
                          validation_cutoffs=cutoffs)
    except live.LiveError as e:
        return _fail(str(e))
    print(live.render(r))
    if _write_json(args.json, r):
        return 2
    if args.png:
        note = live.plot(r, args.png)
        if note:
            print(f"mittd: {note}", file=sys.stderr)
    return 0


def cmd_bench_tailcut(args: argparse.Namespace) -> int:
    from mittd.daemon.bench import tailcut

    try:
        size = parse_size(args.size, "--size")
    except ValueError as e:
        return _fail(str(e))
    dirs = [Path(d) for d in (args.dir or "").split(",") if d]
    cfg = tailcut.TailcutConfig(
        seed=args.seed, workloads=args.workloads, dirs=dirs, runtime_s=args.runtime,
        size=size, models=args.models, slo=args.slo, reads_only=not args.all_ops,
        epochs=args.epochs, reject_budget=args.reject_budget, shipped=not args.no_shipped,
        keep=args.keep, out_dir=Path(args.output))
    show = not args.quiet and sys.stderr.isatty()
    say = _progress(args.quiet)
    try:
        r = tailcut.run_tailcut(cfg, say=say, progress=show)
    except tailcut.TailcutError as e:
        return _fail(str(e))
    from mittd.daemon.bench.tailcut.report import render

    print(render(r))
    print("wrote " + ", ".join(r["files"]), file=sys.stderr)
    return 0


def cmd_bench_embedded(args: argparse.Namespace) -> int:
    from mittd.daemon.bench import embedded

    if msg := _clobbered({"--json": args.json}, list(args.model or ())):
        return _fail(msg)
    try:
        size = parse_size(args.size, "--size")
    except ValueError as e:
        return _fail(str(e))
    say = _progress(args.quiet)
    try:
        r = embedded.run_embedded(args.model, ops=args.ops, seconds=args.seconds,
                                  rounds=args.rounds, directory=args.dir, size=size,
                                  seed=args.seed, io=not args.no_io, engine=args.engine,
                                  say=say)
    except embedded.EmbeddedBenchError as e:
        return _fail(str(e))
    print(embedded.render(r))
    return _write_json(args.json, r)


def cmd_bench_records(args: argparse.Namespace) -> int:
    from mittd.daemon.bench import records

    if msg := _clobbered({"--json": args.json}, [args.bundle, args.latencies]):
        return _fail(msg)
    try:
        r = records.run_records(args.bundle, ios=args.ios, rounds=args.rounds, seed=args.seed,
                                directory=args.dir, latencies=args.latencies,
                                say=_progress(args.quiet))
    except records.RecordsBenchError as e:
        return _fail(str(e))
    print(records.render(r))
    return _write_json(args.json, r)


def cmd_bench_cold(args: argparse.Namespace) -> int:
    from mittd.daemon.bench import cold

    names = args.bundle or ["heimdall", "linnos"]
    bundles = [str(shipped_bundle(n)) if n in SHIPPED_BUNDLES else n for n in names]
    for b in bundles:  # a bad bundle is one line before minutes of idling
        load_bundle(b)
    if msg := _clobbered({"--json": args.json}, bundles):
        return _fail(msg)
    r = cold.run_cold(bundles, idle_ms=args.idle_ms, ios=args.ios, rounds=args.rounds,
                      keep_warm_ms=args.keep_warm_ms, engine=args.engine,
                      budget_us=args.budget_us, seed=args.seed, busy=args.busy,
                      say=_progress(args.quiet))
    print(cold.render(r))
    return _write_json(args.json, r)


def cmd_bench_shadow(args: argparse.Namespace) -> int:
    from mittd.daemon.bench import shadow

    if msg := _clobbered({"--json": args.json}, [args.bundle]):
        return _fail(msg)
    sizes = {}
    for name, text in (("--read-size", args.read_size), ("--size", args.size)):
        try:
            sizes[name] = parse_size(text, name)
        except ValueError as e:
            return _fail(str(e))
    try:
        r = shadow.run_shadow(directory=args.dir, bundle=args.bundle, seconds=args.seconds,
                              records=args.records, busy=args.busy, period_s=args.period,
                              clients=args.clients, read_size=sizes["--read-size"],
                              size=sizes["--size"], window=args.window, seed=args.seed,
                              write_qd=args.write_qd, quiet=args.quiet)
    except shadow.ShadowError as e:
        return _fail(str(e))
    print(shadow.render(r))
    return _write_json(args.json, r)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register the ``bench`` command group on the ``mittd`` subparsers object."""
    bench = commands.add_parser("bench", help="benchmarks",
                                description="Measure mittd on this machine.")
    bsub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    bsub.required = True
    p = bsub.add_parser(
        "predictor", help="µs per decision and decisions/s of every engine (and TF)",
        description="Per-decision latency (p50/p99, batch 1, with and without "
        "featurisation) and batched throughput of every inference engine on the seed's "
        "models at several sparsities and pruning methods; for compiled engines the "
        "model alone in a compiled loop and featurise + predict inside the fused decision "
        "kernel; each configuration's floor on this CPU (non-zeros, multiply-adds after "
        "skipping zero activations, bytes read, at rates measured here) and every "
        "engine's ratio to it; TF eager, tf.function, TF Lite and ONNX Runtime side by "
        "side on the same compacted shapes when installed (the train extra). BLAS is "
        "capped at one thread. Inputs are featurised from the shipped real trace. Takes "
        "several minutes.")
    p.add_argument("--models", nargs="+", choices=["precise_linear", "good_custom"],
                   help="models to measure (default both)")
    p.add_argument("--sparsity", nargs="+", type=sparsity,
                   help="sparsities to measure (default: 0 .9 .95 .97 .98 for "
                   "precise_linear, 0 .9 .95 for good_custom)")
    p.add_argument("--methods", nargs="+", choices=["magnitude", "simd", "node"],
                   help="pruning methods for the sparse bundles (default all three)")
    p.add_argument("--engines", nargs="+", choices=list(ENGINES), help="engines (default all)")
    p.add_argument("--calls", type=count, default=20_000, help="timed calls per cell")
    p.add_argument("--batch", type=count, default=256, help="batch size for throughput")
    p.add_argument("--no-peers", "--no-tf", dest="no_tf", action="store_true",
                   help="skip the TensorFlow, TF Lite and ONNX Runtime comparison")
    p.add_argument("--json", type=output_file, metavar="FILE",
                   help="also write the raw results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_bench_predictor)

    d = bsub.add_parser(
        "rpc", help="gRPC cost of Admit, Read and AdmitStream next to an Echo",
        description="Start a daemon (mittd serve, own process, Unix socket) on a pruned "
        "bundle and a 64 MiB file-backed device, then measure side by side from separate "
        "client processes: Echo (a no-op with Admit's message sizes: the gRPC floor), "
        "Admit unary, Read proxy (admission + a 4 KiB O_DIRECT read) and AdmitStream "
        "(column batches, and one-message-per-IO batches), with 1 and several concurrent "
        "clients: p50/p99 per call (per batch for streams) and decisions/s.")
    d.add_argument("--bundle", metavar="B.mittd",
                   help="model bundle to serve (default: the shipped precise_linear_node95; "
                   "'synthetic': random weights shaped by --model/--sparsity/--method)")
    d.add_argument("--model", choices=["precise_linear", "good_custom"],
                   default="precise_linear", help="synthetic model (with --bundle synthetic)")
    d.add_argument("--sparsity", type=sparsity, default=0.98, help="synthetic sparsity (0.98)")
    d.add_argument("--method", choices=["magnitude", "simd", "node"], default="node",
                   help="synthetic pruning pattern (node)")
    d.add_argument("--clients", type=_int_list, default=(1, 4),
                   help="concurrent client processes to measure, e.g. 1,4 (default)")
    d.add_argument("--calls", type=count, default=2000,
                   help="timed unary calls per client, kind and round (2000)")
    d.add_argument("--rounds", type=count, default=3,
                   help="interleaved rounds of echo/admit/read (3)")
    d.add_argument("--batch", type=count, default=1024, help="IOs per stream batch (1024)")
    d.add_argument("--batches", type=count, default=300, help="batches per stream client (300)")
    d.add_argument("--workers", type=count, default=4,
                   help="daemon RPC worker threads (4; at least the largest --clients + 1: "
                   "the daemon keeps one for unary calls beside the streams)")
    d.add_argument("--deadline-us", type=non_negative_count, default=0,
                   help="deadline sent with every IO (0: the model's first threshold)")
    d.add_argument("--dir", help="where to put the device file (default: the temp dir)")
    d.add_argument("--json", type=output_file, metavar="FILE",
                   help="also write the results as JSON")
    d.add_argument("--quiet", action="store_true", help="no progress lines")
    d.set_defaults(func=cmd_bench_rpc)

    d = bsub.add_parser(
        "live", help="real IO, real tails: client latency with mittd, without, with hedging",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read N replicas (files made in --dir, or --target files/block "
        "devices) with closed-loop or trace-driven client threads while fio's 1 MiB writes "
        "make each replica slow on its own schedule, and compare the client-observed "
        "latency in four modes interleaved in slices of one contention period: 'none' "
        "(every read served by its primary), 'mittd' (deadline = the model's threshold, "
        "EBUSY -> next replica at once, the last one never rejects), 'hedge' (a duplicate "
        "to the next replica after --hedge-after-us, default the p95 of a warm-up period "
        "in 'none') and 'both' (mittd + hedging). By default the decision runs in this "
        "process (--path inproc: no RPC, as Heimdall's client-level integration); "
        "--path grpc starts one 'mittd serve' daemon per replica and reads through it.",
        epilog="Contention: replica i is under writes for its --busy share of every "
        "--period seconds, starting at i*period/replicas (fio paused and resumed with "
        "SIGSTOP/SIGCONT); '--busy 0.5,0' gives replica 1 no writer. Reads are O_DIRECT "
        "where the file system takes it; on tmpfs (e.g. --dir out,/dev/shm) they are "
        "buffered, i.e. RAM reads: an independent replica on a one-disk machine. "
        "--target paths are used as they are and never written unless --write-targets. "
        "Progress goes to stderr, the table to stdout. fio (and the daemons) are stopped "
        "on exit, on errors, on Ctrl-C and on SIGTERM.")
    d.add_argument("--duration", type=positive_float, default=60.0,
                   help="seconds in all, warm-up and validation included (default 60; at "
                   "least 1 + rounds x candidates + 4 periods)")
    d.add_argument("--validation-rounds", type=non_negative_count, metavar="K",
                   help="rounds of the validation window between the warm-up and the test "
                   "slices, one contention period per candidate (off, and rejection at "
                   "each --validation-cutoffs cutoff, the two strictest also uncapped) per "
                   "round: mittd's operating point is chosen there (lowest p99, if > 3 %% "
                   "below off's, else mittd stays off) and used unchanged for the test "
                   "(default 2 in-process; 0: the fixed --decision-threshold; gRPC: 0 only)")
    d.add_argument("--validation-cutoffs", metavar="P[,P...]",
                   help="P(slow) cutoffs on trial in the validation window (0.5,0.8,0.9,0.97,"
                   "0.99, plus --decision-threshold when given; at most 7)")
    d.add_argument("--path", choices=["inproc", "grpc"], default="inproc",
                   help="where the decision runs: in this process (inproc, default) or in "
                   "one mittd serve daemon per replica over gRPC (grpc)")
    d.add_argument("--replicas", type=count,
                   help="replica files (2; with --target: one per target)")
    d.add_argument("--dir", metavar="DIR[,DIR...]",
                   help="where the replica files go, replica i in the (i mod n)-th DIR: give "
                   "one per disk for independent replicas (default ./out if it exists, else "
                   "/var/tmp); tmpfs (/dev/shm) is allowed: its reads are RAM reads")
    d.add_argument("--target", action="append", metavar="PATH",
                   help="an existing file or block device as a replica, used as it is "
                   "(repeat per replica; never written unless --write-targets)")
    d.add_argument("--allow-block-device", action="store_true",
                   help="let a --target be a block device (read only)")
    d.add_argument("--write-targets", action="store_true",
                   help="let fio's contention writes go into --target replicas with a --busy "
                   "share > 0 (DESTROYS their data)")
    d.add_argument("--size", help="size of each replica file (1G; with --target: the "
                   "smallest target)")
    d.add_argument("--clients", type=count,
                   help="client threads (2 closed-loop; 4 with --trace; on 2 cores more "
                   "threads measure the CPU queue more than the disk)")
    d.add_argument("--trace", metavar="T",
                   help="issue the reads of trace T (any format mittd reads) at its arrival "
                   "times (open loop, the trace repeating), offsets modulo the replica size, "
                   "instead of the closed loop")
    d.add_argument("--trace-speed", type=positive_float, default=1.0, metavar="X",
                   help="replay the trace X times faster (1)")
    d.add_argument("--model", metavar="B.mittd",
                   help="bundle deciding every replica (default: the shipped "
                   "precise_linear_hist_node95 at P(slow) > 0.97, the demo's operating point)")
    d.add_argument("--deadline-us", type=count,
                   help="deadline of mittd-mode reads (default: the model's first "
                   "trained threshold)")
    d.add_argument("--hedge-after-us", type=non_negative_float,
                   help="hedging delay (default: p95 of the warm-up period without mittd)")
    d.add_argument("--decision-threshold", type=probability, metavar="P",
                   help="reject when P(slow) > P (default: 0.97 for the default model, else "
                   "the bundle's) when there is no validation window; with one, P joins the "
                   "cutoffs on trial")
    d.add_argument("--max-reject-share", type=share, metavar="S",
                   help="cap on the share of a replica's decisions rejected (default: the "
                   "bundle policy's, 0.5 without one)")
    d.add_argument("--probe-after", type=non_negative_count, default=32, metavar="N",
                   help="admit a probe after N rejections in a row (32, the daemon's "
                   "default; 0: never)")
    d.add_argument("--period", type=positive_float,
                   help="contention period and mode slice, seconds (3; a fifth of "
                   "--duration below 15 s)")
    d.add_argument("--busy", metavar="F[,F...]",
                   help="share of each period a replica is under writes: one for all or one "
                   "per replica (1/3; 0: no writer; --target replicas default to 0)")
    d.add_argument("--write-qd", type=count, default=4,
                   help="queue depth of each fio writer (1 MiB writes, direct where the file "
                   "system takes it) (4)")
    d.add_argument("--seed", type=non_negative_int, default=0, help="seed of the read offsets (0)")
    d.add_argument("--keep-files", action="store_true",
                   help="keep the replica files, configs and logs")
    d.add_argument("--output", "-o", metavar="DIR", type=output_dir,
                   help="also write live.json, live.txt and live.png (the CDFs) into DIR")
    d.add_argument("--json", type=output_file, metavar="FILE",
                   help="also write the results as JSON")
    d.add_argument("--png", metavar="FILE", type=png_file,
                   help="also plot the CDFs (needs matplotlib)")
    d.add_argument("--quiet", action="store_true", help="no progress lines")
    d.set_defaults(func=cmd_bench_live)

    t = bsub.add_parser(
        "tailcut", help="mittd against hedging on seeded workloads nobody tuned it on",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate K fio workloads from the seed (read share 50-100 %%, reads "
        "of 4 KiB-256 KiB, queue depths 1-32, random and sequential, bursty, rate-limited "
        "and thinking writers; two or three concurrent jobs), record each twice with fio "
        "(the second recording is the first's replica), train every model on the first "
        "half of the primary, choose each model's decision policy (reject / both / hedge, "
        "cutoff, hedge delay) by closed-loop replay of the next 20 %% (the validation "
        "window), then replay the last 30 %% against no rejection, hedging (after the "
        "validation window's p95), random rejection at mittd's rate, the oracle and the "
        "LinnOS/Heimdall baselines. One table per workload, the targets checked, an "
        "aggregate, the LBA question; tailcut.json, tailcut.txt and tailcut.png in "
        "--output. K = 8 takes about half an hour on a 2-core machine.",
        epilog="Nothing is chosen on the test part. 'extra' counts every re-sent request "
        "(failovers and hedges); 'dev.IO' only the additional device reads (a rejected "
        "read never reaches the primary's device, so a failover moves load rather than "
        "adding it).")
    t.add_argument("--seed", type=non_negative_int, default=0, help="seed of the workloads (0)")
    t.add_argument("--workloads", type=count, default=8, metavar="K",
                   help="seeded workloads to generate and record (8)")
    t.add_argument("--runtime", type=positive_float, default=25.0, metavar="S",
                   help="seconds of each recording (25; the validation window is 20 %% of it)")
    t.add_argument("--size", default="1G", help="size of the device file (1G)")
    t.add_argument("--dir", metavar="A[,B]",
                   help="where the device files go: B (if given) holds the replica's "
                   "recording, e.g. one directory per disk (default ./out, else /var/tmp; "
                   "must support O_DIRECT)")
    t.add_argument("--models", nargs="+", default=list(TAILCUT_MODELS),
                   choices=list(TAILCUT_MODELS),
                   help="models to train (default all four; mittd picks among "
                   "precise_linear and precise_linear_hist)")
    t.add_argument("--slo", default="auto", type=_slo,
                   help="label threshold: auto (the CDF knee, as LinnOS/Heimdall), p95, 500us")
    t.add_argument("--all-ops", action="store_true",
                   help="train on writes too (default: reads only, the IOs decided)")
    t.add_argument("--epochs", type=count, default=4, help="training epochs (4)")
    t.add_argument("--reject-budget", type=probability, default=0.05, metavar="B",
                   help="most reads a device may reject (0.05, hedging's extra load)")
    t.add_argument("--no-shipped", action="store_true",
                   help="leave out the two shipped traces (replica: the trace time-shifted)")
    t.add_argument("--keep", action="store_true", help="keep the recordings in --output")
    t.add_argument("-o", "--output", default="out/tailcut", type=output_dir,
                   help="report directory (out/tailcut)")
    t.add_argument("--quiet", action="store_true", help="no progress")
    t.set_defaults(func=cmd_bench_tailcut)

    r = bsub.add_parser(
        "records", help="what recording every IO costs the in-process path, and on disk",
        description="Three in-process admissions of the same bundle decide the same IOs "
        "(fused admit + complete), interleaved round by round: 'off' (nothing recorded), "
        "'ring' (rows kept in memory for live quality) and 'records' (the ring plus the "
        "recorder thread writing Parquet segments). Per variant: wall and process CPU time "
        "per IO (all threads: the recorder's Parquet work counts), medians over rounds, "
        "and the median paired difference from 'off'; then the segments' bytes per IO "
        "(= MB per 1M IOs). The issue's targets: <= 1 µs per IO, <= 20 MB per 1M IOs.",
        epilog="Latencies are drawn from a lognormal (every float bit random: the "
        "pessimistic case for the size) unless --latencies names a trace whose measured "
        "latencies to use. Timings are per machine; the segments are removed afterwards.")
    r.add_argument("--bundle", default=str(shipped_bundle("heimdall")), metavar="B.mittd",
                   help="the model (default: the shipped heimdall bundle)")
    r.add_argument("--ios", type=count, default=200_000, help="IOs per variant and round "
                   "(200000)")
    r.add_argument("--rounds", type=count, default=5, help="interleaved rounds (5)")
    r.add_argument("--dir", help="where the segments are written (default: the system's "
                   "temporary directory)")
    r.add_argument("--latencies", metavar="TRACE",
                   help="take the IOs' latencies from this trace (any format mittd reads)")
    r.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of offsets and latencies (0)")
    r.add_argument("--json", type=output_file, metavar="FILE",
                   help="also write the results as JSON")
    r.add_argument("--quiet", action="store_true", help="no progress")
    r.set_defaults(func=cmd_bench_records)

    c = bsub.add_parser(
        "cold", help="decisions after an idle spell: time, overruns, keep-warm off/on",
        description="Per bundle, the in-process admission (Embedded) decides --ios IOs "
        "each after --idle-ms of nothing, with the keep-warm thread off and at "
        "--keep-warm-ms, interleaved round by round, beside its back-to-back (warm) "
        "decisions. A cold prediction slower than --budget-us is an overrun: admitted "
        "unjudged (fail_open_on_overrun), counted in cold_overruns. Prints warm p50, "
        "cold p50/p90/max, cold p90 over warm p50 and the overruns; beside them the "
        "floors, a no-op Python call and a no-op compiled call after the same idle.",
        epilog="Takes about (bundles x 2 + 2) x rounds x ios x idle-ms (120 s by default). "
        "Timings are per machine.")
    c.add_argument("--bundle", action="append", metavar="B.mittd|NAME",
                   help=f"a bundle or a shipped one's name ({', '.join(SHIPPED_BUNDLES)}); repeat "
                   "for several (default: heimdall and linnos)")
    c.add_argument("--idle-ms", type=positive_float, default=1000.0,
                   help="idle time before each measured decision (1000)")
    c.add_argument("--ios", type=at_most(positive_int, 100_000), default=20,
                   help="measured decisions per bundle, setting and round (20)")
    c.add_argument("--rounds", type=at_most(positive_int, 1000), default=1,
                   help="interleaved rounds (1)")
    c.add_argument("--keep-warm-ms", type=at_most(positive_int, KEEP_WARM_MS_MAX),
                   default=100, help="the keep-warm setting compared with off (100)")
    c.add_argument("--engine", choices=list(ENGINES), default="auto",
                   help="inference engine (auto)")
    c.add_argument("--budget-us", type=positive_float, default=ServerConfig.predict_budget_us,
                   help=f"predict_budget_us ({ServerConfig.predict_budget_us:g})")
    c.add_argument("--seed", type=non_negative_int, default=0, help="seed of offsets (0)")
    c.add_argument("--busy", action="store_true",
                   help="spin on the clock through each idle spell instead of sleeping: "
                   "the thread keeps its CPU, so what goes cold is what the rest of the "
                   "machine evicts (a shared VM's neighbours)")
    c.add_argument("--json", type=output_file, metavar="FILE",
                   help="also write the results as JSON")
    c.add_argument("--quiet", action="store_true", help="no progress")
    c.set_defaults(func=cmd_bench_cold)

    s = bsub.add_parser(
        "shadow", help="a recording session before enforcing: live model quality beside "
        "the offline ROC-AUC on the same IOs",
        description="Watch first, then enforce. Place a replica file in --dir (written in "
        "full), make it slow with fio's 1 MiB writes for the --busy share of every --period "
        "(as 'mittd bench live'), and read it for --seconds with --clients closed-loop "
        "threads (QD1 each, random --read-size reads, O_DIRECT where the file system takes "
        "it) through an in-process admission in shadow mode: every read is predicted and "
        "recorded to --records, none is rejected. A progress line a second (IOs, live "
        "ROC-AUC so far). At the end: IOs decided, records written/dropped, their bytes "
        "per IO, p50/p99/p99.9 read latency, and the model's live quality over the last "
        "--window decisions (ROC-AUC, precision, recall, would-be reject share, drift: the "
        "numbers the Prometheus metrics export) beside the OFFLINE ROC-AUC of the same "
        "bundle on the same IOs (the records read back as a trace and re-featurised, as "
        "'mittd evaluate --trace RECORDS' does; the earlier IOs seen, the last --window "
        "scored) and the ROC-AUC of the P(slow) the records hold; the target is |live - "
        "offline| <= 0.01.",
        epilog="The records land in RECORDS/shadow/*.parquet and are kept (train on them "
        "with 'mittd train RECORDS/shadow --model ...'); earlier sessions' segments there are "
        "left alone and not counted. The replica file is removed at the end. fio and the "
        "admission are stopped on exit, on errors, on Ctrl-C and on SIGTERM. Progress goes "
        "to stderr, the report to stdout.")
    s.add_argument("--dir", required=True, metavar="D",
                   help="where the replica file goes (a disk: tmpfs reads are RAM copies)")
    s.add_argument("--bundle", required=True, metavar="B.mittd",
                   help="the model bundle to shadow (decides at its own cutoff and first "
                   "trained threshold)")
    s.add_argument("--seconds", type=positive_float, required=True, metavar="S",
                   help="seconds of reading")
    s.add_argument("--records", required=True, metavar="R",
                   help="directory for the IO records (created if missing)")
    s.add_argument("--busy", metavar="F",
                   help="share of each period the replica is under writes (1/3, as bench "
                   "live; 0: no writer, fio not needed)")
    s.add_argument("--period", type=positive_float, metavar="S",
                   help="contention period, seconds (3)")
    s.add_argument("--write-qd", type=count, default=4, metavar="N",
                   help="queue depth of the fio writer (1 MiB writes) (4)")
    s.add_argument("--clients", type=count, default=1, metavar="N",
                   help="closed-loop client threads, QD1 each (1)")
    s.add_argument("--read-size", default="4k", metavar="BYTES",
                   help="bytes per read, a multiple of 4 KiB up to 1 MiB (4k)")
    s.add_argument("--size", default="1g", metavar="BYTES",
                   help="size of the replica file (1g)")
    s.add_argument("--window", type=count, default=10_000, metavar="N",
                   help="decisions in the live quality window, and IOs scored offline "
                   "(10000, the daemon's quality_window)")
    s.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                   help="seed of the read offsets (0)")
    s.add_argument("--json", type=output_file, metavar="FILE",
                   help="also write the results as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.set_defaults(func=cmd_bench_shadow)

    e = bsub.add_parser(
        "embedded", help="µs per in-process decision beside the engine, the general "
        "core and a bare O_DIRECT read",
        description="What one in-process decision (mittd.daemon.embedded.Embedded) costs, "
        "measured side by side with its floors, per model: the bare engine (run1 on a "
        "filled input), the general core (AdmissionCore.admit + complete), the fused "
        "Embedded.admit + complete, the unfused Python path, a bare 4 KiB O_DIRECT preadv "
        "at QD1 (the device floor), a QD1 read loop deciding every read (admit -> preadv "
        "-> complete) with its overhead over the bare reads interleaved with it, and the "
        "engine right after a read (cold CPU). Interleaved rounds, "
        "warm, p50/p90/p99/p99.9 in µs, the issue's targets beside.",
        epilog="Timings are per machine (the CPU, numpy and numba versions are printed). "
        "Progress goes to stderr, the table to stdout; the read file is removed "
        "afterwards.")
    e.add_argument("--model", action="append", metavar="B.mittd",
                   help="bundle to measure, repeatable (default: every shipped bundle in "
                   "predictor/bundles/)")
    e.add_argument("--ops", type=count,
                   help="ops per measurement and round (read pairs for the read loop); "
                   "instead of --seconds")
    e.add_argument("--seconds", type=positive_float,
                   help="seconds per measurement and round (default 0.5)")
    e.add_argument("--rounds", type=count, default=5, help="interleaved rounds (5)")
    e.add_argument("--dir", help="where the read file goes (default: the repository's out/, "
                   "else the cwd; must support O_DIRECT, so not tmpfs)")
    e.add_argument("--size", default="256M", help="size of the read file (256M; written "
                   "with real data)")
    e.add_argument("--no-io", action="store_true",
                   help="skip the read file, the bare reads and the read loop")
    e.add_argument("--engine", default="auto",
                   help="inference engine of every model (auto: timed at load)")
    e.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of offsets and latencies (0)")
    e.add_argument("--json", type=output_file, metavar="FILE",
                   help="also write the results as JSON")
    e.add_argument("--quiet", action="store_true", help="no progress lines")
    e.set_defaults(func=cmd_bench_embedded)
