"""The runtime stays free of TensorFlow: the daemon path must start fast and small."""

from __future__ import annotations

import subprocess
import sys

RUNTIME_MODULES = [
    "mittd.daemon.cli",
    "mittd.traces.registry",
    "mittd.traces.collect",
    "mittd.traces.stats",
    "mittd.predictor",
    "mittd.proto",
]


def test_runtime_imports_no_tensorflow() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {RUNTIME_MODULES!r}: importlib.import_module(m)\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in "
        "('tensorflow', 'tf_keras', 'keras', 'tensorflow_model_optimization')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_mittd_is_a_namespace_over_the_top_level_folders() -> None:
    import mittd.daemon
    import mittd.traces

    assert mittd.traces.__file__.endswith("traces/__init__.py")
    assert mittd.daemon.__file__.endswith("daemon/__init__.py")
