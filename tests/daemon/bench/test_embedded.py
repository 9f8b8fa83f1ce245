"""``mittd bench embedded`` on tiny runs: the plain data it returns, the CLI, its
one-line errors, and that the read file is gone afterwards.

Timings are measurements of a shared machine and never asserted; what is checked
is the shape of the result and that what was timed took a positive time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mittd.daemon.bench import embedded as eb
from mittd.daemon.cli import main
from mittd.traces.collect import direct_io_error
from tests.conftest import REPO, run_cli

HEIMDALL = REPO / "predictor" / "bundles" / "heimdall.mittd"
QKEYS = ("p50_us", "p90_us", "p99_us", "p999_us")


def _no_reads(path: Path) -> str | None:
    """Why the read rows cannot run in ``path`` (memory FS, no O_DIRECT), or None."""
    if eb._fs_type(path) in eb.MEMORY_FS:
        return f"{path} is on {eb._fs_type(path)}: no device to read"
    e = direct_io_error(path)
    return None if e is None else f"{path} refuses O_DIRECT ({e.strerror})"


def _needs_direct_io(path: Path) -> None:
    why = _no_reads(path)
    if why:
        pytest.skip(f"{why}: the read rows cannot run here")


def _positive(row: dict | None) -> None:
    assert row is not None and row["n"] > 0
    assert all(row[k] > 0 for k in QKEYS)
    assert row["p50_us"] <= row["p90_us"] <= row["p99_us"] <= row["p999_us"]
    assert row["round_p50_us"] and all(v > 0 for v in row["round_p50_us"])


def test_summarize_gives_microseconds_in_order() -> None:
    s = eb.summarize([1000, 2000, 3000, 4000])
    assert s["n"] == 4 and s["p50_us"] == 2.5 and s["mean_us"] == 2.5
    assert s["p50_us"] <= s["p90_us"] <= s["p99_us"] <= s["p999_us"] <= 4.0
    assert eb.summarize([]) == {"n": 0}


def test_default_models_are_the_shipped_bundles() -> None:
    names = [p.stem for p in eb.default_models()]
    assert names[:4] == ["heimdall", "linnos", "precise_linear_node95",
                         "precise_linear_hist_node95"]


def test_cpu_rows_without_io() -> None:
    r = eb.run_embedded([HEIMDALL], ops=40, rounds=2, io=False)
    assert r["machine"]["cpus"] >= 1 and r["machine"]["numba"] and r["machine"]["numpy"]
    assert r["settings"]["io"] is False and r["device"] is None
    _positive(r["timer"])
    (m,) = r["models"]
    assert m["model"] == "heimdall" and m["features"] > 0
    _positive(m["rows"]["engine"])
    _positive(m["rows"]["general"])
    assert m["rows"]["engine"]["n"] == m["rows"]["general"]["n"] == 80
    if m["stats_of"] == "Embedded":
        _positive(m["rows"]["fused"])
    if m["core_fused"]:  # the unfused Python path beside it
        _positive(m["rows"]["python"])
        _positive(m["rows"]["python_burst"])
    _positive(m["rows"]["burst"])  # one per-IO sample per burst of BURST, 1 when ops < BURST
    assert m["rows"]["burst"]["n"] == 2
    assert m["overhead"] is None
    assert [t["name"] for t in m["targets"]] == [n for n, *_ in eb.TARGETS]
    assert all(t["met"] in (True, False, None) for t in m["targets"])
    json.dumps(r)  # plain data
    assert "bare engine" in eb.render(r) and f"burst of {eb.BURST}" in eb.render(r)


def test_read_rows_in_tmp_path_and_the_file_is_removed(tmp_path: Path) -> None:
    _needs_direct_io(tmp_path)
    r = eb.run_embedded([HEIMDALL], ops=30, rounds=2, directory=tmp_path, size=16 * eb.MiB,
                        seed=3)
    (m,) = r["models"]
    for key in ("device", "bare", "loop", "decision", "engine_cold"):
        _positive(m["rows"][key])
    assert m["rows"]["loop"]["n"] == m["rows"]["device"]["n"] == 60
    o = m["overhead"]
    assert o["device_p99_us"] > 0 and o["decision_p99_us"] > 0
    assert o["share_of_device_p99"] > 0 and 0 <= o["rejected_reads"] <= 60
    _positive(r["device"])
    assert r["settings"]["fs"] and r["settings"]["dir"] == str(tmp_path)
    assert "read loop: admit → preadv → complete" in eb.render(r)
    assert list(tmp_path.iterdir()) == []  # the read file and its dir are gone


def test_cli_tiny_run_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    io = ["--no-io"] if _no_reads(tmp_path) else []
    r = run_cli("bench", "embedded", "--model", str(HEIMDALL), "--ops", "20", "--rounds",
                "1", "--size", "16M", "--dir", str(tmp_path), "--json", str(out), *io)
    assert r.returncode == 0, r.stderr
    assert "## heimdall" in r.stdout and "target admit+complete p50" in r.stdout
    assert "… round 1/1" in r.stderr
    data = json.loads(out.read_text())
    assert data["models"][0]["rows"]["engine"]["n"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


@pytest.mark.parametrize(("argv", "names"), [
    (["--ops", "-5"], "--ops"),
    (["--ops", "0"], "--ops"),
    (["--rounds", "0"], "--rounds"),
    (["--seconds", "-1"], "--seconds"),
    (["--ops", "5", "--seconds", "1"], "--ops"),
    (["--size", "lots"], "--size"),
    (["--size", "4k"], "--size"),
    (["--model", "no/such/bundle.mittd"], "--model"),
    (["--engine", "warp"], "--engine"),
    (["--dir", "no/such/dir"], "--dir"),
])
def test_bad_options_are_one_line_exit_2(argv: list[str], names: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    try:
        rc = main(["bench", "embedded", "--quiet", *argv])
    except SystemExit as e:  # refused by argparse (usage, then the error line)
        rc = e.code
    assert rc == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mittd") and ": error: " in last and names in last, last


def test_bad_bundle_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.mittd"
    bad.write_bytes(b"not a bundle")
    assert main(["bench", "embedded", "--quiet", "--no-io", "--model", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--model" in err and "bad.mittd" in err


def test_tmpfs_dir_is_refused_naming_dir(capsys: pytest.CaptureFixture[str]) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or eb._fs_type(shm) != "tmpfs":
        pytest.skip("no tmpfs mounted at /dev/shm")
    assert main(["bench", "embedded", "--quiet", "--dir", str(shm), "--ops", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--dir /dev/shm" in err and "tmpfs" in err
    assert not list(shm.glob("mittd-bench-embedded-*"))
