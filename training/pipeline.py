"""The flows behind ``mittd train``, ``prune`` and ``compress``: data → model →
evaluation report → bundle, with every step's figures kept for the reports."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mittd.predictor.bundle import Bundle, load_bundle
from mittd.predictor.engines import make_engine
from mittd.predictor.graph import Params, input_reach, p_slow
from mittd.predictor.models import MODEL_FEATURISER
from mittd.traces.atomic import write_text
from mittd.training import evaluate as ev
from mittd.training.dataset import Dataset, load_dataset

# TensorFlow (training.train, .prune, .compress, .keras_graph) is imported inside
# the flows, after the data has loaded: a bad trace fails in a second, not after
# TensorFlow's start-up.

SWEEPS = {"precise_linear": (0.90, 0.95, 0.97, 0.98), "good_custom": (0.90, 0.95)}
PRUNE_METHODS = ("magnitude", "simd", "node", "scalpel")
DEFAULT_VALIDATION_FRACTION = 0.2
DEFAULT_REJECT_BUDGET = 0.05  # hedging's extra load (a duplicate after the p95)


def selection_spec(ds: Dataset, replica: str | None, reject_budget: float) -> dict[str, Any] | None:
    """Where the operating point is chosen: the first trace's validation window (None
    when the dataset has none, or when a ladder head has several cutoffs to choose)."""
    t = ds.info["traces"][0]
    if not t.get("n_validation") or t.get("validation_ts_us") is None \
            or len(ds.thresholds_us) != 1:
        return None
    return {"trace": str(Path(t["path"]).resolve()),
            "window_ts_us": [int(t["validation_ts_us"]), int(t["split_ts_us"])],
            "replica": str(Path(replica).resolve()) if replica else None,
            "reject_budget": float(reject_budget), "slo_us": float(ds.thresholds_us[0])}


def choose_policy(bundle: Bundle, spec: dict[str, Any], say: Callable[[str], None],
                  name: str = "model", progress: bool = False) -> dict[str, Any]:
    """Choose ``bundle``'s decision policy by closed-loop replay of the validation window
    (``mittd.daemon.replay.select``) and store it, with the cutoff, in the bundle."""
    from mittd.daemon.replay.core import Model
    from mittd.daemon.replay.select import select_policy
    from mittd.daemon.replay.traces import Replica, load_trace, replica_notes, time_window

    full = load_trace(spec["trace"])
    lo, hi = spec["window_ts_us"]
    window = time_window(full, lo, hi, "validation window")
    if spec.get("replica"):
        rep = Replica(spec["replica"], load_trace(spec["replica"], what="replica trace"),
                      lo - full.t0)
    else:
        rep = Replica(f"{full.path} (itself, shifted {full.period_us // 2:,} µs)", full,
                      lo - full.t0 + full.period_us // 2)
    for note in replica_notes(window, [rep], bool(spec.get("replica"))):
        say(f"note: {note}")
    sel = select_policy(Model(name, "<training>", bundle), window, rep, spec["slo_us"],
                        reject_budget=spec["reject_budget"], progress=progress)
    say(sel.table())
    say(f"policy: {sel.policy.describe()}")
    n = bundle.graph.output_dim if bundle.graph.head == "sigmoid" else 1
    bundle.thresholds["p_slow"] = [float(sel.p_cutoff)] * n
    bundle.policy = sel.policy.to_dict()
    return sel.to_dict()


def flag_degenerate(prov: dict[str, Any], m: Mapping[str, Any], command: str) -> None:
    """Carry the test split's verdict into the bundle (``provenance.degenerate`` and
    ``degenerate_reason``, shown by ``mittd check``) and say it on stderr even with
    ``--quiet``: a model that cannot be judged, or answers one class, must not ship
    silently. Not refused: on a quiet device a one-class test split is what there is."""
    degenerate = bool(m.get("degenerate"))
    prov["degenerate"] = degenerate
    prov["degenerate_reason"] = m.get("warning") if degenerate else None
    if degenerate:
        print(f"mittd {command}: warning: {m.get('warning')}; the bundle is flagged "
              "degenerate (provenance.degenerate)", file=sys.stderr, flush=True)


def p_slow_of(graph: Any, params: Params, x: np.ndarray) -> np.ndarray:
    """P(slow) from a compiled engine — the numbers the daemon will act on."""
    return p_slow(graph, make_engine("csr", graph, params).logits(x))


def achieved_sparsity(params: Params) -> float:
    """Fraction of zero kernel weights over the whole network (node pruning can
    remove more than asked: its masks close whole nodes)."""
    total = sum(k.size for k, _ in params.values())
    return sum(int((k == 0).sum()) for k, _ in params.values()) / total if total else 0.0


def refuse_empty_layers(graph: Any, params: Params, method: str, sparsity: float) -> None:
    """A pruned network no path of weights crosses answers the same for every IO:
    refuse to export it (ValueError, one line) rather than ship a constant model that
    looks like a 95 %-sparse one. Named apart is the plainest cut, a layer whose every
    kernel weight is zero (Scalpel's node pruning can close every node of a space
    whose masks all went to zero); magnitude pruning can cut without emptying any
    layer (``graph.input_reach``)."""
    empty = [n.name for n in graph.dense_nodes() if not np.any(params[n.name][0])]
    hint = (f"not written — try a lower --sparsity (e.g. {max(sparsity - 0.1, 0.5):.0%}) "
            "or another --method")
    if empty:
        raise ValueError(
            f"{method} pruning to {sparsity:.0%} removed every weight of layer(s) "
            f"{', '.join(empty)}: the network would answer the same for every IO; {hint}")
    if not input_reach(graph, params)[graph.output].any():
        raise ValueError(
            f"{method} pruning to {sparsity:.0%} left no path of weights from the input "
            f"to the output: the network would answer the same for every IO; {hint}")


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


def validation_metrics(graph: Any, params: Params, ds: Dataset) -> dict[str, Any] | None:
    """Metrics of the first threshold on the validation window (open loop), or None."""
    if not len(ds.y_val):
        return None
    p, y = _first_threshold(p_slow_of(graph, params, ds.x_val), ds.y_val)
    return ev.metrics(y, p, 0.5)


def reselect(parent: Bundle, child: Bundle, say: Callable[[str], None]) -> None:
    """A pruned or compressed model decides differently: choose its policy again on
    the parent's validation window (the parent's policy when it recorded none)."""
    spec = parent.provenance.get("policy_selection")
    if spec:
        choose_policy(child, spec, say, child.graph.name)
    else:
        child.policy = dict(parent.policy)


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
               verbose: int = 1, validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
               reject_budget: float = DEFAULT_REJECT_BUDGET, replica: str | None = None,
               progress: bool = False) -> dict[str, Any]:
    ds = load_dataset(list(traces), MODEL_FEATURISER[model_name], slo=slo, ladder_k=ladder_k,
                      test_fraction=test_fraction, reads_only=reads_only,
                      validation_fraction=validation_fraction)
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
    mv = validation_metrics(trained.graph, trained.params, ds)
    spec = selection_spec(ds, replica, reject_budget)
    prov = provenance(ds, model_name, slo=slo, epochs=epochs, batch_size=batch_size,
                      learning_rate=learning_rate, seed=seed, train_seconds=trained.seconds,
                      test_metrics=m, validation_metrics=mv, keras_agreement=agreement,
                      sparsity=0.0, pruning=None, policy_selection=spec)
    flag_degenerate(prov, m, "train")
    bundle = make_bundle(trained.graph, trained.params, ds, prov)
    selection = None
    if spec is not None:
        selection = choose_policy(bundle, spec, say, model_name, progress)
    elif validation_fraction > 0:
        say("note: no policy selection (a ladder head, or no validation window): the bundle "
            "keeps P(slow) > 0.5 and the default reject cap")
    sha = export(out, bundle)
    say(f"wrote {out} (sha256 {sha[:12]}…, trained in {trained.seconds:.0f} s; "
        f"engine and Keras agree on {agreement:.2%} of test decisions)")
    result: dict[str, Any] = {"bundle": str(out), "metrics": m, "agreement": agreement,
                              "seconds": trained.seconds, "validation_metrics": mv,
                              "selection": selection}
    if sweep:
        rows = [{"sparsity": 0.0, **m}]
        for s in SWEEPS.get(model_name, (0.9, 0.95)):
            say(f"pruning to {s:.0%} (magnitude, TF-MOT) and fine-tuning …")
            from mittd.training.keras_graph import to_keras

            params = run_prune(to_keras(trained.graph, trained.params), trained.graph, ds,
                               "magnitude", s, batch_size=batch_size, seed=seed)
            refuse_empty_layers(trained.graph, params, "magnitude", s)
            ms = evaluate_params(trained.graph, params, ds, report_dir=report_dir,
                                 name=f"{model_name}_magnitude_{round(s * 100)}")
            rows.append({"sparsity": s, **ms})
            sweep_out = out.with_name(f"{out.stem}.magnitude{round(s * 100)}{out.suffix}")
            prov_s = dict(prov, sparsity=s, pruning="magnitude", test_metrics=ms)
            flag_degenerate(prov_s, ms, "train")
            export(sweep_out, make_bundle(trained.graph, params, ds, prov_s))
        table = ev.sparsity_table(rows)
        say(table)
        if report_dir:
            write_text(report_dir / f"{model_name}_sparsity_table.md", table + "\n")
        result["sweep"] = rows
    if report_dir:
        write_text(report_dir / f"{model_name}_train.json",
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
    refuse_empty_layers(bundle.graph, params, method, sparsity)
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
    flag_degenerate(prov, m, "prune")
    pruned = make_bundle(bundle.graph, params, ds, prov, bundle.decision_thresholds()[0])
    reselect(bundle, pruned, say)
    sha = export(out, pruned)
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
    flag_degenerate(prov, m, "compress")
    b = make_bundle(bundle.graph, params, ds, prov, bundle.decision_thresholds()[0])
    b.hints.update(hints)
    reselect(bundle, b, say)
    sha = export(out, b)
    say(f"wrote {out} (sha256 {sha[:12]}…)")
    return {"metrics": m, "before": before}
