"""``mittd bench tailcut``: seeded workloads, recorded twice, policies chosen on a
validation window, judged on the test part against hedging (see ``run``)."""

from mittd.daemon.bench.tailcut.run import (
    MITTD_MODELS,
    MODELS,
    TailcutConfig,
    TailcutError,
    run_tailcut,
)
from mittd.daemon.bench.tailcut.workloads import Workload, generate

__all__ = ["MITTD_MODELS", "MODELS", "TailcutConfig", "TailcutError", "Workload", "generate",
           "run_tailcut"]
