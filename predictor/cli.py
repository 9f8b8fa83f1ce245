"""``mittd model describe``: a model's Table 1 row, a bundle's contents;
``mittd model upgrade``: re-export a bundle in the current format (same weights)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mittd.predictor.bundle import VERSION, BundleError, bundle_summary, load_bundle, save_bundle
from mittd.predictor.graph import GraphError
from mittd.predictor.models import MODELS, PAPER_TABLE1, build_model
from mittd.traces.argtypes import output_file

USER_ERRORS = (BundleError, GraphError)


def cmd_describe(args: argparse.Namespace) -> int:
    target = args.model
    bundle = None
    if target in MODELS:
        graph = build_model(target)
    elif Path(target).exists():
        bundle = load_bundle(target)
        graph = bundle.graph
    else:
        raise GraphError(f"{target}: neither a model name ({', '.join(MODELS)}) nor a bundle "
                         "file")
    d = graph.describe()
    out = {"table1": d}
    paper = PAPER_TABLE1.get(d["model"])
    if paper:
        out["paper"] = dict(zip(("layers", "max_kernel", "weights", "ops"), paper,
                                strict=True))
    if bundle is not None:
        out["bundle"] = {"sha256": bundle.sha256, "featuriser": bundle.featuriser,
                         "thresholds": bundle.thresholds, "policy": bundle.policy,
                         "provenance": bundle.provenance,
                         **bundle_summary(bundle)}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    w = max(16, len(d["model"]) + 2)
    print(f"{'model':<{w}}{'layers':>7}{'max kernel':>12}{'weights':>12}{'operations':>13}")
    print(f"{d['model']:<{w}}{d['layers']:>7}{d['max_kernel']:>12}{d['weights']:>12,}"
          f"{d['ops']:>13,}")
    if paper:
        print(f"{'(seed 000)':<{w}}{paper[0]:>7}{paper[1]:>12}{paper[2]:>12,}{paper[3]:>13,}")
    print(f"input {d['input_dim']} features, output {d['output_dim']} logits ({d['head']} "
          "head); operations = 2 per kernel weight + biases and joins")
    if bundle is not None:
        s = out["bundle"]
        print(f"\nbundle {target}: sha256 {bundle.sha256[:16]}…, featuriser "
              f"{bundle.featuriser.get('name')}, latency threshold(s) "
              f"{bundle.latency_thresholds_us()} µs")
        from mittd.predictor.policy import DecisionPolicy

        try:
            policy = DecisionPolicy.from_dict(bundle.policy).describe()
        except ValueError as e:
            policy = f"invalid ({e})"
        print(f"decision policy: {policy}")
        old = bundle.old_format_warning()
        if old is not None:
            print(f"WARNING {old}")
        reason = bundle.degenerate_reason()
        if reason is not None:
            print(f"WARNING degenerate model (its decisions are not to be trusted): "
                  f"{reason.removeprefix('degenerate: ')}")
        print(f"kernel sparsity {s['kernel_sparsity']:.2%}\n")
        print(f"  {'layer':<16}{'shape':>10}{'weights':>10}{'non-zero':>10}{'sparsity':>10}")
        for r in s["layers"]:
            print(f"  {r['layer']:<16}{r['shape']:>10}{r['weights']:>10,}{r['nonzero']:>10,}"
                  f"{r['sparsity']:>10.1%}")
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Read (every check of load_bundle), write in the current format, read back."""
    src = Path(args.bundle)
    out = Path(args.output) if args.output else src
    bundle = load_bundle(src)
    before = bundle.format_version
    sha = save_bundle(bundle, out)
    again = load_bundle(out)
    print(f"{out}: bundle format {before} -> {again.format_version}, sha256 {sha[:16]}…, "
          "same weights")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    model = commands.add_parser("model", help="describe a model or a model bundle",
                                description="Inspect the predictor's models and bundles.")
    sub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    sub.required = True
    d = sub.add_parser(
        "describe", help="Table 1 row (layers, max kernel, weights, ops), per-layer sparsity",
        description="Print a model's row of seed 000's Table 1 (dense layers, largest "
        "kernel, weights, operations) next to the paper's; for a bundle also its "
        "featuriser, thresholds, provenance and per-layer sparsity.")
    d.add_argument("model", help=f"a model name ({', '.join(MODELS)}) or a .mittd bundle")
    d.add_argument("--json", action="store_true", help="print as JSON")
    d.set_defaults(func=cmd_describe)
    u = sub.add_parser(
        "upgrade", help="re-export a bundle in the current format (same weights)",
        description=f"Read a bundle with every check, write it as format {VERSION} (whose "
        "sha256 covers the manifest too, so an edited threshold or policy is refused) "
        "atomically, and read it back. The weights, thresholds and policy are unchanged; "
        "the sha256 (the daemon's model_sha) changes.")
    u.add_argument("bundle", help="the .mittd bundle to upgrade")
    u.add_argument("-o", "--output", type=output_file,
                   help="write here instead of replacing BUNDLE in place")
    u.set_defaults(func=cmd_upgrade)
