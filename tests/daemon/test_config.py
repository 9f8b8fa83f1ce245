"""Daemon config validation and ``mittd check``: errors name the field, defaults hold."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from mittd.daemon.check import USER_ERRORS, add_commands, cmd_check
from mittd.daemon.config import (
    ENGINE_NAMES,
    Address,
    Config,
    ConfigError,
    default_unix_socket,
    load_config,
)
from mittd.predictor.bundle import save_bundle
from mittd.predictor.synthetic import synthetic_bundle


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("bundle") / "linnos.mittd"
    save_bundle(synthetic_bundle("linnos", 0.5), p)
    return p


@pytest.fixture
def env(tmp_path: Path, bundle_file: Path) -> dict[str, Path]:
    dev = tmp_path / "disk.img"
    dev.write_bytes(b"\0" * 65536)
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("-----BEGIN X-----\n")
    return {"dir": tmp_path, "dev": dev, "model": bundle_file}


def write(env: dict[str, Path], text: str, device: str | None = None) -> Path:
    """A config file with ``text`` plus one good device table (unless ``device`` given)."""
    if device is None:
        device = f'[devices.nvme0]\npath = "{env["dev"]}"\nmodel = "{env["model"]}"\n'
    p = env["dir"] / "mittd.toml"
    p.write_text(text + "\n" + device)
    return p


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ")
    return msg


# -- defaults ---------------------------------------------------------------------


def test_defaults(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/mittd-test:/run/other")
    cfg = load_config(write(env, ""))
    s = cfg.server
    assert s.unix_socket == Path("/run/mittd-test/mittd.sock")
    assert s.socket_mode == 0o660
    assert s.tcp is None and s.tls is None
    assert s.metrics == Address("127.0.0.1", 9464)
    assert (s.max_pending_per_device, s.pending_timeout_ms, s.max_read_bytes,
            s.max_stream_batch, s.predict_budget_us) == (4096, 10000, 1 << 20, 1024, 50.0)
    assert 1 <= s.workers <= 4
    d = cfg.devices["nvme0"]
    assert d.path == env["dev"] and d.model == env["model"]
    assert (d.engine, d.slo_us, d.decision_threshold, d.writable, d.direct_io,
            d.alignment) == ("auto", None, None, False, True, 4096)
    out = cfg.to_dict()
    assert out["server"]["socket_mode"] == "0o660"
    assert out["devices"]["nvme0"]["path"] == str(env["dev"])


def test_socket_fallback_without_runtime_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    assert default_unix_socket() == "/run/mittd/mittd.sock"


def test_frozen_and_full_config(env: dict[str, Path]) -> None:
    p = write(env, f"""
[server]
unix_socket = "/tmp/m.sock"
socket_mode = "0600"
tcp = "[::]:7070"
metrics = ""
max_pending_per_device = 10
predict_budget_us = 12.5
workers = 2
[server.tls]
cert = "cert.pem"
key = "{env['dir'] / 'key.pem'}"
client_ca = "ca.pem"
""", device=f"""
[devices.ssd-1_b]
path = "{env['dev']}"
model = "{env['model']}"
engine = "eie"
slo_us = 300
decision_threshold = 0.7
writable = true
direct_io = false
alignment = 512
""")
    cfg = load_config(p)
    assert isinstance(cfg, Config)
    s = cfg.server
    assert s.socket_mode == 0o600 and s.metrics is None and s.workers == 2
    assert s.tcp == Address("::", 7070) and str(s.tcp) == "[::]:7070"
    assert s.tls is not None and s.tls.cert == env["dir"] / "cert.pem"  # relative to file
    assert s.tls.client_ca == env["dir"] / "ca.pem"
    d = cfg.devices["ssd-1_b"]
    assert (d.engine, d.slo_us, d.decision_threshold, d.writable, d.alignment) == (
        "eie", 300.0, 0.7, True, 512)
    with pytest.raises(AttributeError):
        d.slo_us = 1.0  # type: ignore[misc]
    assert cfg.to_dict()["server"]["tls"]["client_ca"] == str(env["dir"] / "ca.pem")


# -- field errors name the field and the allowed values -------------------------------


@pytest.mark.parametrize(("server", "field", "allowed"), [
    ("max_pending_per_device = 0", "server.max_pending_per_device", "[1, 1000000]"),
    ("max_pending_per_device = 2000000", "server.max_pending_per_device", "[1, 1000000]"),
    ('max_pending_per_device = "many"', "server.max_pending_per_device", "integer"),
    ("max_pending_per_device = true", "server.max_pending_per_device", "integer"),
    ("pending_timeout_ms = 0", "server.pending_timeout_ms", "must be in"),
    ("max_read_bytes = 1", "server.max_read_bytes", "must be in"),
    ("max_stream_batch = 0", "server.max_stream_batch", "must be in"),
    ("predict_budget_us = 0", "server.predict_budget_us", "(0, 1e+06]"),
    ("workers = 0", "server.workers", "must be in"),
    ("socket_mode = 0o1777", "server.socket_mode", "0o777"),
    ("socket_mode = 0o060", "server.socket_mode", "0o600"),
    ('unix_socket = "relative.sock"', "server.unix_socket", "absolute"),
    (f'unix_socket = "/{"x" * 120}"', "server.unix_socket", "107 bytes"),
    ('tcp = "7070"', "server.tcp", "host:port"),
    ('tcp = "127.0.0.1:0"', "server.tcp", "[1, 65535]"),
    ('tcp = "127.0.0.1:99999"', "server.tcp", "[1, 65535]"),
    ('tcp = "[nothex]:70"', "server.tcp", "IPv6"),
    ('tcp = "bad_host!:70"', "server.tcp", "host name"),
    ('metrics = "localhost"', "server.metrics", "host:port"),
    ("unix_sock = '/x'", "server.unix_sock", "unknown field; allowed: unix_socket"),
])
def test_server_errors(env: dict[str, Path], server: str, field: str, allowed: str) -> None:
    msg = error_of(write(env, f"[server]\n{server}\n"))
    assert f": {field}: " in msg
    assert allowed in msg


def device_toml(env: dict[str, Path], alias: str = "nvme0", **over: str) -> str:
    fields = {"path": f'"{env["dev"]}"', "model": f'"{env["model"]}"', **over}
    body = "\n".join(f"{k} = {v}" for k, v in fields.items() if v != "")
    return f'[devices."{alias}"]\n{body}\n'


@pytest.mark.parametrize(("over", "field", "allowed"), [
    ({"engine": '"fast"'}, "engine", "'fast' is not one of " + ", ".join(ENGINE_NAMES)),
    ({"slo_us": "0"}, "slo_us", "(0, 1e+09]"),
    ({"slo_us": "-5"}, "slo_us", "must be in"),
    ({"slo_us": "nan"}, "slo_us", "expected a number"),
    ({"decision_threshold": "1.0"}, "decision_threshold", "(0, 1)"),
    ({"decision_threshold": "0"}, "decision_threshold", "(0, 1)"),
    ({"writable": '"yes"'}, "writable", "true or false"),
    ({"direct_io": "1"}, "direct_io", "true or false"),
    ({"alignment": "256"}, "alignment", "[512, 1048576]"),
    ({"alignment": "3000"}, "alignment", "power of two"),
    ({"path": ""}, "path", "required"),
    ({"model": ""}, "model", "required"),
    ({"path": '"/nonexistent/disk"'}, "path", "does not exist"),
    ({"model": '"/nonexistent/m.mittd"'}, "model", "does not exist"),
    ({"model": '"/"'}, "model", "not a regular file"),
    ({"path": '"/dev/null"'}, "path", "regular file or block device"),
    ({"path": "3"}, "path", "expected a string"),
    ({"slo": "3"}, "slo", "unknown field"),
])
def test_device_errors(env: dict[str, Path], over: dict[str, str], field: str,
                       allowed: str) -> None:
    msg = error_of(write(env, "", device=device_toml(env, **over)))
    assert f": devices.nvme0.{field}: " in msg
    assert allowed in msg


def test_unreadable_and_unwritable_files(env: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # os.access, not chmod: the tests may run as root, who can read anything
    denied: set[int] = set()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: mode not in denied and real(p, mode))
    denied.add(os.W_OK)
    msg = error_of(write(env, "", device=device_toml(env, writable="true")))
    assert "devices.nvme0.path" in msg and "not writable" in msg
    load_config(write(env, "", device=device_toml(env)))  # read-only is enough
    denied.add(os.R_OK)
    assert "not readable" in error_of(write(env, "", device=device_toml(env)))


@pytest.mark.parametrize("alias", ["bad alias", "x" * 65, "nvme/0", "é"])
def test_bad_aliases(env: dict[str, Path], alias: str) -> None:
    msg = error_of(write(env, "", device=device_toml(env, alias=alias)))
    assert f"devices.{alias}: alias must be 1-64 characters from [A-Za-z0-9_-]" in msg


def test_good_aliases(env: dict[str, Path]) -> None:
    text = device_toml(env, alias="a") + device_toml(env, alias="Z9_-" + "x" * 60)
    cfg = load_config(write(env, "", device=text))
    assert list(cfg.devices) == ["a", "Z9_-" + "x" * 60]


def test_no_devices(env: dict[str, Path]) -> None:
    assert "devices: at least one [devices.<alias>]" in error_of(write(env, "", device=""))
    assert "devices: at least one" in error_of(write(env, "[devices]\n", device=""))


def test_unknown_top_level_and_wrong_table_type(env: dict[str, Path]) -> None:
    assert "serverr: unknown field; allowed: server, devices" in error_of(
        write(env, "[serverr]\nx = 1\n"))
    assert "server: expected a table" in error_of(write(env, 'server = "x"\n', device=""))
    assert "devices.nvme0: expected a table" in error_of(
        write(env, "", device="[devices]\nnvme0 = 3\n"))


# -- TLS ------------------------------------------------------------------------


@pytest.mark.parametrize("addr", ["127.0.0.1:7070", "127.5.5.5:1", "[::1]:7070",
                                  "localhost:7070"])
def test_loopback_tcp_needs_no_tls(env: dict[str, Path], addr: str) -> None:
    cfg = load_config(write(env, f'[server]\ntcp = "{addr}"\n'))
    assert cfg.server.tcp is not None and cfg.server.tcp.is_loopback


@pytest.mark.parametrize("addr", ["0.0.0.0:7070", "10.1.2.3:7070", "[::]:7070",
                                  "storage.example.com:7070"])
def test_network_tcp_requires_tls(env: dict[str, Path], addr: str) -> None:
    msg = error_of(write(env, f'[server]\ntcp = "{addr}"\n'))
    assert "server.tcp:" in msg and "[server.tls]" in msg and "required" in msg
    ok = write(env, f'[server]\ntcp = "{addr}"\n[server.tls]\ncert = "cert.pem"\n'
                    'key = "key.pem"\n')
    assert load_config(ok).server.tls is not None


def test_tls_files_must_exist(env: dict[str, Path]) -> None:
    base = '[server]\ntcp = "0.0.0.0:7070"\n[server.tls]\n'
    msg = error_of(write(env, base + 'cert = "nope.pem"\nkey = "key.pem"\n'))
    assert "server.tls.cert:" in msg and "does not exist" in msg
    assert "server.tls.key: required" in error_of(write(env, base + 'cert = "cert.pem"\n'))
    msg = error_of(write(env, base + 'cert = "cert.pem"\nkey = "key.pem"\n'
                                     'client_ca = "nope.pem"\n'))
    assert "server.tls.client_ca:" in msg


def test_tls_without_tcp_is_refused(env: dict[str, Path]) -> None:
    msg = error_of(write(env, '[server.tls]\ncert = "cert.pem"\nkey = "key.pem"\n'))
    assert "server.tls: is set but server.tcp is not" in msg


# -- the file itself -------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such config file"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml_reports_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[server]\nworkers = = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML: .*line 2, column"):
        load_config(p)


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe[server]")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


# -- mittd check -------------------------------------------------------------------------


def run_check(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mittd")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_check_good(env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    p = write(env, "[server]\npredict_budget_us = 1000000\n")
    assert run_check(["check", "--config", str(p)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    line = out[0]
    assert line.startswith(f"ok  nvme0  {env['dev']}  linnos@")
    assert "engine auto  thresholds [500.0] µs  slo 500 µs  p_slow [0.5]" in line


def test_check_no_models_skips_bundles(env: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    env["model"] = env["dir"] / "garbage.mittd"
    env["model"].write_bytes(b"not a zip")
    assert run_check(["check", "--config", str(write(env, "")), "--no-models"]) == 0
    assert "not loaded: --no-models" in capsys.readouterr().out


def test_check_corrupt_bundle_lists_every_problem(
        env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    bad = env["dir"] / "corrupt.mittd"
    data = bytearray(env["model"].read_bytes())
    bad.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    devices = (device_toml(env, alias="good")
               + device_toml(env, alias="bad1", model=f'"{bad}"')
               + device_toml(env, alias="bad2", model=f'"{bad}"', engine='"csr"'))
    p = write(env, "[server]\npredict_budget_us = 1000000\n", device=devices)
    args = argparse.Namespace(config=str(p), no_models=False)
    assert cmd_check(args) == 1
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert lines[0].startswith("ok  good  ")
    assert lines[1].startswith(f"FAIL  bad1  {env['dev']}  {bad}: corrupted or truncated")
    assert lines[2].startswith("FAIL  bad2  ")
    assert "2 of 3 device(s) have problems: bad1, bad2" in cap.err


def test_check_warns_when_inference_exceeds_budget(
        env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    p = write(env, "[server]\npredict_budget_us = 0.001\n")
    assert run_check(["check", "--config", str(p)]) == 0  # a warning, not a failure
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok  nvme0")
    assert out[1].startswith("warn  nvme0") and "fail open" in out[1]


def test_check_config_error_is_a_user_error(tmp_path: Path) -> None:
    args = argparse.Namespace(config=str(tmp_path / "none.toml"), no_models=False)
    with pytest.raises(USER_ERRORS) as ei:
        cmd_check(args)
    assert isinstance(ei.value, ConfigError)


def test_check_does_not_import_tensorflow(env: dict[str, Path]) -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom mittd.daemon.check import cmd_check\n"
            "import argparse\n"
            f"rc = cmd_check(argparse.Namespace(config={str(write(env, ''))!r}, "
            "no_models=False))\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
            "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


# -- records, shadow mode, live quality ---------------------------------------------


def test_records_mode_and_quality_settings(env: dict[str, Path]) -> None:
    cfg = load_config(write(env, '[records]\ndir = "rec"\nsegment_s = 30\nkeep_mb = 100\n'
                                 "[server]\nquality_window = 5000\n",
                            device=device_toml(env, mode='"shadow"', drift_margin="0.1")))
    r = cfg.records
    assert r is not None and r.dir == env["dir"] / "rec"  # relative to the config file
    assert (r.segment_mb, r.segment_s, r.keep_mb, r.keep_hours) == (64.0, 30.0, 100.0, 168.0)
    assert cfg.server.quality_window == 5000
    d = cfg.devices["nvme0"]
    assert (d.mode, d.drift_margin) == ("shadow", 0.1)
    assert cfg.to_dict()["records"]["dir"] == str(env["dir"] / "rec")
    plain = load_config(write(env, ""))
    assert plain.records is None and plain.devices["nvme0"].mode == "enforce"


@pytest.mark.parametrize(("text", "field", "problem"), [
    ('[records]\nsegment_s = 5\n', "records.dir", "required field is missing"),
    ('[records]\ndir = ""\n', "records.dir", "empty path"),
    ('[records]\ndir = "r"\nsegment_s = 0\n', "records.segment_s", "out of range"),
    ('[records]\ndir = "r"\nkeep_mb = "big"\n', "records.keep_mb", "expected a number"),
    ('[records]\ndir = "r"\nsegment_mb = 64\nkeep_mb = 10\n', "records.keep_mb",
     "below segment_mb"),
    ('[records]\ndir = "r"\nflush = 1\n', "records.flush", "unknown field"),
    ('[server]\nquality_window = 10\n', "server.quality_window", "[100, 131072]"),
])
def test_records_errors(env: dict[str, Path], text: str, field: str, problem: str) -> None:
    msg = error_of(write(env, text))
    assert f": {field}: " in msg and problem in msg


def test_records_dir_must_be_a_writable_directory(env: dict[str, Path]) -> None:
    (env["dir"] / "afile").write_text("x")
    assert "records.dir: " in error_of(write(env, '[records]\ndir = "afile"\n'))
    assert "is not a directory" in error_of(write(env, '[records]\ndir = "afile"\n'))


@pytest.mark.parametrize(("over", "field", "allowed"), [
    ({"mode": '"watch"'}, "mode", "'watch' is not one of enforce, shadow"),
    ({"drift_margin": "2"}, "drift_margin", "[0, 1]"),
])
def test_mode_errors(env: dict[str, Path], over: dict[str, str], field: str,
                     allowed: str) -> None:
    msg = error_of(write(env, "", device=device_toml(env, **over)))
    assert f": devices.nvme0.{field}: " in msg and allowed in msg


def test_check_shows_the_mode_and_where_records_go(env: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    p = write(env, '[server]\npredict_budget_us = 1000000\n[records]\ndir = "rec"\n',
              device=device_toml(env, mode='"shadow"'))
    assert run_check(["check", "--config", str(p)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"records: {env['dir'] / 'rec'}/<alias>/  segments of 64 MB or 60 s, "
                      "kept 1024 MB or 168 h per device")
    assert out[1].endswith("mode shadow")
