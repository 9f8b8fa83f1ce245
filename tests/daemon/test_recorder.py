"""Writing records to segments: what lands on disk, rotation, retention, crashes, full disks.

A closed segment must be a readable record segment holding every IO decided, with
the decision columns right; an open one must never be mistaken for a closed one
(``kill -9`` leaves a ``.partial``, which the next start removes); a disk that
refuses writes must drop records, say so once, and leave every IO decided.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mittd.daemon.admission import AdmissionCore
from mittd.daemon.config import RecordsConfig
from mittd.daemon.devices import build_state, read_bundle
from mittd.daemon.embedded import OP_READ, OP_WRITE, Embedded
from mittd.daemon.recorder import Recorder, SegmentWriter
from mittd.daemon.serve import Daemon
from mittd.predictor.shipped import shipped_bundle
from mittd.traces.records import RECORD_SCHEMA, is_record_schema

REPO = Path(__file__).resolve().parents[2]


def _drive(emb: Embedded, n: int, seed: int = 0) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    admitted = 0
    for i in range(n):
        op = OP_READ if i % 4 else OP_WRITE
        t = emb.admit("d", op, int(rng.integers(0, 1 << 18)) * 4096, 4096, 0)
        if t:
            admitted += 1
            emb.complete("d", t, float(rng.lognormal(5, 0.5)))
    return admitted, n - admitted


def test_every_decided_io_lands_in_a_closed_segment(tmp_path: Path) -> None:
    t0 = time.time()
    emb = Embedded.from_bundles({"d": shipped_bundle("heimdall")}, records=tmp_path)
    admitted, rejected = _drive(emb, 3000)
    emb.close()
    segs = sorted((tmp_path / "d").glob("*.parquet"))
    assert segs and not list((tmp_path / "d").glob("*.partial"))
    t = pq.read_table(segs)
    assert is_record_schema(t.schema) and t.schema.remove_metadata() == RECORD_SCHEMA
    assert t.num_rows == 3000
    dec = t.column("decision").to_pylist()
    assert dec.count("admit") == admitted and dec.count("reject") == rejected > 0
    lat = t.column("latency_us").to_numpy(zero_copy_only=False)
    rej = np.array(dec) == "reject"
    assert np.isnan(lat[rej]).all() and np.isfinite(lat[~rej]).all()
    ts = t.column("ts_issue_us").to_numpy()
    assert (np.diff(ts) >= 0).all() and abs(ts[0] / 1e6 - t0) < 60  # epoch µs, issue order
    assert set(t.column("device").to_pylist()) == {"d"}
    assert set(t.column("model_sha").to_pylist()) == {emb.core.state("d").bundle.sha256}
    assert set(t.column("op").to_pylist()) == {"read", "write"}
    p = t.column("p_slow").to_numpy(zero_copy_only=False)
    reason = np.array(t.column("reason").to_pylist())
    assert (p[rej] > 0.5).all() and set(reason[rej]) == {"predicted"}
    assert set(reason[~rej & (p > 0.5)]) <= {"reject-cap", "probe", "overrun"}
    assert set(reason[~rej & (p <= 0.5)]) <= {"predicted", "overrun"}
    s = emb.stats()["d"]
    assert s.records_written == 3000 and s.records_dropped == 0


def test_shadow_records_say_what_enforcing_would_have_rejected(tmp_path: Path) -> None:
    emb = Embedded.from_bundles({"d": shipped_bundle("heimdall")}, records=tmp_path,
                                mode="shadow")
    _, rejected = _drive(emb, 2000, seed=1)
    emb.close()
    t = pq.read_table(sorted((tmp_path / "d").glob("*.parquet")))
    dec = t.column("decision").to_pylist()
    assert rejected == 0 and dec.count("reject") == 0
    assert dec.count("shadow-reject") == emb.stats()["d"].shadow_rejects > 0
    assert np.isfinite(t.column("latency_us").to_numpy()).all()  # every IO was issued


def _rows(n: int, seed: int = 0):
    b = read_bundle(shipped_bundle("heimdall"))
    core = AdmissionCore({"d": build_state(b, "csr")}, predict_budget_us=1e9)
    core.keep_records("d", True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = core.admit("d", OP_READ, int(rng.integers(0, 1 << 20)) * 4096, 4096, 0, i,
                       1_000 + 50 * i)
        if d.admit:
            core.complete("d", i, 100.0, 1_000 + 50 * i + 1)
    rows = core.take_records("d", 0, everything=True)
    assert rows is not None
    return rows


def test_segments_rotate_by_age_and_size_and_retention_keeps_the_newest(tmp_path: Path
                                                                       ) -> None:
    clock = [0.0]
    w = SegmentWriter(RecordsConfig(tmp_path, segment_s=10, segment_mb=64, keep_mb=64),
                      "d", 0, clock=lambda: clock[0])
    w.add(_rows(500))
    assert not w.segments()  # open: nothing closed yet
    clock[0] = 11.0
    w.tick()
    assert len(w.segments()) == 1 and w.written == 500
    small = SegmentWriter(RecordsConfig(tmp_path / "s", segment_mb=0.01, keep_mb=0.03),
                          "d", 0, clock=lambda: clock[0])
    sizes = []
    for i in range(12):
        small.add(_rows(2000, seed=i))
        small.close_segment()
        sizes.append(small.segments()[-1].stat().st_size)
    segs = small.segments()
    assert small.written == 24000
    total = sum(p.stat().st_size for p in segs)
    assert total <= 0.03 * (1 << 20) + max(sizes)  # at most keep_mb plus the newest
    assert len(segs) < 12 and segs[-1].name.endswith("-000012.parquet")
    assert pq.read_table(segs[-1]).num_rows == 2000


_CHILD = textwrap.dedent("""
    import sys, time
    from mittd.daemon.embedded import Embedded
    from mittd.daemon.config import RecordsConfig
    from mittd.predictor.shipped import shipped_bundle
    import mittd.daemon.recorder as r
    r.SETTLE_US = 0
    r.FLUSH_S = 0.05
    emb = Embedded.from_bundles({"d": shipped_bundle("heimdall")},
                                records=RecordsConfig(sys.argv[1], segment_s=1))
    i = 0
    announced = False
    while True:
        t = emb.admit("d", 0, (i % 100000) * 4096, 4096, 0)
        if t:
            emb.complete("d", t, 100.0)
        i += 1
        if i % 1000 == 0:
            time.sleep(0.001)
            if not announced and emb.stats()["d"].records_written > 0:
                print("closed", flush=True)
                announced = True
""")


def test_closed_segments_survive_kill_9_and_the_cut_one_is_removed(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "closed"
        time.sleep(0.3)  # a new segment is open and being written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    segs = sorted((tmp_path / "d").glob("*.parquet"))
    assert segs
    for p in segs:
        assert pq.read_table(p).num_rows > 0  # every closed one is whole
    partial = list((tmp_path / "d").glob("*.partial"))
    core_emb = Embedded.from_bundles({"d": shipped_bundle("heimdall")}, records=tmp_path)
    assert not list((tmp_path / "d").glob("*.partial"))  # removed at the next start
    core_emb.close()
    assert len(partial) <= 1


_FULL = textwrap.dedent("""
    import json, logging, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from mittd.daemon.embedded import Embedded
    from mittd.predictor.shipped import shipped_bundle
    emb = Embedded.from_bundles({"d": shipped_bundle("heimdall")}, records=sys.argv[1])
    emb.recorder._stop.set()  # flushed by hand below
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    decided = 0
    for round_ in range(3):
        for i in range(20000):
            t = emb.admit("d", 0, (i * 7919 % 100000) * 4096, 4096, 0)
            decided += 1
            if t:
                emb.complete("d", t, 100.0 + i % 50)
        emb.recorder.flush(everything=True)
    full = emb.stats()["d"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    for i in range(5000):
        t = emb.admit("d", 0, i * 4096, 4096, 0)
        decided += 1
        if t:
            emb.complete("d", t, 100.0)
    emb.close()
    s = emb.stats()["d"]
    print(json.dumps({"decided": decided, "counted": s.admitted + s.rejected,
                      "dropped_full": full.records_dropped, "written_full": full.records_written,
                      "dropped": s.records_dropped, "written": s.records_written}))
""")


def test_a_full_disk_drops_records_says_so_once_and_never_fails_an_io(tmp_path: Path
                                                                       ) -> None:
    out = subprocess.run([sys.executable, "-c", _FULL, str(tmp_path)], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["decided"] == r["counted"] == 65000
    assert r["dropped_full"] == 60000 and r["written_full"] == 0
    assert r["written"] == 5000 and r["dropped"] == 60000
    assert out.stderr.count("cannot write to") == 1  # logged once, not per flush
    assert "writing again" in out.stderr
    segs = sorted((tmp_path / "d").glob("*.parquet"))
    assert sum(pq.read_table(p).num_rows for p in segs) == 5000
    assert not list((tmp_path / "d").glob("*.partial"))


def test_the_daemon_records_until_it_stops(tmp_path: Path) -> None:
    dev = tmp_path / "disk.img"
    dev.write_bytes(b"\0" * (1 << 20))
    cfg = tmp_path / "mittd.toml"
    cfg.write_text(f'[server]\nunix_socket = "{tmp_path}/m.sock"\nmetrics = ""\n'
                   f'[records]\ndir = "rec"\n'
                   f'[devices.d]\npath = "{dev}"\nmodel = "{shipped_bundle("heimdall")}"\n'
                   f'mode = "shadow"\n')
    daemon = Daemon(cfg)
    daemon.start()
    try:
        for i in range(100):
            d = daemon.core.admit("d", OP_READ, i * 4096, 4096, 0, i, 1_000 + i)
            assert d.admit
            daemon.core.complete("d", i, 90.0, 1_100 + i)
    finally:
        daemon.stop()
    t = pq.read_table(sorted((tmp_path / "rec" / "d").glob("*.parquet")))
    assert t.num_rows == 100 and "reject" not in t.column("decision").to_pylist()


def test_recorder_refuses_a_directory_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    core = AdmissionCore({"d": build_state(read_bundle(shipped_bundle("heimdall")), "csr")})
    with pytest.raises(ValueError, match=r"records\.dir: cannot create"):
        Recorder(core, RecordsConfig(tmp_path / "f" / "sub"))
    assert os.path.isfile(tmp_path / "f")


def test_a_partial_of_a_live_process_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        mine = tmp_path / "d" / f"20261201T000000000000Z-p{live.pid}-000001.parquet.partial"
        dead = tmp_path / "d" / "20261201T000000000000Z-p999999999-000001.parquet.partial"
        mine.write_bytes(b"PAR1")
        dead.write_bytes(b"PAR1")
        emb = Embedded.from_bundles({"d": shipped_bundle("heimdall")}, records=tmp_path)
        assert mine.exists() and not dead.exists()
        emb.admit("d", OP_READ, 0, 4096, 0)
        emb.close()
        names = [p.name for p in (tmp_path / "d").glob("*.parquet")]
        assert len(names) == 1 and f"-p{os.getpid()}-" in names[0]
    finally:
        live.kill()
        live.wait()


def test_a_host_that_exits_without_close_keeps_its_records(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import sys
        from mittd.daemon.embedded import Embedded
        from mittd.predictor.shipped import shipped_bundle
        emb = Embedded.from_bundles({"d": shipped_bundle("heimdall")}, records=sys.argv[1])
        for i in range(100):
            t = emb.admit("d", 0, i * 4096, 4096, 0)
            if t:
                emb.complete("d", t, 90.0)
    """)  # no close(): the interpreter's exit writes the records
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=REPO,
                   timeout=120)
    segs = sorted((tmp_path / "d").glob("*.parquet"))
    assert sum(pq.read_table(p).num_rows for p in segs) == 100
