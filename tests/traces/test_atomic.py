"""The atomic writer leaves the old file or the whole new one, never a part (issue 15)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mittd.traces.atomic import OutputError, atomic_path, partial_path, write_bytes, write_text


def test_writes_and_leaves_no_partial(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    write_text(out, "new")
    assert out.read_text() == "new"
    assert list(tmp_path.iterdir()) == [out]


def test_an_error_while_writing_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert not partial_path(out).exists()


@pytest.mark.parametrize(("where", "says"), [
    ("missing/x.json", "No such file or directory"),
    (".", "Is a directory"),
])
def test_os_errors_are_one_line_naming_the_file(tmp_path: Path, where: str, says: str) -> None:
    target = tmp_path / where
    with pytest.raises(OutputError) as e:
        write_bytes(target, b"x")
    assert str(target) in str(e.value) and says in str(e.value)
    assert "\n" not in str(e.value)


def test_a_full_disk_is_an_output_error_and_no_partial(tmp_path: Path) -> None:
    """A real write limit (RLIMIT_FSIZE, SIGXFSZ ignored: EFBIG as on a full disk)."""
    out = tmp_path / "big.bin"
    out.write_bytes(b"old")
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))\n"
        "from mittd.traces.atomic import OutputError, write_bytes\n"
        "try:\n"
        f"    write_bytes({str(out)!r}, b'x' * (1 << 20))\n"
        "except OutputError as e:\n"
        "    print(e); sys.exit(2)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert str(out) in r.stdout and "File too large" in r.stdout
    assert out.read_bytes() == b"old"
    assert not partial_path(out).exists()


def test_kill_9_while_writing_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "big.bin"
    out.write_bytes(b"old")
    code = (
        "import sys, time\n"
        "from mittd.traces.atomic import atomic_path\n"
        f"with atomic_path({str(out)!r}) as tmp, open(tmp, 'wb') as f:\n"
        "    f.write(b'new' * 100000); f.flush(); print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "writing"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert out.read_bytes() == b"old"  # the partial may remain; never the final name
    write_text(out, "next")  # the next write replaces both
    assert out.read_text() == "next" and not partial_path(out).exists()
