"""``mittd.fleet.cluster``: a wrong ``--address`` is one line in seconds (Ray itself
retries for minutes), a local cluster starts without Ray's chatter, an initialised
Ray is reused and left running, and a benchmark's ``fresh`` session refuses one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from mittd.fleet.cluster import check_reachable, ray_session
from mittd.fleet.manifest import FleetError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}",
                                      "localhost:{port}/"])
def test_nothing_listening_is_one_line_at_once(address: str) -> None:
    address = address.format(port=_free_port())
    t0 = time.perf_counter()
    with pytest.raises(FleetError, match=f"cannot reach the Ray cluster at {address}: "):
        check_reachable(address)
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("address", ["nohost", "host:", ":6379", "host:port", "host:0",
                                     "host:70000"])
def test_malformed_address_names_the_option(address: str) -> None:
    with pytest.raises(FleetError, match=r"--address .*expected HOST:PORT"):
        check_reachable(address)


def test_listening_port_and_auto_pass() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_reachable(f"127.0.0.1:{s.getsockname()[1]}")
    check_reachable("auto")  # Ray's own discovery: left to Ray


def test_wrong_address_through_a_session_is_the_same_line() -> None:
    pytest.importorskip("ray")
    port = _free_port()
    session = ray_session(address=f"127.0.0.1:{port}")
    with pytest.raises(FleetError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        session.__enter__()


def test_local_session_is_quiet_reused_and_shut_down() -> None:
    """In a fresh interpreter (this one may hold a test's Ray), without RAY_AUTH_MODE."""
    pytest.importorskip("ray")
    code = textwrap.dedent("""
        import ray
        from mittd.fleet.cluster import ray_session
        from mittd.fleet.manifest import FleetError
        with ray_session(1) as r:
            assert r.cluster_resources()["CPU"] == 1
            with ray_session(4):  # initialised: used as it is, left running
                pass
            assert ray.is_initialized()
            try:
                with ray_session(fresh=True):
                    pass
            except FleetError as e:
                print("refused:", e)
        print("after:", ray.is_initialized())
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: a Ray is already initialised" in done.stdout
    assert "after: False" in done.stdout
    for chatter in ("Started a local Ray instance", "Token authentication is enabled"):
        assert chatter not in done.stderr


class _FlakyRay:
    """A stand-in for ``ray`` whose first ``fails`` starts time out as Ray's do."""

    def __init__(self, fails: int) -> None:
        self.fails, self.inits, self.shutdowns = fails, 0, 0

    def is_initialized(self) -> bool:
        return False

    def init(self, **_: object) -> None:
        self.inits += 1
        if self.inits <= self.fails:
            raise Exception("The current node timed out during startup. This could happen")

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_a_local_start_that_times_out_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from mittd.fleet import cluster

    ray = _FlakyRay(fails=2)
    monkeypatch.setattr(cluster, "import_ray", lambda: ray)
    with ray_session(2) as got:
        assert got is ray
    assert ray.inits == 3 and ray.shutdowns == 3  # two cleaned-up failures, then the end
    always = _FlakyRay(fails=99)
    monkeypatch.setattr(cluster, "import_ray", lambda: always)
    with pytest.raises(FleetError, match=r"cannot start or reach a local Ray cluster "
                                         r"\(3 attempts\): Exception: The current node timed out"):
        ray_session(2).__enter__()
    assert always.inits == cluster.LOCAL_START_ATTEMPTS
