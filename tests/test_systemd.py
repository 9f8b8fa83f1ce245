"""The shipped unit passes ``systemd-analyze verify``; the example config loads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mittd.daemon.config import load_config
from mittd.predictor.bundle import save_bundle
from mittd.predictor.synthetic import synthetic_bundle
from tests.conftest import REPO

SYSTEMD = REPO / "systemd"
UNIT = SYSTEMD / "mittd.service"
EXAMPLE = SYSTEMD / "mittd.toml"
EXEC = "ExecStart=/usr/bin/mittd serve --config /etc/mittd/mittd.toml"


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_has_the_required_settings() -> None:
    text = UNIT.read_text()
    assert EXEC in text.splitlines()
    d = directives(text)
    expect = {
        "Type": "notify", "ExecReload": "/bin/kill -HUP $MAINPID", "WatchdogSec": "10",
        "Restart": "on-failure", "RestartSec": "1", "RuntimeDirectory": "mittd",
        "RuntimeDirectoryMode": "0750", "User": "mittd", "Group": "mittd",
        "ProtectSystem": "strict", "ProtectHome": "true", "PrivateTmp": "true",
        "NoNewPrivileges": "true", "PrivateNetwork": "no",
        "ProtectKernelTunables": "true", "ProtectKernelModules": "true",
        "ProtectControlGroups": "true",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "DevicePolicy": "closed", "CapabilityBoundingSet": "",
    }
    for k, v in expect.items():
        assert d.get(k) == [v], k
    assert "LimitNOFILE" in d and "MemoryMax" in d
    assert "MemoryDenyWriteExecute" not in d  # numba JIT needs W+X pages
    assert "PrivateDevices" not in d  # would hide the block devices served
    assert "#DeviceAllow=/dev/" in text
    assert "CAP_SYS_RAWIO is\n# NOT needed for O_DIRECT" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_unit_verifies(tmp_path: Path) -> None:
    # /usr/bin/mittd is not installed here; point ExecStart at a binary that
    # exists so that any remaining complaint is a real problem with the unit.
    true = shutil.which("true") or "/bin/true"
    text = UNIT.read_text()
    copy = tmp_path / "mittd.service"
    copy.write_text(text.replace(EXEC, f"ExecStart={true} serve --config "
                                       "/etc/mittd/mittd.toml"))
    r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    # verify exits 0 on ignored keys and bad values too, so any output is a failure
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 0 and not problems, "\n".join(problems)


def test_example_config_loads(tmp_path: Path) -> None:
    dev = tmp_path / "disk.img"
    dev.write_bytes(b"\0" * 4096)
    model = tmp_path / "nvme0.mittd"
    save_bundle(synthetic_bundle("linnos"), model)
    text = EXAMPLE.read_text()
    assert '"/dev/nvme0n1"' in text and '"/var/lib/mittd/models/nvme0.mittd"' in text
    text = text.replace('"/dev/nvme0n1"', f'"{dev}"').replace(
        '"/var/lib/mittd/models/nvme0.mittd"', f'"{model}"')
    cfg_path = tmp_path / "mittd.toml"
    cfg_path.write_text(text)
    cfg = load_config(cfg_path)
    assert list(cfg.devices) == ["nvme0"]
    d = cfg.devices["nvme0"]
    assert (d.path, d.model, d.engine, d.writable, d.direct_io, d.alignment) == (
        dev, model, "auto", False, True, 4096)
    s = cfg.server
    assert s.socket_mode == 0o660 and s.tcp is None and str(s.metrics) == "127.0.0.1:9464"
    assert s.predict_budget_us == 50.0 and s.max_pending_per_device == 4096


def test_example_config_uncommented_options_are_valid(tmp_path: Path) -> None:
    """The commented-out examples are real keys: uncommenting them must still load."""
    dev = tmp_path / "disk.img"
    dev.write_bytes(b"\0" * 4096)
    model = tmp_path / "nvme0.mittd"
    save_bundle(synthetic_bundle("linnos"), model)
    text = EXAMPLE.read_text().replace('"/dev/nvme0n1"', f'"{dev}"').replace(
        '"/var/lib/mittd/models/nvme0.mittd"', f'"{model}"')
    for key in ("unix_socket", "tcp", "workers", "slo_us", "decision_threshold"):
        text = text.replace(f"#{key} =", f"{key} =")
    cfg_path = tmp_path / "mittd.toml"
    cfg_path.write_text(text)
    cfg = load_config(cfg_path)
    assert str(cfg.server.tcp) == "127.0.0.1:7070"
    assert cfg.devices["nvme0"].slo_us == 500.0
