"""``mittd replay``: what the daemon would have done on a recorded trace."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mittd.daemon.replay import (
    DEFAULT_FAILOVER_COST_US,
    DEFAULT_PROBE_AFTER,
    POLICIES,
    ReplayError,
    load_model,
    load_trace,
    parse_policies,
    run_replay,
    trace_replica,
    unique_names,
)
from mittd.predictor.engines import ENGINE_NAMES
from mittd.traces.argtypes import (
    count,
    non_negative_count,
    non_negative_float,
    non_negative_int,
    output_dir,
    probability,
    share,
)
from mittd.traces.registry import FORMAT_NAMES

__all__ = ["USER_ERRORS", "ReplayError", "add_commands", "cmd_replay"]

USER_ERRORS: tuple[type[BaseException], ...] = (ReplayError,)

DESCRIPTION = """\
Replay a labelled block trace through the daemon's own admission core on a
virtual clock and compare the read latencies the application would have seen
under several policies: no rejection, each model, hedging, random rejection and
an oracle. Writes REPORT_DIR/report.json and REPORT_DIR/latency_cdf.png (the
PNG needs matplotlib) and prints a table.

How the replay works:
  * The primary TRACE is walked in issue order; each IO's ts_issue_us is the
    virtual now. Reads are decided: admit(deadline = the SLO). Writes and other
    ops are always issued (a write must reach every replica), so the device's
    pending queue is what the live daemon would see. An admitted IO completes at
    ts + ceil(latency) and its completion is fed to the core before any later
    issue (the tracker's offline rule): a policy that admits everything sees
    exactly the features training computed (featuriser.encode_trace).
  * Prediction takes no virtual time (no overrun fail-open in a replay).
  * A rejected read (EBUSY) fails over to the next replica, paying
    --failover-cost-us per hop. Its latency there is that of the replica
    trace's read issued nearest at/after the same relative time (time since the
    trace's first IO; LinnOS's method), circularly if the replica is shorter.
    Replica latencies are as recorded: the load that failovers add to a
    replica is not modelled.
  * Without --replica, the replica is TRACE itself shifted by half its
    duration, circularly. With several --replica, every replica but the last
    also decides with the same model, in its own device state fed with that
    replica trace's own IOs (its background load) and the reads it admits. The
    last replica never rejects.

Policies (--policy, comma-separated; default: all):
  baseline  no rejection: every read gets its recorded latency
  models    one row per --model (named by the bundle's file stem)
  hedge     duplicate a read to the first replica when it has not answered
            after the p95 of the primary's read latencies (Dean & Barroso):
            latency = min(L, p95 + replica latency); one extra IO per hedge
  random    reject reads at random (seeded) at the reject rate of the best
            model (lowest p99; the oracle's rate when no model runs)
  oracle    reject exactly the reads whose primary latency exceeds the SLO

Metrics (over reads with a known latency): mean, p50, p90, p95, p99, p99.9 of
the latency seen (µs); reject rate; false rejects (rejected although the
primary was within the SLO) and false admits (admitted although it was not),
as shares of reads; SLO misses; extra IOs (failovers + hedges); decisions/s of
the replay loop; and each policy's share of the oracle's p99 gain,
(p99_base - p99) / (p99_base - p99_oracle).
"""

EPILOG = """\
examples:
  mittd replay traces/samples/fio_mixed_30s.parquet --model pl_node95.mittd \\
      --model heimdall.mittd --slo 188us -o out/replay
  mittd replay primary.parquet --replica r1.parquet --replica r2.parquet \\
      --model gc.mittd --policy baseline,models,oracle --slo p95 -o out/r

A model only judges deadlines up to its largest trained latency threshold: at
a longer SLO the daemon admits every read without a prediction (the report
says so). --slo model uses the first model's trained threshold.
"""


def cmd_replay(args: argparse.Namespace) -> int:
    quiet = args.quiet
    show = not quiet and sys.stderr.isatty()

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr)

    from mittd.daemon.replay.report import format_table, write_report

    policies = parse_policies(args.policy)
    model_paths = args.model or []
    names = unique_names(model_paths)
    models = [load_model(p, n) for p, n in zip(model_paths, names, strict=True)]
    primary = load_trace(args.trace, args.format, args.limit, start=args.start)
    replicas = [trace_replica(r, args.format) for r in args.replica or []]
    replay = run_replay(
        primary, replicas, models, policies, args.slo,
        failover_cost_us=args.failover_cost_us, engine=args.engine,
        decision_threshold=args.decision_threshold, seed=args.seed, progress=show,
        say=say, probe_after=args.probe_after, max_reject_share=args.max_reject_share,
        hedge_after_us=args.hedge_after_us)
    report, files, drawn = write_report(replay, args.output)
    print(format_table(report))
    for r in report["policies"]:
        if r["kind"] == "model":
            say(f"{r['policy']}: {r['decisions']:,} decisions in {r['wall_s']:.2f} s "
                f"({r['decisions_per_s'] or 0:,.0f} decisions/s)")
    if not drawn:
        print("note: matplotlib is not installed; latency_cdf.png skipped "
              "(pip install matplotlib)", file=sys.stderr)
    say("wrote " + ", ".join(str(f) for f in files))
    return 0


def _fraction(text: str) -> float:
    t = text.strip()
    try:
        v = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction like 0.7 or 70%, got {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return v


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "replay", help="replay a trace through the admission core: tail latency per policy",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace", metavar="TRACE",
                   help="the primary's labelled trace (canonical Parquet or any format "
                        "'mittd trace' reads, or a directory or glob of Parquet segments "
                        "such as one device's IO records); one device")
    p.add_argument("--replica", action="append", metavar="TRACE2",
                   help="a replica's labelled trace (a file, or a directory or glob of "
                        "segments), in failover order (repeatable); default: TRACE itself "
                        "shifted by half its duration")
    p.add_argument("--model", "-m", action="append", metavar="BUNDLE",
                   help="a .mittd model bundle to replay (repeatable; one report row each); "
                        "BUNDLE@P replays it rejecting when P(slow) > P (an operating point; "
                        "the same bundle may appear at several)")
    p.add_argument("--policy", default=",".join(POLICIES), metavar="LIST",
                   help=f"comma-separated policies among {', '.join(POLICIES)} "
                        "(default: all; 'models' = one row per --model)")
    p.add_argument("--slo", default="auto", metavar="SLO",
                   help="the reads' deadline: a duration ('500us', '0.5ms', a bare number of "
                        "µs), a percentile ('p95') or 'auto' (the knee of the CDF) of the "
                        "primary's read latencies, or 'model' (the first model's trained "
                        "threshold); default auto")
    p.add_argument("--output", "-o", required=True, metavar="REPORT_DIR", type=output_dir,
                   help="directory for report.json and latency_cdf.png (created)")
    p.add_argument("--engine", default="auto", choices=ENGINE_NAMES,
                   help="inference engine, as the daemon's (default auto: the fastest "
                        "measured here)")
    p.add_argument("--failover-cost-us", type=non_negative_count, default=DEFAULT_FAILOVER_COST_US,
                   metavar="N",
                   help="µs added per failover hop: the fast EBUSY plus the re-send "
                        f"(default {DEFAULT_FAILOVER_COST_US}, a LAN round trip)")
    p.add_argument("--probe-after", type=non_negative_count, default=DEFAULT_PROBE_AFTER,
                   metavar="N",
                   help="admit one read as a probe after N predicted rejections in a row, "
                        f"as the daemon does (default {DEFAULT_PROBE_AFTER}; 0: never)")
    p.add_argument("--decision-threshold", type=probability, metavar="P",
                   help="reject when P(slow) > P (default: each bundle's own)")
    p.add_argument("--max-reject-share", type=share, metavar="S",
                   help="reject at most this share of a device's predicted decisions, in "
                        "(0, 1] (default: each bundle's policy; 1: no cap)")
    p.add_argument("--hedge-after-us", type=non_negative_float, metavar="US",
                   help="the hedge row's delay (default: the p95 of the replayed reads, i.e. "
                        "tuned on the data it is judged on)")
    p.add_argument("--from", dest="start", type=_fraction, default=0.0, metavar="F",
                   help="skip the first F of the IOs (issue order), e.g. 0.7 or 70%%: the "
                        "test split that 'mittd train' holds out (default 0)")
    p.add_argument("--limit", type=count, metavar="N",
                   help="replay only the first N IOs of TRACE (issue order)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the random policy (default 0)")
    p.add_argument("--format", "-f", choices=FORMAT_NAMES, default="auto", metavar="FORMAT",
                   help=f"format of the traces, one of {', '.join(FORMAT_NAMES)} (default "
                        "auto: detected from content)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar or messages; only the table")
    p.set_defaults(func=cmd_replay)
