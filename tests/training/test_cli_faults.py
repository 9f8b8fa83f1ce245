"""The training commands' refusals (issue 15): a missing train extra, an output that
is an input, bad numbers, degenerate test splits, empty pruned layers, report files
on a full disk — each one line, never a traceback, and nothing TensorFlow-heavy runs
(TensorFlow is hidden from every test here: a command that got past its checks
fails fast instead of training)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mittd.daemon.cli import main
from mittd.predictor.shipped import shipped_bundle
from mittd.predictor.synthetic import synthetic_bundle
from mittd.traces.shipped import shipped_trace
from mittd.training import pipeline
from mittd.training.evaluate import metrics

REPO = Path(__file__).resolve().parents[2]
T = str(shipped_trace())
B = str(shipped_bundle("heimdall"))
TF = ("tensorflow", "tf_keras", "tensorflow_model_optimization")


@pytest.fixture
def no_tf(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TF:
        monkeypatch.setitem(sys.modules, name, None)


EXTRA = "needs the train extra: pip install 'mittd[train]' (missing module"


@pytest.mark.parametrize(("argv", "hidden", "want"), [
    (["train", T, "-o", "{tmp}/x.mittd"], "tensorflow", "train"),
    (["train", T, "-o", "{tmp}/x.mittd"], "tf_keras", "train"),
    (["prune", B, "--sparsity", "0.5", "-o", "{tmp}/x.mittd"],
     "tensorflow_model_optimization", "prune"),
    (["compress", B, "--weights", "fp16", "-o", "{tmp}/x.mittd"], "tensorflow", "compress"),
    (["tune", T], "optuna", "tune"),
])
def test_a_missing_train_extra_is_one_line(argv: list[str], hidden: str, want: str,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, hidden, None)
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err == f"mittd: error: {want} {EXTRA} {hidden})\n"


@pytest.mark.parametrize("command", ["prune", "compress"])
def test_an_output_that_is_the_input_is_refused(command: str, tmp_path: Path, no_tf: None,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.mittd"
    shutil.copy(B, src)
    link = tmp_path / "link.mittd"
    link.symlink_to(src)
    extra = ["--sparsity", "0.5"] if command == "prune" else ["--weights", "fp16"]
    before = src.read_bytes()
    for out in (src, link):
        assert main([command, str(src), *extra, "-o", str(out), "--force"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is also an input" in err, err
    assert src.read_bytes() == before


def test_tune_json_that_is_a_trace_is_refused(tmp_path: Path, no_tf: None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.parquet"
    shutil.copy(T, trace)
    assert main(["tune", str(trace), "--json", str(trace)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert trace.read_bytes() == Path(T).read_bytes()


@pytest.mark.parametrize("which", ["trace", "bundle"])
def test_evaluate_json_that_is_an_input_is_refused(which: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    trace, bundle = tmp_path / "t.parquet", tmp_path / "b.mittd"
    shutil.copy(T, trace)
    shutil.copy(B, bundle)
    target = trace if which == "trace" else bundle
    before = target.read_bytes()
    assert main(["evaluate", str(bundle), "--trace", str(trace), "--json", str(target)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert target.read_bytes() == before


BAD_ARGS = [
    (["prune", B, "--sparsity", s, "-o", "{tmp}/x.mittd"], "--sparsity")
    for s in ("0", "1", "1.5", "nan", "abc", "100%")
] + [
    (["prune", B, "--sparsity", "0.5", "--group", "0", "-o", "{tmp}/x.mittd"], "--group"),
    (["tune", T, "--trials", "0"], "--trials"),
    (["tune", T, "--accuracy-floor", "1.5"], "--accuracy-floor"),
    (["tune", T, "--auc-floor", "nan"], "--auc-floor"),
    (["train", T, "--lr", "0", "-o", "{tmp}/x.mittd"], "--lr"),
    (["train", T, "--lr", "nan", "-o", "{tmp}/x.mittd"], "--lr"),
    (["train", T, "--test-fraction", "0", "-o", "{tmp}/x.mittd"], "--test-fraction"),
    (["train", T, "--test-fraction", "1.5", "-o", "{tmp}/x.mittd"], "--test-fraction"),
    (["train", T, "--ladder", "0", "-o", "{tmp}/x.mittd"], "--ladder"),
    (["train", T, "--lr", "1e300", "-o", "{tmp}/x.mittd"], "--lr"),
    (["train", T, "--epochs", "9" * 30, "-o", "{tmp}/x.mittd"], "--epochs"),
    (["train", T, "--seed", str(2**32), "-o", "{tmp}/x.mittd"], "--seed"),
    (["train", T, "--report", T, "-o", "{tmp}/x.mittd"], "--report"),
    (["prune", B, "--sparsity", "0.5", "--report", B, "-o", "{tmp}/x.mittd"], "--report"),
    (["compress", B, "--weights", "fp16", "--seed", "-1", "-o", "{tmp}/x.mittd"], "--seed"),
    (["evaluate", B, "--trace", T, "--from", "-1"], "--from"),
    (["evaluate", B, "--trace", T, "--from", "nan"], "--from"),
    (["evaluate", B, "--trace", T, "--from", "1"], "--from"),
]


@pytest.mark.parametrize(("argv", "arg"), BAD_ARGS)
def test_bad_numbers_are_refused_by_argparse(argv: list[str], arg: str, tmp_path: Path,
                                             no_tf: None,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([a.format(tmp=tmp_path) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument" in err and arg in err, err


def test_a_one_class_test_split_is_degenerate() -> None:
    """No slow IO in the test split, 5 % predicted slow: nothing can be judged."""
    y = np.zeros(200, int)
    p = np.where(np.arange(200) < 10, 0.9, 0.1)
    m = metrics(y, p)
    assert m["degenerate"] is True and "one class only" in m["warning"]
    m = metrics(np.ones(200, int), p)  # no fast IO either way
    assert m["degenerate"] is True and "no NON-EBUSY IO" in m["warning"]


def test_the_degenerate_flag_goes_into_the_bundle_loudly(
        capsys: pytest.CaptureFixture[str]) -> None:
    prov: dict = {}
    pipeline.flag_degenerate(prov, metrics(np.zeros(100, int), np.full(100, 0.1)), "train")
    assert prov["degenerate"] is True and "one class only" in prov["degenerate_reason"]
    assert "mittd train: warning: degenerate" in capsys.readouterr().err
    pipeline.flag_degenerate(prov, metrics(np.r_[np.zeros(90, int), np.ones(10, int)],
                                           np.r_[np.full(90, 0.1), np.full(10, 0.9)]),
                             "train")
    assert prov == {"degenerate": False, "degenerate_reason": None}
    assert capsys.readouterr().err == ""


def test_a_pruned_layer_with_no_weight_left_is_not_written() -> None:
    b = synthetic_bundle("precise_linear", 0.9, "node")
    params = dict(b.params)
    k, bias = params["fc3"]
    params["fc3"] = (np.zeros_like(k), bias)
    with pytest.raises(ValueError, match=r"removed every weight of layer\(s\) fc3: .*lower "
                                         r"--sparsity"):
        pipeline.refuse_empty_layers(b.graph, params, "node", 0.95)
    pipeline.refuse_empty_layers(b.graph, b.params, "node", 0.9)  # a sound one passes


def test_a_pruned_network_cut_in_two_is_not_written() -> None:
    """Every layer keeps weights, but none of the logits' reads a unit the input
    reaches: the network answers the same for every IO."""
    b = synthetic_bundle("precise_linear", 0.9, "magnitude")
    params = dict(b.params)
    k, bias = params["fc7"]
    k = k.copy()
    k[:, :] = 0.0
    k[0, 0] = 1.0  # fc7 keeps one weight, from fc6's unit 0 ...
    k6, b6 = params["fc6"]
    k6 = k6.copy()
    k6[:, 0] = 0.0  # ... which no weight reaches
    params["fc7"], params["fc6"] = (k, bias), (k6, b6)
    with pytest.raises(ValueError, match=r"left no path of weights from the input to the "
                                         r"output: .*lower --sparsity"):
        pipeline.refuse_empty_layers(b.graph, params, "magnitude", 0.98)


_FULL_REPORT = """
import resource, signal, sys
import numpy as np
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from mittd.traces.atomic import OutputError
from mittd.training.evaluate import metrics, write_report
y = np.r_[np.zeros(900, int), np.ones(100, int)]
p = np.linspace(0, 1, 1000)
m = metrics(y, p)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, hard))
try:
    write_report(sys.argv[1], "r", m, np.linspace(10, 500, 1000), y, (p > 0.5) * 1, 200.0)
except OutputError as e:
    print(e)
    sys.exit(3)
"""


def test_reports_on_a_full_disk_are_one_line_and_leave_no_partial(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", _FULL_REPORT, str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 3, r.stderr
    assert r.stdout.startswith(f"cannot write {tmp_path}/r_") and \
        r.stdout.strip().endswith(": File too large"), r.stdout
    assert not list(tmp_path.glob("*.partial"))
