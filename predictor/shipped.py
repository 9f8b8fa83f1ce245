"""Small trained bundles shipped with mittd, for the demo and a first try without training.

They are package data of ``mittd.predictor`` (``predictor/bundles/``); what each
was trained on, its SLO threshold, the command that made it, its sparsity and
test ROC-AUC are in ``predictor/bundles/README.md``. All were trained on the
shipped trace ``traces/samples/fio_mixed_30s.parquet`` of one virtual disk:
they show the daemon end to end, they are not models of *your* device.

    >>> from mittd.predictor.bundle import load_bundle
    >>> from mittd.predictor.shipped import shipped_bundle
    >>> load_bundle(shipped_bundle("heimdall")).graph.name
    'heimdall'
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLES_DIR", "SHIPPED_BUNDLES", "shipped_bundle"]

BUNDLES_DIR = Path(__file__).resolve().parent / "bundles"

# name -> one line on what it is
SHIPPED_BUNDLES: dict[str, str] = {
    "precise_linear_node95": "seed 000's precise_linear on the LBA bits, node-pruned "
                             "(Scalpel) to 95 % asked, 97.4 % achieved",
    "precise_linear_hist_node95": "precise_linear on the LBA bits plus queue/latency "
                                  "history (lba_hist), node-pruned to 95 % asked, 96.9 % "
                                  "achieved",
    "linnos": "LinnOS (OSDI '20): 31 digits of queue lengths and latencies -> 256 -> 2",
    "heimdall": "Heimdall (EuroSys '25): 11 min-max scaled features -> 128 -> 16 -> 1",
}


def shipped_bundle(name: str) -> Path:
    """Path of the shipped bundle ``name`` (one of ``SHIPPED_BUNDLES``; a trailing
    ``.mittd`` is accepted)."""
    key = name.removesuffix(".mittd")
    if key not in SHIPPED_BUNDLES:
        raise ValueError(
            f"no shipped bundle {name!r}; shipped: {', '.join(SHIPPED_BUNDLES)}"
        )
    path = BUNDLES_DIR / f"{key}.mittd"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the shipped bundle is missing from this installation "
            "(package data of mittd.predictor)"
        )
    return path
