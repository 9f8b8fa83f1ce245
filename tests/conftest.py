"""Shared fixtures: paths to the hand-written samples and a CLI runner."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"

needs_fio = pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")


@pytest.fixture
def data() -> Path:
    return DATA


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``mittd`` entry point in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "mittd.daemon.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )
