"""The flows behind ``mittd train``, ``prune`` and ``compress``: data → model →
evaluation report → bundle, with every step's figures kept for the reports."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mittd.predictor.bundle import Bundle, load_bundle
from mittd.predictor.engines import make_engine
from mittd.predictor.graph import Params, p_slow
from mittd.predictor.models import MODEL_FEATURISER
from mittd.training import evaluate as ev
from mittd.training.dataset import Dataset, load_dataset

# TensorFlow (training.train, .prune, .compress, .keras_graph) is imported inside
# the flows, after the data has loaded: a bad trace fails in a second, not after
# TensorFlow's start-up.

SWEEPS = {"precise_linear": (0.90, 0.95, 0.97, 0.98), "good_custom": (0.90, 0.95)}
PRUNE_METHODS = ("magnitude", "simd", "node", "scalpel")


def p_slow_of(graph: Any, params: Params, x: np.ndarray) -> np.ndarray:
    """P(slow) from a compiled engine — the numbers the daemon will act on."""
    return p_slow(graph, make_engine("csr", graph, params).logits(x))


def achieved_sparsity(params: Params) -> float:
    """Fraction of zero kernel weights over the whole network (node pruning can
    remove more than asked: its masks close whole nodes)."""
    total = sum(k.size for k, _ in params.values())
    return sum(int((k == 0).sum()) for k, _ in params.values()) / total if total else 0.0


def _first_threshold(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The SLO (first) threshold's column of a multi-threshold head's output."""
    return (p[:, 0] if p.ndim == 2 else p), (y[:, 0] if y.ndim == 2 else y)


def evaluate_params(graph: Any, params: Params, ds: Dataset, threshold: float = 0.5, *,
                    report_dir: Path | None = None, name: str = "") -> dict[str, Any]:
    """Test-split metrics of the first (SLO) threshold, from the compiled engine; with
    ``report_dir``, also the JSON/text/PNG report, from the same predictions."""
    p, y = _first_threshold(p_slow_of(graph, params, ds.x_test), ds.y_test)
    m = ev.metrics(y, p, threshold)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        ev.write_report(report_dir, name, m, ds.lat_test, y,
                        (p > threshold).astype(np.int8), ds.thresholds_us[0])
    return m


def decision_latency_us(graph: Any, params: Params, x: np.ndarray, calls: int = 3000
                        ) -> float:
    """Median batch-1 µs per decision of the ``auto`` engine on real inputs."""
    engine = make_engine("auto", graph, params, sample=x[:64])
    buf = engine.input
    clock = time.perf_counter_ns
    samples = np.empty(calls, np.int64)
    for i in range(calls + 300):
        buf[:] = x[i % len(x)]
        t0 = clock()
        engine.margin1()
        if i >= 300:
            samples[i - 300] = clock() - t0
    return float(np.median(samples)) / 1e3


def dataset_for_bundle(bundle: Bundle, traces: Sequence[str] | None) -> Dataset:
    """The data a bundle was trained on (or ``traces``), labelled at its threshold."""
    data = bundle.provenance.get("data", {})
    sources = list(traces or data.get("sources") or [])
    if not sources:
        raise ValueError("the bundle does not record its training traces; pass --trace")
    thresholds = bundle.latency_thresholds_us()
    return load_dataset(
        sources, bundle.featuriser["name"], slo=f"{thresholds[0]}us",
        ladder_k=None, test_fraction=float(data.get("test_fraction", 0.3)),
        reads_only=bool(data.get("reads_only", False)), featuriser_config=bundle.featuriser,
    )


def run_prune(model: Any, graph: Any, ds: Dataset, method: str, sparsity: float, *,
              group: int = 8, epochs: int = 3, batch_size: int = 256, seed: int = 0,
              verbose: int = 0) -> Params:
    from mittd.training import prune as pr
    from mittd.training.train import loss_for

    common = {"epochs": epochs, "batch_size": batch_size, "loss": loss_for(graph),
              "class_weight": ds.class_weight, "seed": seed, "verbose": verbose}
    if method == "magnitude":
        return pr.prune_magnitude(model, graph, ds.x_train, ds.y_train, sparsity=sparsity,
                                  **common)
    if method == "simd":
        return pr.prune_simd(model, graph, ds.x_train, ds.y_train, sparsity=sparsity,
                             group=group, **common)
    if method == "node":
        return pr.prune_node(model, graph, ds.x_train, ds.y_train, sparsity=sparsity,
                             **common)
    if method == "scalpel":
        return pr.prune_scalpel(model, graph, ds.x_train, ds.y_train, sparsity=sparsity,
                                group=group, **common)
    raise ValueError(f"pruning method must be one of {', '.join(PRUNE_METHODS)}")


def train_flow(traces: Sequence[str], model_name: str, slo: str, out: Path, *,
               epochs: int, batch_size: int, learning_rate: float, seed: int,
               test_fraction: float, ladder_k: int | None, reads_only: bool,
               report_dir: Path | None, sweep: bool, say: Callable[[str], None],
               verbose: int = 1) -> dict[str, Any]:
    ds = load_dataset(list(traces), MODEL_FEATURISER[model_name], slo=slo, ladder_k=ladder_k,
                      test_fraction=test_fraction, reads_only=reads_only)
    from mittd.training.train import check_export, export, make_bundle, provenance, train
    say(f"data: {ds.info.get('n_train', len(ds.x_train)):,} training and "
        f"{ds.info.get('n_test', len(ds.x_test)):,} test IOs; slow = latency > "
        f"{', '.join(f'{t:,.0f}' for t in ds.thresholds_us)} µs")
    ds.info.setdefault("test_fraction", test_fraction)
    ds.info.setdefault("reads_only", reads_only)
    ds.info.setdefault("sources", [str(Path(t).resolve()) for t in traces])
    trained = train(model_name, ds, epochs=epochs, batch_size=batch_size,
                    learning_rate=learning_rate, seed=seed, verbose=verbose)
    m = evaluate_params(trained.graph, trained.params, ds, report_dir=report_dir,
                        name=f"{model_name}_dense")
    agreement = check_export(trained.model, trained.graph, trained.params, ds.x_test)
    say(ev.render(m))
    prov = provenance(ds, model_name, slo=slo, epochs=epochs, batch_size=batch_size,
                      learning_rate=learning_rate, seed=seed, train_seconds=trained.seconds,
                      test_metrics=m, keras_agreement=agreement, sparsity=0.0,
                      pruning=None)
    sha = export(out, make_bundle(trained.graph, trained.params, ds, prov))
    say(f"wrote {out} (sha256 {sha[:12]}…, trained in {trained.seconds:.0f} s; "
        f"engine and Keras agree on {agreement:.2%} of test decisions)")
    result: dict[str, Any] = {"bundle": str(out), "metrics": m, "agreement": agreement,
                              "seconds": trained.seconds}
    if sweep:
        rows = [{"sparsity": 0.0, **m}]
        for s in SWEEPS.get(model_name, (0.9, 0.95)):
            say(f"pruning to {s:.0%} (magnitude, TF-MOT) and fine-tuning …")
            from mittd.training.keras_graph import to_keras

            params = run_prune(to_keras(trained.graph, trained.params), trained.graph, ds,
                               "magnitude", s, batch_size=batch_size, seed=seed)
            ms = evaluate_params(trained.graph, params, ds, report_dir=report_dir,
                                 name=f"{model_name}_magnitude_{round(s * 100)}")
            rows.append({"sparsity": s, **ms})
            sweep_out = out.with_name(f"{out.stem}.magnitude{round(s * 100)}{out.suffix}")
            prov_s = dict(prov, sparsity=s, pruning="magnitude", test_metrics=ms)
            export(sweep_out, make_bundle(trained.graph, params, ds, prov_s))
        table = ev.sparsity_table(rows)
        say(table)
        if report_dir:
            (report_dir / f"{model_name}_sparsity_table.md").write_text(table + "\n")
        result["sweep"] = rows
    if report_dir:
        (report_dir / f"{model_name}_train.json").write_text(
            json.dumps(result, indent=1, default=float))
    return result


def prune_flow(bundle_path: Path, method: str, sparsity: float, out: Path, *, group: int,
               epochs: int, traces: Sequence[str] | None, seed: int,
               report_dir: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    bundle = load_bundle(bundle_path)
    ds = dataset_for_bundle(bundle, traces)
    from mittd.training.keras_graph import to_keras
    from mittd.training.train import export, make_bundle

    before = evaluate_params(bundle.graph, bundle.params, ds)
    params = run_prune(to_keras(bundle.graph, bundle.params), bundle.graph, ds, method,
                       sparsity, group=group, epochs=epochs, seed=seed)
    m = evaluate_params(bundle.graph, params, ds, report_dir=report_dir,
                        name=f"{bundle.graph.name}_{method}_{round(sparsity * 100)}")
    us = decision_latency_us(bundle.graph, params, ds.x_test)
    us0 = decision_latency_us(bundle.graph, bundle.params, ds.x_test)
    say(ev.render(m))
    achieved = achieved_sparsity(params)
    say(f"sparsity asked {sparsity:.1%}, achieved {achieved:.1%}")
    say(f"batch-1 decision (auto engine): {us0:.2f} µs → {us:.2f} µs; "
        f"accuracy {before['accuracy']:.2%} → {m['accuracy']:.2%}, ROC-AUC "
        f"{before['roc_auc']:.3f} → {m['roc_auc']:.3f}")
    prov = dict(bundle.provenance, parent=bundle.sha256, pruning=method, sparsity=achieved,
                sparsity_asked=sparsity,
                group=group, prune_epochs=epochs, test_metrics=m, decision_us=us)
    sha = export(out, make_bundle(bundle.graph, params, ds, prov,
                                  bundle.decision_thresholds()[0]))
    say(f"wrote {out} (sha256 {sha[:12]}…)")
    return {"metrics": m, "before": before, "decision_us": us, "dense_decision_us": us0,
            "achieved_sparsity": achieved}


def compress_flow(bundle_path: Path, weights: str, out: Path, *, finetune: bool,
                  traces: Sequence[str] | None, seed: int, say: Callable[[str], None]
                  ) -> dict[str, Any]:
    bundle = load_bundle(bundle_path)
    ds = dataset_for_bundle(bundle, traces)
    from mittd.training import compress as cz
    from mittd.training.train import export, loss_for, make_bundle
    before = evaluate_params(bundle.graph, bundle.params, ds)
    codebooks = None
    if weights == "fp16":
        params = cz.fp16(bundle.params)
    elif weights == "kmeans4":
        params, codebooks = cz.kmeans4(bundle.params, seed=seed)
        if finetune:
            from mittd.training.keras_graph import to_keras

            params, codebooks = cz.finetune_centroids(
                to_keras(bundle.graph, params), bundle.graph, params, codebooks,
                ds.x_train, ds.y_train, loss=loss_for(bundle.graph),
                class_weight=ds.class_weight, seed=seed)
    else:
        raise ValueError("--weights must be kmeans4 or fp16")
    m = evaluate_params(bundle.graph, params, ds)
    say(ev.render(m))
    say(f"{weights}: accuracy {before['accuracy']:.2%} → {m['accuracy']:.2%}, ROC-AUC "
        f"{before['roc_auc']:.3f} → {m['roc_auc']:.3f}")
    hints = {}
    if codebooks is not None:
        hints["codebooks"] = {name: [float(c) for c in cb[0]] for name, cb in codebooks.items()}
    prov = dict(bundle.provenance, parent=bundle.sha256, compression=weights,
                centroid_finetune=finetune, test_metrics=m)
    b = make_bundle(bundle.graph, params, ds, prov, bundle.decision_thresholds()[0])
    b.hints.update(hints)
    sha = export(out, b)
    say(f"wrote {out} (sha256 {sha[:12]}…)")
    return {"metrics": m, "before": before}
