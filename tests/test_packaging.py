"""The runtime stays free of TensorFlow and Ray: the daemon path must start fast and small."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

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
        "('tensorflow', 'tf_keras', 'keras', 'tensorflow_model_optimization', 'onnx', "
        "'onnxruntime')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_runtime_imports_no_ray() -> None:
    """Ray (the cluster extra, ``mittd fleet``) is imported only inside the fleet
    functions: ``mittd --help``, the daemon and building the parser (which registers
    ``mittd fleet``) never load it."""
    code = (
        "import importlib, sys\n"
        f"for m in {RUNTIME_MODULES!r}: importlib.import_module(m)\n"
        "from mittd.daemon.cli import build_parser\n"
        "build_parser()\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('ray', 'optuna')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_mittd_is_a_namespace_over_the_top_level_folders() -> None:
    import mittd.daemon
    import mittd.traces

    assert mittd.traces.__file__.endswith("traces/__init__.py")
    assert mittd.daemon.__file__.endswith("daemon/__init__.py")


REPO = Path(__file__).resolve().parents[1]
LAYERS = {  # a package may import only from the packages listed for it
    "traces": {"traces"},
    "predictor": {"traces", "predictor"},
    "training": {"traces", "predictor", "training", "daemon"},  # the replayer picks policies
    "proto": {"proto"},
    "fleet": {"traces", "predictor", "training", "daemon", "fleet"},  # runs the others per device
}


def _mittd_imports(path: Path) -> set[str]:
    """Every ``mittd.X`` an import statement of ``path`` names, lazy ones included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        out |= {n.split(".")[1] for n in names if n.startswith("mittd.") and "." in n}
    return out


@pytest.mark.parametrize("package", list(LAYERS))
def test_packages_import_only_downwards(package: str) -> None:
    bad = {str(p.relative_to(REPO)): sorted(_mittd_imports(p) - LAYERS[package])
           for p in (REPO / package).rglob("*.py")}
    assert not {p: b for p, b in bad.items() if b}


def test_the_service_does_not_import_training_or_the_tools() -> None:
    service = [p for p in (REPO / "daemon").glob("*.py") if p.name != "cli.py"]
    assert service
    for p in service:
        assert "training" not in _mittd_imports(p), p
        text = p.read_text()
        assert "mittd.daemon.replay" not in text and "mittd.daemon.bench" not in text, p


def test_every_package_folder_is_installed() -> None:
    """``pip install .`` (not only -e) must ship every subpackage: the list in
    pyproject.toml holds each folder with an __init__.py under the mapped roots."""
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    roots = {v: k for k, v in conf["package-dir"].items()}
    found = set(conf["package-data"])  # data-only folders are listed as packages too
    for root, name in roots.items():
        for init in (REPO / root).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / root)
            found.add(".".join([name, *rel.parts]))
    assert found == listed


def test_the_wheel_builds_without_warnings_and_ships_the_data(tmp_path: Path) -> None:
    """``make demo`` / ``make test`` print what the build backend warns (issue 15:
    the license table, data folders missing from ``packages``): none is left, and
    the shipped bundles and traces are in the wheel."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, check=True)
    log = out.stdout + out.stderr
    assert "Warning" not in log, log
    (wheel,) = tmp_path.glob("mittd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mittd/predictor/bundles/heimdall.mittd" in names
    assert any(n.startswith("mittd/traces/samples/") and n.endswith(".parquet") for n in names)


def test_public_faces() -> None:
    code = (
        "import sys\n"
        "from mittd import predictor\n"
        "b = predictor.load_bundle(predictor.shipped_bundle('linnos'))\n"
        "e = predictor.make_engine('dense', b.graph, b.params)\n"
        "f = predictor.make_featuriser(b.featuriser)\n"
        "assert f.dim == e.input.shape[0]\n"
        "import mittd.daemon, mittd.daemon.admission\n"
        "assert 'grpc' not in sys.modules, 'the client API is imported lazily'\n"
        "from mittd.daemon import Client, MittdBusy, ReplicaSet, MAX_DEADLINE_US\n"
        "assert issubclass(MittdBusy, OSError) and MAX_DEADLINE_US == 3_600_000_000\n"
        "assert set(mittd.daemon.__all__) == set(mittd.daemon._EXPORTS)\n"
        "assert all(getattr(mittd.daemon, n) is not None for n in mittd.daemon.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
