"""Bad arguments are refused in one line before any work (issue 15, part of the
bad-input harness): every case must exit 2 with one ``mittd…: error:`` line naming
the argument, and no traceback. Each case here failed before (a traceback, exit 0
or 1 after the work, or a 262 GiB allocation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mittd.daemon.cli import main
from mittd.predictor.shipped import shipped_bundle
from mittd.traces.shipped import shipped_trace

B = str(shipped_bundle("heimdall"))
T = str(shipped_trace())

CASES = [
    (["evaluate", B, "--trace", T, "--decision-threshold", "0"], "--decision-threshold"),
    (["evaluate", B, "--trace", T, "--decision-threshold", "5"], "in (0, 1)"),
    (["evaluate", B, "--trace", T, "--decision-threshold", "nan"], "in (0, 1)"),
    (["evaluate", B, "--trace", T, "--json", "{tmp}"], "is a directory"),
    (["evaluate", B, "--trace", T, "--json", "{tmp}/no/such/x.json"], "does not exist"),
    (["eie", "report", B, "--json", "{tmp}"], "is a directory"),
    (["eie", "report", B, "--pes", "100000000"], "more PEs than"),
    (["replay", T, "-m", B, "-o", "{tmp}/r", "--seed=-1"], "--seed"),
    (["replay", T, "-m", B, "-o", "{file}"], "is a file, expected a directory"),
    (["replay", T, "-m", B, "-o", "{tmp}/r", "--decision-threshold", "1.5"], "in (0, 1)"),
    (["bench", "predictor", "--calls", "0"], "--calls"),
    (["bench", "records", "--json", "{tmp}"], "is a directory"),
    (["bench", "embedded", "--seed", "-3"], "--seed"),
    (["train", T, "--epochs", "0", "-o", "{tmp}/x.mittd"], "--epochs"),
    (["train", T, "--batch-size", "-1", "-o", "{tmp}/x.mittd"], "--batch-size"),
    (["tune", T, "--json", "{tmp}"], "is a directory"),
]


@pytest.mark.parametrize(("argv", "says"), CASES, ids=[" ".join(c[0][:2]) + f"-{i}"
                                                       for i, c in enumerate(CASES)])
def test_bad_arguments_are_one_line_errors(argv: list[str], says: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    argv = [a.format(tmp=tmp_path, file=f) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse refuses with exit 2
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mittd") and ": error: " in last and says in last, last
