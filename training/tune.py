"""``mittd tune``: choose compression parameters by measured decision latency.

The dissertation's hypothesis (seed 001): compression parameters (method,
sparsity, SIMD group size) are best chosen by a Bayesian optimiser against the
quantity that matters — here the predictor's *measured* batch-1 µs per
decision on this machine — subject to an accuracy (or ROC-AUC) floor. Optuna's
TPE sampler searches two objectives (latency down, quality up); the Pareto
front and the fastest configuration above the floor are reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna

from mittd.predictor.models import MODEL_FEATURISER
from mittd.training.dataset import load_dataset
from mittd.training.pipeline import (
    PRUNE_METHODS,
    achieved_sparsity,
    decision_latency_us,
    evaluate_params,
    run_prune,
)


def suggest(trial: Any) -> tuple[str, float, int]:
    """The search space of ``mittd tune`` (and ``mittd fleet tune``'s OptunaSearch),
    define-by-run: method, sparsity, and the SIMD group only where it matters (8,
    unused, elsewhere). Returns (method, sparsity, group)."""
    method = trial.suggest_categorical("method", list(PRUNE_METHODS))
    sparsity = trial.suggest_float("sparsity", 0.5, 0.99)
    group = trial.suggest_categorical("group", [4, 8, 16]) if method in (
        "simd", "scalpel") else 8
    return method, sparsity, group


def tune(traces: Sequence[str], model_name: str, *, floor: float, metric: str = "accuracy",
         trials: int = 12, slo: str = "auto", epochs: int = 6, prune_epochs: int = 2,
         seed: int = 0, say: Callable[[str], None] = print) -> dict[str, Any]:
    ds = load_dataset(list(traces), MODEL_FEATURISER[model_name], slo=slo)
    from mittd.training.keras_graph import to_keras
    from mittd.training.train import train

    say(f"training the dense {model_name} once ({epochs} epochs) …")
    dense = train(model_name, ds, epochs=epochs, seed=seed, verbose=0)
    m0 = evaluate_params(dense.graph, dense.params, ds)
    us0 = decision_latency_us(dense.graph, dense.params, ds.x_test)
    say(f"dense: {metric} {m0[metric]:.4f}, {us0:.2f} µs per decision")

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        method, sparsity, group = suggest(trial)
        params = run_prune(to_keras(dense.graph, dense.params), dense.graph, ds, method,
                           sparsity, group=group, epochs=prune_epochs, seed=seed)
        m = evaluate_params(dense.graph, params, ds)
        us = decision_latency_us(dense.graph, params, ds.x_test)
        achieved = achieved_sparsity(params)
        trial.set_user_attr("metrics", {k: m[k] for k in ("accuracy", "roc_auc", "recall",
                                                          "precision", "degenerate")})
        trial.set_user_attr("achieved_sparsity", achieved)
        say(f"trial {trial.number}: {method} {sparsity:.1%} (achieved {achieved:.1%}) "
            f"G={group} → {metric} {m[metric]:.4f}, {us:.2f} µs")
        return us, float(m[metric])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"],
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    front = sorted(study.best_trials, key=lambda t: t.values[0])
    rows = [{"trial": t.number, **t.params, "decision_us": t.values[0], metric: t.values[1],
             "achieved_sparsity": t.user_attrs.get("achieved_sparsity"),
             **t.user_attrs.get("metrics", {})} for t in front]
    feasible = [t for t in study.trials if t.values and t.values[1] >= floor]
    best = min(feasible, key=lambda t: t.values[0]) if feasible else None
    return {
        "dense": {"decision_us": us0, **{k: m0[k] for k in ("accuracy", "roc_auc")}},
        "pareto": rows,
        "best": None if best is None else {"trial": best.number, **best.params,
                                           "decision_us": best.values[0],
                                           metric: best.values[1]},
        "floor": {metric: floor},
        "trials": len(study.trials),
    }


def render(result: dict[str, Any], metric: str) -> str:
    lines = ["Pareto front (µs per decision vs " + metric + "):", "",
             "| trial | method | sparsity asked | achieved | group | µs/decision | accuracy "
             "| ROC-AUC |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["pareto"]:
        lines.append(f"| {r['trial']} | {r['method']} | {r['sparsity']:.1%} | "
                     f"{r.get('achieved_sparsity') or 0:.1%} | {r.get('group', 8)} | "
                     f"{r['decision_us']:.2f} | {r.get('accuracy', float('nan')):.4f} | "
                     f"{r.get('roc_auc', float('nan')):.3f} |")
    d = result["dense"]
    lines.append("")
    lines.append(f"dense model: {d['decision_us']:.2f} µs, accuracy {d['accuracy']:.4f}, "
                 f"ROC-AUC {d['roc_auc']:.3f}")
    b = result["best"]
    floor = next(iter(result["floor"].values()))
    if b is None:
        lines.append(f"no configuration reached {metric} >= {floor}")
    else:
        lines.append(f"fastest with {metric} >= {floor}: trial {b['trial']} — {b['method']} "
                     f"{b['sparsity']:.1%}" + (f" G={b['group']}" if "group" in b else "")
                     + f", {b['decision_us']:.2f} µs, {metric} {b[metric]:.4f}")
    return "\n".join(lines)

