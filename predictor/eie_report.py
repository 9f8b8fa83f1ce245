"""``mittd eie report``: seed 000's Tables 3–5 redone for mittd's bundles.

For each bundle it prints the analytic (paper's method) and cycle-simulated µs
per inference at each PE count next to the paper's row for the same model at the
nearest sparsity, then Table 5, and optionally writes a log-log PNG and JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from mittd.predictor import eie_perf as ep
from mittd.predictor.bundle import Bundle, BundleError, load_bundle
from mittd.predictor.graph import GraphError
from mittd.traces.argtypes import at_most, number, output_file, png_file, positive_int, sparsity
from mittd.traces.atomic import save_figure, write_text
from mittd.traces.shipped import shipped_trace

DEFAULT_TRACE = shipped_trace()


MAX_PES = 4096


def parse_pes(text: str) -> list[int]:
    """'1,2,4' → [1, 2, 4]; anything else is a one-line ValueError."""
    try:
        pes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--pes must be comma-separated positive integers, not {text!r}"
                         ) from None
    if not pes or min(pes) < 1:
        raise ValueError(f"--pes must be comma-separated positive integers, not {text!r}")
    if max(pes) > MAX_PES:  # the simulation holds per-PE state: 1e8 PEs asked for 262 GiB
        raise ValueError(f"--pes {max(pes)} is more PEs than the {MAX_PES} this emulation "
                         "models (EIE's paper goes to 256)")
    return sorted(set(pes))


def _open(spec: str, synthetic_sparsity: float | None) -> tuple[str, Bundle]:
    """A bundle file, or a model name when --synthetic-sparsity is given."""
    if synthetic_sparsity is not None and not spec.endswith(".mittd"):
        from mittd.predictor.synthetic import synthetic_bundle

        try:
            return f"{spec}@{synthetic_sparsity:g}", synthetic_bundle(
                spec, synthetic_sparsity, "magnitude")
        except (KeyError, ValueError) as e:
            raise ValueError(f"{spec}: cannot build a synthetic bundle ({e})") from None
    if not Path(spec).is_file():
        raise BundleError(f"{spec}: no such bundle file (give a .mittd bundle, or a model "
                          "name with --synthetic-sparsity)")
    return Path(spec).name, load_bundle(spec)


def sample_inputs(bundle: Bundle, trace: str | Path, samples: int) -> np.ndarray:
    """``samples`` featurised requests spread evenly over the trace."""
    from mittd.predictor.features import make_featuriser
    from mittd.traces.schema import read_trace

    if samples < 1:
        raise ValueError(f"--samples must be >= 1, not {samples}")
    if not bundle.featuriser:
        raise BundleError("bundle has no featuriser config; cannot featurise the trace")
    x = make_featuriser(bundle.featuriser).encode_trace(read_trace(str(trace)))
    if not len(x):
        raise ValueError(f"{trace}: trace has no requests")
    idx = np.unique(np.linspace(0, len(x) - 1, min(samples, len(x))).astype(np.int64))
    return x[idx]


def evaluate(label: str, bundle: Bundle, pes: list[int], x: np.ndarray) -> dict[str, Any]:
    """Analytic and simulated µs per PE count, and the paper comparison."""
    model = bundle.graph.name
    sp = ep.kernel_sparsity(bundle.params)
    analytic = ep.analytic_us(bundle.graph, bundle.params, pes)
    sim = ep.simulate_us(bundle.graph, bundle.params, x, pes)
    return {
        "label": label, "model": model, "sparsity": sp, "samples": len(x),
        "analytic_us": analytic, "simulated": {n: r.to_dict() for n, r in sim.items()},
        "paper_analytic": ep.compare_with_paper(model, sp, analytic),
        "paper_simulated": ep.compare_with_paper(
            model, sp, {n: r.mean_us for n, r in sim.items()}),
        "paper_cpu_us": _paper_cpu(model, sp),
    }


def _paper_cpu(model: str, sparsity: float) -> float | None:
    """The paper's i7-8700 µs for the row :func:`eie_perf.paper_row` picks."""
    row = ep.paper_row(model, sparsity)
    return ep.PAPER_CPU_US[model].get(row[0]) if row else None


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"


def format_result(r: dict[str, Any]) -> str:
    paper = {row["pes"]: row["paper_us"] for row in r["paper_analytic"]["rows"]}
    pct = r["paper_analytic"]["paper_sparsity_pct"]
    head = (f"{r['label']}: {r['model']}, weight sparsity {100 * r['sparsity']:.1f} %, "
            f"{r['samples']} inputs (mean dense-layer input density "
            f"{100 * next(iter(r['simulated'].values()))['activation_density']:.1f} %)")
    lines = [head, f"  paper row: {'none' if pct is None else f'{pct} %'}"
             + (f", CPU i7-8700 {r['paper_cpu_us']} µs" if r["paper_cpu_us"] else "")]
    lines.append(f"  {'PEs':>4} {'analytic':>9} {'sim mean':>9} {'sim p99':>9} "
                 f"{'paper':>7} {'an/paper':>9} {'sim/paper':>9}")
    for n, a in r["analytic_us"].items():
        s = r["simulated"][n]
        p = paper.get(n)
        lines.append(f"  {n:>4} {a:>9.3g} {s['mean_us']:>9.3g} {s['p99_us']:>9.3g} "
                     f"{_fmt(p):>7} {_fmt(a / p if p else None):>9} "
                     f"{_fmt(s['mean_us'] / p if p else None):>9}")
    return "\n".join(lines)


def format_table5(t5: dict[int, dict[str, float]], nm: float) -> str:
    lines = [f"Table 5 (EIE at {nm:g} nm; paper: 45 nm; CPU i7-8700 "
             f"{ep.PAPER_CPU_TABLE5[0]} GOPS, {ep.PAPER_CPU_TABLE5[1]} mm², "
             f"{ep.PAPER_CPU_TABLE5[2]:g} W)",
             f"  {'PEs':>4} {'GOPS':>7} {'mm²':>8} {'W':>8} {'paper mm²':>10} {'paper W':>8}"]
    for n, v in t5.items():
        p = ep.PAPER_TABLE5.get(n)
        lines.append(f"  {n:>4} {v['gops']:>7.3g} {v['area_mm2']:>8.3g} {v['power_w']:>8.3g} "
                     f"{_fmt(p[1] if p else None):>10} {_fmt(p[2] if p else None):>8}")
    return "\n".join(lines)


def write_png(results: list[dict[str, Any]], path: str | Path) -> None:
    """Latency vs PEs, log-log: analytic solid, simulated dashed, paper as markers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, r in enumerate(results):
        color = f"C{i % 10}"
        pes = list(r["analytic_us"])
        ax.plot(pes, list(r["analytic_us"].values()), "-", color=color,
                label=f"{r['label']} analytic")
        ax.plot(pes, [r["simulated"][n]["mean_us"] for n in pes], "--", color=color,
                label=f"{r['label']} simulated")
        row = ep.paper_row(r["model"], r["sparsity"])
        if row:
            ax.plot(list(row[1]), list(row[1].values()), "o", color=color, fillstyle="none",
                    label=f"paper {r['model']} {row[0]} %")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("EIE processing elements")
    ax.set_ylabel("µs per inference")
    ax.set_title("EIE latency: analytic (solid), simulated (dashed), seed 000 (markers)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    save_figure(fig, path)


def _check_outputs(args: argparse.Namespace) -> None:
    """--json/--png must not name a bundle or the trace read: refuse before the work
    rather than overwrite an input with the report."""
    ins = [Path(i) for i in [*args.bundles, args.trace] if Path(i).is_file()]
    for opt, out in (("--json", args.json), ("--png", args.png)):
        if out and Path(out).exists() and any(Path(out).samefile(i) for i in ins):
            raise ValueError(f"{opt} {out}: is an input of this report; refusing to "
                             "overwrite it")


def cmd_eie_report(args: argparse.Namespace) -> int:
    _check_outputs(args)
    pes = parse_pes(args.pes)
    t5 = ep.table5(pes, args.process_nm)
    results = []
    for spec in args.bundles:
        label, bundle = _open(spec, args.synthetic_sparsity)
        x = sample_inputs(bundle, args.trace, args.samples)
        r = evaluate(label, bundle, pes, x)
        results.append(r)
        print(format_result(r))
        print()
    print(format_table5(t5, args.process_nm))
    if args.png:
        write_png(results, args.png)
    if args.json:
        doc = {"pes": pes, "process_nm": args.process_nm, "table5": t5, "results": results}
        write_text(args.json, json.dumps(doc, indent=1, default=str))
    return 0


MAX_SAMPLES = 100_000  # inputs simulated cycle by cycle: more is hours, not a report
_samples = at_most(positive_int, MAX_SAMPLES)


_process_nm = number(0.0, 10_000.0, lo_open=True, hi_open=False,
                     doc="A process node in nm: > 0, no larger than the first transistors.")


def _one_line_errors(fn: Any) -> Any:
    """Bad --pes, unknown models: ValueError becomes the CLI's one-line error."""
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except ValueError as e:
            raise GraphError(str(e)) from None
    return run


def add_commands(commands: argparse._SubParsersAction) -> None:
    eie = commands.add_parser("eie", help="EIE accelerator latency/area/power estimates",
                              description="Seed 000's EIE estimates for mittd's models.")
    sub = eie.add_subparsers(dest="eie_command", metavar="SUBCOMMAND")
    sub.required = True
    p = sub.add_parser(
        "report", help="µs per inference vs PEs (analytic and simulated), Table 5",
        description="For each bundle: µs per inference on an N-PE EIE by the paper's "
        "analytic method (busiest PE's non-zeros at 1.6 GOPS, dense activations) and by "
        "a cycle simulation on real inputs featurised from a trace, next to seed 000's "
        "Tables 3/4 row at the nearest sparsity; then Table 5 (GOPS, mm², W).")
    p.add_argument("bundles", nargs="+", metavar="MODEL.mittd",
                   help="bundles (or model names with --synthetic-sparsity)")
    p.add_argument("--pes", default="1,2,4,8,16,32,64", help="PE counts, comma-separated")
    p.add_argument("--process-nm", type=_process_nm, default=ep.EIE_NM,
                   help="process node for Table 5's area and power (EIE: 45)")
    p.add_argument("--samples", type=_samples, default=200, help="inputs to simulate")
    p.add_argument("--trace", default=str(DEFAULT_TRACE), help="trace to featurise")
    p.add_argument("--synthetic-sparsity", type=sparsity, metavar="S",
                   help="treat names as models: random weights magnitude-pruned to S")
    p.add_argument("--png", metavar="FILE", type=png_file,
                   help="write latency vs PEs as a PNG")
    p.add_argument("--json", type=output_file, metavar="FILE", help="write the results as JSON")
    p.set_defaults(func=_one_line_errors(cmd_eie_report))
