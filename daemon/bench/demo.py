"""``mittd demo``: the whole product in one command, on what the repository ships.

1. Offline: replay the held-out last 30 % of the shipped real trace
   (``traces/samples/fio_mixed_30s.parquet``; the shipped models trained on the
   first 70 %) through the daemon's admission core with the shipped models, next
   to no rejection, hedging, random rejection and the oracle (``mittd replay``).
2. Live: two file-backed replicas on this machine's disk, direct IO, fio
   contention, and a closed-loop client deciding in its own process (the
   in-process path of ``mittd bench live``: no RPC), with and without mittd,
   with hedging and with both, for a short while.
3. One before/after table: p99 read latency without mittd, with mittd, with
   hedging, and the extra IOs each costs; where the CDF plots were written.

Nothing is trained or downloaded. The live part needs fio; where it cannot run,
the demo says why and still prints the offline result.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from mittd.predictor.shipped import shipped_bundle
from mittd.traces.argtypes import output_dir, positive_float
from mittd.traces.shipped import shipped_trace

SAMPLE = shipped_trace()
# mittd's own models: seed 000's precise_linear on LBA bits only, and on LBA bits +
# queue/latency history, the latter also at a stricter operating point (reject only
# when P(slow) > 0.97) whose extra load stays at or below hedging's 5 %
MITTD_MODELS = ("precise_linear_node95", "precise_linear_hist_node95")
STRICT = ("precise_linear_hist_node95", 0.97)
PEER_MODELS = ("heimdall", "linnos")
TEST_FROM = 0.7  # mittd train's default split: the last 30 % was never trained on


class DemoError(Exception):
    """The demo cannot run as asked; one line for the user."""


def _say(msg: str) -> None:
    print(msg, flush=True)


def offline(out: Path, quiet: bool = False) -> dict[str, Any]:
    """Replay the shipped trace's test split with the shipped models; the report dict."""
    from mittd.daemon.replay import POLICIES, load_model, load_trace, run_replay
    from mittd.daemon.replay.report import format_table, write_report

    if not SAMPLE.is_file():
        raise DemoError(f"{SAMPLE}: the shipped trace is missing from this checkout")
    models = [load_model(shipped_bundle(n), n) for n in (*MITTD_MODELS, *PEER_MODELS)]
    name, cut = STRICT
    models.insert(len(MITTD_MODELS), load_model(f"{shipped_bundle(name)}@{cut}",
                                                f"{name}@{cut}"))
    primary = load_trace(SAMPLE, start=TEST_FROM)
    replay = run_replay(primary, [], models, list(POLICIES), "model",
                        progress=not quiet and sys.stderr.isatty(),
                        say=None if quiet else (lambda m: _say(f"  {m}")))
    report, files, _ = write_report(replay, out)
    print(format_table(report), flush=True)
    report["files"] = [str(f) for f in files]
    return report


def live(out: Path, duration_s: float, quiet: bool = False, size: int = 256 << 20,
         directory: str | Path | None = None) -> dict[str, Any] | None:
    """The short live run, in-process; None (with the reason printed) where it cannot run
    here. ``size`` and ``directory`` are for tests (the demo: 256 MiB in ./out)."""
    try:
        from mittd.daemon.bench import live as live_mod
    except ImportError as e:  # pragma: no cover - packaging error
        _say(f"  live run skipped: {e}")
        return None
    if shutil.which("fio") is None:
        _say("  live run skipped: fio is not installed (sudo apt-get install fio)")
        return None
    try:
        name, cut = STRICT
        return live_mod.run_live(duration_s=duration_s, out_dir=out, quiet=quiet,
                                 model=shipped_bundle(name), decision_threshold=cut,
                                 size=size, directory=directory, path="inproc",
                                 # the demo's 5-60 s: a validation window (16 slices)
                                 # would leave the test part one short round; its cutoff
                                 # was chosen offline on the trace's validation window
                                 validation_rounds=0)
    except live_mod.LiveError as e:
        _say(f"  live run skipped: {e}")
        return None


def _row(rows: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    return rows.get(name)


def live_rows(on: dict[str, Any]) -> list[str]:
    """The live run's row of the before/after table (and a note when mittd cut nothing)."""
    m = on["modes"]
    path = "in-process" if on.get("path", "inproc") == "inproc" else "gRPC"
    lines = [
        f"| live, this machine, {on['duration_s']:.0f} s of real IO ({path}): "
        f"{STRICT[0]}@{STRICT[1]} | "
        f"{m['none']['p99_us']:,.0f} µs | {m['mittd']['p99_us']:,.0f} µs | "
        f"{1 - m['mittd']['p99_us'] / m['none']['p99_us']:.0%} | "
        f"{m['hedge']['p99_us']:,.0f} µs | {m['mittd']['failover_rate']:.1%} | "
        f"{m['hedge']['extra_io_fraction']:.1%} |"]
    if m["mittd"]["p99_us"] >= m["none"]["p99_us"]:
        lines += ["", "live: no cut on this machine. Both replicas are files on one disk (a "
                  "write burst slows both, so a failover finds no faster replica), and on 2 "
                  "cores every decision's CPU is taken from the reads; `mittd bench live "
                  "--dir out,/dev/shm --busy 0.5,0` puts one replica in RAM (see the live "
                  "check in docs/RESULTS.md)."]
    return lines


def summary(off: dict[str, Any], on: dict[str, Any] | None) -> str:
    """The before/after table (markdown-style, readable on a terminal)."""
    rows = {r["policy"]: r for r in off["policies"]}
    base, hedge = rows["baseline"], rows["hedge"]
    peers = [rows[n] for n in PEER_MODELS if n in rows]
    lines = [
        "| | p99 without mittd | p99 with mittd | p99 cut | p99 hedging | reads sent "
        "elsewhere, mittd | extra IOs, hedging |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in (*MITTD_MODELS, f"{STRICT[0]}@{STRICT[1]}"):
        r = rows.get(name)
        if r is None:
            continue
        lines.append(
            f"| offline, shipped trace's held-out 30 %: {name} | {base['p99_us']:,.0f} µs | "
            f"{r['p99_us']:,.0f} µs | {1 - r['p99_us'] / base['p99_us']:.0%} | "
            f"{hedge['p99_us']:,.0f} µs | {r['extra_io_fraction']:.1%} | "
            f"{hedge['extra_io_fraction']:.1%} |")
    if on is not None:
        lines += live_rows(on)
    if peers:
        lines.append("")
        lines.append("peers on the same replay (p99): " + ", ".join(
            f"{r['policy']} {r['p99_us']:,.0f} µs" for r in peers)
            + f"; oracle {rows['oracle']['p99_us']:,.0f} µs")
    return "\n".join(lines)


def run(out_dir: str | Path = "out/demo", duration_s: float = 40.0, live_run: bool = True,
        quiet: bool = False) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    steps = 3 if live_run else 2
    _say(f"[1/{steps}] offline replay: the last 30 % of the shipped trace (never trained on), "
         "shipped models, failover to the trace's time-shifted twin")
    off = offline(out / "replay", quiet)
    on = None
    if live_run:
        _say(f"\n[2/{steps}] live: 2 file-backed replicas, O_DIRECT, fio contention, "
             f"closed-loop client deciding in-process ({duration_s:.0f} s)")
        on = live(out / "live", duration_s, quiet)
    _say(f"\n[{steps}/{steps}] before / after")
    print(summary(off, on), flush=True)
    pngs = [f for f in off["files"] if f.endswith(".png")]
    if on is not None:
        pngs += [str(p) for p in on.get("files", []) if str(p).endswith(".png")]
    _say("\nlatency CDF plots: " + (", ".join(pngs) if pngs else "none (matplotlib missing)"))
    _say(f"reports: {out}/ (JSON next to each plot); done in {time.monotonic() - t0:.0f} s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if not 5.0 <= args.duration <= 60.0:
        raise DemoError(f"--duration must be between 5 and 60 s, got {args.duration:g}")
    return run(args.output, args.duration, not args.no_live, args.quiet)


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "demo", help="see mittd work: offline replay + a short live run, one table",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", "-o", default="out/demo", metavar="DIR", type=output_dir,
                   help="where reports and plots go (default out/demo)")
    p.add_argument("--duration", type=positive_float, default=40.0, metavar="S",
                   help="seconds of the live run, 5..60 (default 40)")
    p.add_argument("--no-live", action="store_true", help="offline replay only")
    p.add_argument("--quiet", "-q", action="store_true", help="tables only")
    p.set_defaults(func=cmd_demo)


USER_ERRORS = (DemoError,)
