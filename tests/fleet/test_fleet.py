"""``mittd fleet`` on a local 2-CPU Ray: a corrupt trace is an error row and the run
is "partial" (exit 3), a re-run skips up-to-date devices, ``--force`` retrains, a
killed worker's task is retried; manifests and a missing Ray are one-line errors."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from mittd.daemon.cli import main
from mittd.fleet.hashing import inputs_sha
from mittd.fleet.manifest import DeviceJob, FleetError, load_fleet
from tests.fleet import lba_trace as _trace

# -- manifests (no Ray) ---------------------------------------------------------------------


def test_directory_fleet_one_device_per_trace_and_segment_dir(tmp_path: Path) -> None:
    _trace(tmp_path / "nvme0.parquet")
    (tmp_path / "nvme1").mkdir()
    _trace(tmp_path / "nvme1" / "seg-000.parquet", n=100)
    (tmp_path / "fleet_report").mkdir()  # no segments: not a device
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / "nvme0.mittd").write_bytes(b"")  # bundles and sidecars are not traces
    (tmp_path / "nvme0.inputs.json").write_text("{}")
    jobs = load_fleet(tmp_path, model="precise_linear", slo="p95")
    assert [j.device for j in jobs] == ["nvme0", "nvme1"]
    assert jobs[1].traces == (str(tmp_path / "nvme1"),)
    assert {j.slo for j in jobs} == {"p95"}
    assert [j.device for j in load_fleet(str(tmp_path / "*.parquet"))] == ["nvme0"]


def test_csv_and_json_manifests(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "# the fleet\ndevice,trace,model,slo,class\n"
        "a,a1.parquet;/abs/a2.parquet,heimdall,,ssd-x\nb,b.parquet,,2ms,\n")
    a, b = load_fleet(tmp_path / "m.csv", model="precise_linear", slo="auto")
    assert a == DeviceJob("a", (str(tmp_path / "a1.parquet"), "/abs/a2.parquet"), "heimdall",
                          "auto", "ssd-x")
    assert (b.model, b.slo, b.device_class) == ("precise_linear", "2ms", None)
    (tmp_path / "m.json").write_text(json.dumps(
        {"devices": [{"device": "c", "trace": ["c.parquet"], "slo": "p99"}]}))
    (c,) = load_fleet(tmp_path / "m.json")
    assert c.traces == (str(tmp_path / "c.parquet"),) and c.slo == "p99"


@pytest.mark.parametrize(("name", "text", "message"), [
    ("h.csv", "dev,trace\na,x\n", "h.csv:1: header must name device and trace"),
    ("n.csv", "device,trace\na,x\n\nb,y,z\n", "n.csv:4: 3 fields, expected 2"),
    ("m.csv", "device,trace,model\na,x,nosuch\n", "m.csv:2: unknown model 'nosuch'"),
    ("d.csv", "device,trace\na,x\na,y\n", "device 'a' appears twice"),
    ("s.csv", "device,trace\n../a,x\n", "s.csv:2: device name '../a'"),
    ("t.csv", "device,trace\na,\n", "t.csv:2: device 'a' has no trace"),
    ("e.csv", "", "e.csv: empty manifest"),
    ("k.json", '[{"device": "a", "trace": "x", "colour": 1}]',
     "k.json: devices[0]: unknown field(s) colour"),
    ("j.json", '[{"device": "a",\n "trace": }]', "j.json:2: not JSON"),
    ("l.json", '[{"device": "a", "trace": 3}]', "devices[0].trace: expected a path"),
    ("o.json", '{"device": "a"}', "expected a list of devices"),
])
def test_bad_manifest_is_one_line_naming_the_place(tmp_path: Path, name: str, text: str,
                                                   message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(FleetError) as e:
        load_fleet(tmp_path / name)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_fleet_and_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="no such file or directory"):
        load_fleet(tmp_path / "nope")
    with pytest.raises(FleetError, match="no device found"):
        load_fleet(tmp_path)


def test_inputs_hash_covers_bytes_settings_and_model(tmp_path: Path) -> None:
    t = _trace(tmp_path / "a.parquet", n=200)
    job = DeviceJob("a", (str(t),))
    h = inputs_sha(job, {"epochs": 1})
    assert h == inputs_sha(job, {"epochs": 1})
    assert h != inputs_sha(job, {"epochs": 2})
    assert h != inputs_sha(DeviceJob("a", (str(t),), model="heimdall"), {"epochs": 1})
    _trace(t, n=200, seed=1)
    assert h != inputs_sha(job, {"epochs": 1})


def test_no_ray_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    _trace(tmp_path / "a.parquet", n=100)
    monkeypatch.setitem(sys.modules, "ray", None)
    for cmd in (["train", str(tmp_path), "-o", str(tmp_path / "m")],
                ["replay", str(tmp_path), "--models", str(tmp_path)]):
        assert main(["fleet", *cmd]) == 2
        err = capsys.readouterr().err
        assert err == ("mittd: error: fleet needs the cluster extra: pip install "
                       "'mittd[cluster]' (missing module ray)\n")


def test_fleet_import_loads_neither_ray_nor_tensorflow() -> None:
    import subprocess

    code = ("import sys, mittd.daemon.cli as c; c.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('ray', 'tensorflow', 'tf_keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- on a local 2-CPU Ray -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address() -> str:
    pytest.importorskip("ray")
    from mittd.fleet.cluster import ray_session

    with ray_session(2) as ray:  # the fleet's own start-up, quiet; the runs reuse it
        yield ray.get_runtime_context().gcs_address


def _die_first_time(job: DeviceJob, marker_dir: str) -> dict[str, object]:
    marker = Path(marker_dir) / f"{job.device}.attempts"
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if job.device == "always" or attempts == 1:
        os.kill(os.getpid(), 9)  # the worker dies: Ray's to retry
    return {"device": job.device, "status": "ok", "attempts": attempts}


def test_killed_worker_is_retried(ray_address: str, tmp_path: Path) -> None:
    from mittd.fleet.runner import run_fleet

    def die_first_time(job: DeviceJob) -> dict[str, object]:  # pickled by value
        return _die(job)

    _die = functools.partial(_die_first_time, marker_dir=str(tmp_path))
    jobs = [DeviceJob("once", ("x",)), DeviceJob("always", ("y",))]
    rows = run_fleet(jobs, die_first_time, retries=1, address=ray_address, progress=False)
    assert rows[0] == {"device": "once", "status": "ok", "attempts": 2}
    assert rows[1]["device"] == "always" and rows[1]["status"] == "error"
    assert rows[1]["error"] == "worker died (2 attempts)"
    assert (tmp_path / "always.attempts").read_text() == "2"


def test_fleet_train_partial_resumable_and_forced(ray_address: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("tensorflow") is None:  # not imported here: only workers train
        pytest.skip("needs the train extra")
    traces = tmp_path / "traces"
    traces.mkdir()
    _trace(traces / "dev0.parquet", seed=0)
    _trace(traces / "dev1.parquet", seed=1)
    (traces / "broken.parquet").write_bytes(b"PAR1 this is not Parquet")
    models = tmp_path / "models"
    common = ["fleet", "train", str(traces), "-o", str(models), "--epochs", "1",
              "--batch-size", "128", "--workers", "2", "--address", ray_address,
              "--engine", "dense", "--no-progress"]

    assert main(common) == 3
    out, err = capsys.readouterr()
    assert "partial: 1 of 3 devices failed" in err
    assert sorted(p.name for p in models.glob("*.mittd")) == ["dev0.mittd", "dev1.mittd"]
    doc = json.loads((models / "fleet_report" / "fleet.json").read_text())
    rows = {r["device"]: r for r in doc["rows"]}
    assert rows["broken"]["status"] == "error" and "broken.parquet" in rows["broken"]["error"]
    for d in ("dev0", "dev1"):
        r = rows[d]
        assert r["status"] == "ok" and 0.0 <= r["roc_auc"] <= 1.0 and r["policy"]
        assert r["p99_baseline_us"] > 0 and r["p99_mittd_us"] > 0 and r["p99_hedge_us"] > 0
        assert r["us_per_decision"] > 0 and r["extra_ios_hedge"] >= 0
    assert doc["aggregates"]["ok"] == 2 and doc["aggregates"]["error"] == 1
    md = (models / "fleet_report" / "fleet.md").read_text()
    assert "| dev0 |" in md and "| dev1 |" in md
    assert "dev0" in out and "devices: 3 (2 ok, 0 skipped, 1 error)" in out
    mtimes = {p.name: p.stat().st_mtime_ns for p in models.glob("*.mittd")}

    assert main(common) == 3  # resumable: nothing changed, nothing retrained
    capsys.readouterr()
    doc = json.loads((models / "fleet_report" / "fleet.json").read_text())
    status = {r["device"]: r["status"] for r in doc["rows"]}
    assert status == {"broken": "error", "dev0": "skipped (up to date)",
                      "dev1": "skipped (up to date)"}
    assert {p.name: p.stat().st_mtime_ns for p in models.glob("*.mittd")} == mtimes

    (traces / "broken.parquet").unlink()
    assert main([*common, "--force", "--no-replay"]) == 0
    capsys.readouterr()
    doc = json.loads((models / "fleet_report" / "fleet.json").read_text())
    assert [r["status"] for r in doc["rows"]] == ["ok", "ok"]
    assert all(p.stat().st_mtime_ns != mtimes[p.name] for p in models.glob("*.mittd"))

    assert main(["fleet", "report", str(models)]) == 0
    assert "devices: 2 (2 ok, 0 skipped, 0 error)" in capsys.readouterr().out


def _quick_or_slow(job: DeviceJob) -> dict[str, object]:
    import time as _time

    if job.device != "quick":
        _time.sleep(60)  # still running when Ctrl-C comes
    return {"device": job.device, "status": "ok"}


def test_ctrl_c_cancels_what_runs_and_keeps_what_finished(ray_address: str) -> None:
    """Ctrl-C (SIGINT: KeyboardInterrupt in the main thread) during a run: the
    finished rows come back in FleetInterrupted, the running tasks are cancelled at
    once (no 60 s wait), and the cluster is usable for the next run."""
    import _thread
    import threading
    import time

    from mittd.fleet.runner import FleetInterrupted, run_fleet

    jobs = [DeviceJob("quick", ("x",)), DeviceJob("slow", ("y",))]
    timer = threading.Timer(5.0, _thread.interrupt_main)
    t0 = time.monotonic()
    timer.start()
    try:
        with pytest.raises(FleetInterrupted) as e:
            run_fleet(jobs, _quick_or_slow, address=ray_address, progress=False)
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 40
    assert [r["device"] for r in e.value.rows] == ["quick"] and e.value.total == 2
    assert "interrupted: 1 of 2 devices finished" in str(e.value)
    again = run_fleet([DeviceJob("quick", ("x",))], _quick_or_slow, address=ray_address,
                      progress=False)
    assert again == [{"device": "quick", "status": "ok"}]
