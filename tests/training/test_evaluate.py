"""Metrics against hand-computed values, the degenerate-model warning, reports."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from mittd.training.evaluate import (
    average_precision,
    metrics,
    render,
    roc_auc,
    sparsity_table,
    write_report,
)


def _brute_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((p > q) + 0.5 * (p == q) for p, q in product(pos, neg))
    return wins / (len(pos) * len(neg))


def _brute_ap(y: np.ndarray, s: np.ndarray) -> float:
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        pred = s >= t
        tp = int(np.sum(pred & (y == 1)))
        recall = tp / int(y.sum())
        ap += (recall - prev_recall) * tp / int(pred.sum())
        prev_recall = recall
    return ap


def test_confusion_and_rates_by_hand() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.5, 0.1, 0.7, 0.2, 0.1, 0.0, 0.3, 0.4])
    m = metrics(y, p)  # slow when p > 0.5: 0.5 itself is admitted, as the engines do
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 2, 1, 5)
    assert m["confusion"] == [[5, 1], [2, 2]]
    assert m["n"] == 10 and m["n_slow"] == 4
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert m["fpr"] == pytest.approx(1 / 6)
    assert m["fnr"] == pytest.approx(0.5)
    assert m["rejected"] == pytest.approx(0.3)
    assert m["base_rate"] == pytest.approx(0.4)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 5 / 6) / 2)
    # pairs (slow, fast) ranked right: 0.9 and 0.8 beat all 6, 0.5 beats 5, 0.1 beats
    # 0.0 and ties 0.1 → (6 + 6 + 5 + 1.5) / 24
    assert m["roc_auc"] == pytest.approx(18.5 / 24)
    assert m["degenerate"] is False and m["warning"] is None
    assert metrics(y, p, threshold=0.45)["tp"] == 3


def test_auc_known_values_and_ties() -> None:
    # scikit-learn's documented example: ROC-AUC 0.75, average precision 0.8333
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(y, s) == pytest.approx(0.75)
    assert average_precision(y, s) == pytest.approx(0.8333333)
    # ties: a slow and a fast IO share 0.5 (half a win); tied scores form one PR step
    y2 = np.array([0, 1, 0, 1])
    s2 = np.array([0.5, 0.5, 0.2, 0.9])
    assert roc_auc(y2, s2) == pytest.approx(3.5 / 4)
    assert average_precision(y2, s2) == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_definitions_with_many_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.2).astype(int)
    s = np.round(rng.random(300) * 0.6 + 0.4 * y, 1)  # few distinct values: lots of ties
    assert roc_auc(y, s) == pytest.approx(_brute_auc(y, s))
    assert average_precision(y, s) == pytest.approx(_brute_ap(y, s))


def test_auc_constant_perfect_and_reversed() -> None:
    y = np.array([0] * 90 + [1] * 10)
    const = np.full(100, 0.3)
    assert roc_auc(y, const) == 0.5
    assert average_precision(y, const) == pytest.approx(0.1)  # the base rate
    perfect = y * 0.9 + 0.05
    assert roc_auc(y, perfect) == 1.0
    assert average_precision(y, perfect) == 1.0
    assert roc_auc(y, 1.0 - perfect) == 0.0
    m = metrics(y, perfect)
    assert m["accuracy"] == 1.0 and m["f1"] == 1.0 and m["pr_auc"] == 1.0


def test_seed_000_92_percent_trap() -> None:
    """Pruned good_custom: 92,178 NON-EBUSY and 7,822 EBUSY requests, all predicted
    NON-EBUSY — 92.18 % accuracy from a model that finds nothing."""
    y = np.r_[np.zeros(92_178, int), np.ones(7_822, int)]
    m = metrics(y, np.zeros(y.size))
    assert m["accuracy"] == pytest.approx(0.92178)
    assert m["recall"] == 0.0 and m["precision"] == 0.0 and m["f1"] == 0.0
    assert m["fnr"] == 1.0 and m["rejected"] == 0.0
    assert m["roc_auc"] == 0.5
    assert m["balanced_accuracy"] == 0.5
    assert m["majority_accuracy"] == pytest.approx(m["accuracy"])
    assert m["degenerate"] is True
    assert "NON-EBUSY for 100.00%" in m["warning"] and "92.18%" in m["warning"]
    assert "WARNING" in render(m)


def test_degenerate_both_ways_and_near_constant() -> None:
    y = np.array([0] * 900 + [1] * 100)
    all_busy = metrics(y, np.ones(1000))
    assert all_busy["degenerate"] and "predicts EBUSY" in all_busy["warning"]
    # 99.5 % NON-EBUSY predictions on data with 10 % slow: still degenerate
    p = np.zeros(1000)
    p[-5:] = 1.0
    assert metrics(y, p)["degenerate"]
    # 98 % one class is not flagged
    p2 = np.zeros(1000)
    p2[-20:] = 1.0
    assert not metrics(y, p2)["degenerate"]


def test_rare_slow_class_found_is_not_degenerate() -> None:
    """A p99.9 head predicts EBUSY rarely because EBUSY is rare; if it finds them it
    is not the 92 % trap."""
    y = np.r_[np.zeros(9_950, int), np.ones(50, int)]
    good = metrics(y, y * 0.8 + 0.1)
    assert good["rejected"] < 0.01 and not good["degenerate"]
    blind = metrics(y, np.zeros(y.size))
    assert blind["degenerate"]


def test_one_class_labels() -> None:
    m = metrics(np.zeros(50, int), np.linspace(0, 0.4, 50))
    assert np.isnan(m["roc_auc"]) and np.isnan(m["pr_auc"])
    assert m["degenerate"] and "one class only" in m["warning"]
    assert "n/a" in render(m)


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1], [0.1], "labels but"),
        ([0, 2], [0.1, 0.2], "0 \\(fast\\) or 1"),
        ([0, 1], [0.1, np.nan], "finite"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
        ([], [], "at least one"),
    ],
)
def test_metrics_validate_inputs(y: list, p: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics(np.array(y), np.array(p))


def test_render_is_compact_and_complete() -> None:
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    m = metrics(y, np.array([0.9, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1]))
    text = render(m)
    assert len(text.splitlines()) <= 8
    for word in ("accuracy", "precision", "recall", "ROC-AUC", "PR-AUC", "FPR", "FNR",
                 "rejected", "NON-EBUSY", "EBUSY"):
        assert word in text
    assert "75.00%" in text  # accuracy 6/8


def test_write_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lat = np.r_[rng.lognormal(np.log(100), 0.3, 900), rng.lognormal(np.log(3000), 0.3, 100)]
    y = (lat > 500).astype(int)
    p = np.clip(y * 0.7 + rng.random(1000) * 0.4, 0, 1)
    m = metrics(y, p)
    y_pred = (p > 0.5).astype(np.int8)
    out = write_report(tmp_path / "rep", "unit", m, lat, y, y_pred, 500.0)
    assert set(out) == {"json", "txt", "confusion", "latency_cdf"}
    assert out["confusion"].name == "unit_confusion.png"
    assert out["latency_cdf"].name == "unit_latency_cdf.png"
    doc = json.loads(out["json"].read_text())
    assert doc["metrics"]["tp"] == m["tp"] and doc["threshold_us"] == 500.0
    assert "ROC-AUC" in out["txt"].read_text()
    import matplotlib.image as mpimg

    for key in ("confusion", "latency_cdf"):
        assert out[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(out[key])
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 400
        assert img[..., :3].std() > 0.05  # something was drawn


def test_write_report_degenerate_one_group_and_nan_metrics(tmp_path: Path) -> None:
    lat = np.linspace(50.0, 400.0, 200)
    y = np.zeros(200, int)
    m = metrics(y, np.zeros(200))
    out = write_report(tmp_path, "degen", m, lat, y, np.zeros(200, np.int8), 1000.0)
    doc = json.loads(out["json"].read_text())  # strict JSON: NaN written as null
    assert doc["metrics"]["roc_auc"] is None and doc["metrics"]["degenerate"] is True
    assert out["latency_cdf"].stat().st_size > 1000
    with pytest.raises(ValueError, match="differ in length"):
        write_report(tmp_path, "bad", m, lat[:10], y, y, 1000.0)


def test_sparsity_table_like_seed_table_2() -> None:
    def row(s: float, acc: float, degenerate: bool = False) -> dict:
        return {"sparsity": s, "accuracy": acc, "roc_auc": 0.9, "recall": 0.8,
                "degenerate": degenerate}

    table = sparsity_table([row(0.0, 0.9994), row(0.9, 0.9987), row(98, 0.9803),
                            row(0.95, 0.9218, True)])
    lines = table.splitlines()
    assert lines[0].startswith("| Sparsity (%) | Accuracy (%) | Loss vs dense")
    assert "ROC-AUC" in lines[0] and "Recall" in lines[0] and "Degenerate" in lines[0]
    assert lines[2].startswith("| 0 | 99.94 | — |")
    assert lines[3].startswith("| 90 | 99.87 | 0.07 |")
    assert lines[4].startswith("| 98 | 98.03 | 1.91 |")
    assert "**yes**" in lines[5] and "**yes**" not in lines[3]
    assert "92.18" in table
    with pytest.raises(ValueError):
        sparsity_table([])
