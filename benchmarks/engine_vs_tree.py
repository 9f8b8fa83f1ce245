"""This tree's ``auto`` engine against another commit's, on the same weights.

Why: "N x faster than before" means little unless both engines run the same
network on the same inputs on the same machine, interleaved (a shared VM's speed
moves by 1.7x within minutes). The bundles are this tree's synthetic ones, dumped
once; each round times the other tree's ``auto`` and this tree's in fresh
processes, one after the other, and the table gives the median over rounds and the
median of the per-round ratios.

    git worktree add /tmp/before 5d51d90
    .venv/bin/python benchmarks/engine_vs_tree.py /tmp/before --rounds 8

The other tree must import as ``mittd`` from its root and offer
``make_engine(name, graph, params, sample=)``, ``limit_blas_threads`` and ``bench
predictor``'s ``time_calls`` (5d51d90 and later do).
Cell: p50 of ``--calls`` individually timed ``margin1()`` calls after 500 warm-up
calls, the input copy (timed apart) taken off; BLAS capped at one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = [("precise_linear", 0.98, "magnitude"), ("precise_linear", 0.95, "magnitude"),
           ("precise_linear", 0.98, "simd"), ("precise_linear", 0.98, "node"),
           ("precise_linear", 0.95, "node"), ("good_custom", 0.0, "magnitude"),
           ("good_custom", 0.9, "magnitude")]


def dump(path: Path) -> None:
    """This tree's bundles and trace inputs, as plain arrays either tree can read."""
    from mittd.predictor.features import FEATURISERS
    from mittd.predictor.models import MODEL_FEATURISER
    from mittd.predictor.synthetic import synthetic_bundle
    from mittd.traces.schema import read_trace
    from mittd.traces.shipped import shipped_trace

    table = read_trace(shipped_trace()).slice(0, 4096)
    out = {}
    for model, s, m in CONFIGS:
        x = FEATURISERS[MODEL_FEATURISER[model]]().encode_trace(table)
        b = synthetic_bundle(model, s, m, seed=0)
        out[f"{model} {s:.0%} {m}"] = (model, {k: (a, c) for k, (a, c) in b.params.items()}, x)
    path.write_bytes(pickle.dumps(out))


def time_auto(path: Path, calls: int) -> dict[str, float]:
    """p50 µs of ``auto``'s ``margin1()`` per config, with whichever mittd imports,
    timed by that tree's ``bench predictor`` loop (``time_calls``)."""
    import numpy as np

    from mittd.daemon.bench.predictor import time_calls
    from mittd.predictor.engines import limit_blas_threads, make_engine
    from mittd.predictor.models import build_model

    limit_blas_threads(1)
    res = {}
    for key, (model, params, x) in pickle.loads(path.read_bytes()).items():
        e = make_engine("auto", build_model(model), params, sample=x[:64])
        inp, n = e.input, len(x)

        def copy(i: int, inp=inp, x=x, n=n) -> None:  # type: ignore[no-untyped-def]
            inp[:] = x[i % n]

        def one(i: int, e=e, copy=copy) -> None:  # type: ignore[no-untyped-def]
            copy(i)
            e.margin1()

        t, c = time_calls(one, calls), time_calls(copy, calls // 4)
        res[key] = float(np.median(t) - np.median(c)) / 1e3
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("other", type=Path, help="the other commit's tree (a git worktree)")
    ap.add_argument("--rounds", type=int, default=8, help="alternations (default 8)")
    ap.add_argument("--calls", type=int, default=5000, help="timed calls per cell")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        print(json.dumps(time_auto(a.child, a.calls)))
        return 0
    if not (a.other / "predictor" / "engines.py").is_file():
        ap.error(f"other: {a.other} is not a mittd tree (no predictor/engines.py)")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bundles.pkl"
        dump(data)
        link = Path(tmp) / "path"
        link.mkdir()
        (link / "mittd").symlink_to(a.other.resolve())
        runs: dict[str, list[dict[str, float]]] = {"other": [], "this": []}
        for r in range(a.rounds):
            for side, env in (("other", {"PYTHONPATH": str(link)}), ("this", {})):
                out = subprocess.run(
                    [sys.executable, __file__, str(a.other), "--child", str(data),
                     "--calls", str(a.calls)], env={**os.environ, **env}, check=True,
                    capture_output=True, text=True, cwd=tmp).stdout
                runs[side].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr)
    print(f"| config | {a.other.name} | this tree | ratio of medians | median per-round ratio |")
    print("|---|---:|---:|---:|---:|")
    for key in runs["this"][0]:
        o = [x[key] for x in runs["other"]]
        t = [x[key] for x in runs["this"]]
        ratio = statistics.median(p / q for p, q in zip(o, t, strict=True))
        print(f"| {key} | {statistics.median(o):.2f} [{min(o):.2f}–{max(o):.2f}] "
              f"| {statistics.median(t):.2f} [{min(t):.2f}–{max(t):.2f}] "
              f"| {statistics.median(o) / statistics.median(t):.2f}× | {ratio:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
