"""Where the replicas of ``mittd bench live`` live: files it creates in ``--dir``
directories, or ``--target`` files and block devices used as they are, and what each
one's reads really measure (a disk with O_DIRECT, or RAM on tmpfs)."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
MIN_SIZE = 16 * MiB


class PlacementError(Exception):
    """A replica cannot go where it was asked to; one line (run.py makes it a LiveError)."""


@dataclass(frozen=True)
class Replica:
    """Replica ``i``: its path, and what a read of it measures.

    ``given``: a ``--target``, used as-is (never filled, never removed, written only
    with ``--write-targets``); ``direct``: O_DIRECT works there, so reads reach the
    device; otherwise they are buffered. On tmpfs (``ram``) a read is a RAM copy either
    way (tmpfs accepts O_DIRECT since Linux 6.6).
    """

    path: Path
    base: Path | None  # the --dir directory, None for a --target
    given: bool
    block: bool
    direct: bool
    fs: str

    @property
    def medium(self) -> str:
        """One phrase for the output: what a read of this replica is."""
        if self.block:
            return "block device, O_DIRECT"
        if self.ram:
            # tmpfs takes O_DIRECT since Linux 6.6; either way a read is a memory copy
            return f"{self.fs}: RAM ({'O_DIRECT accepted' if self.direct else 'buffered'})"
        if self.direct:
            return f"{self.fs}, O_DIRECT (the disk)"
        return f"{self.fs}, buffered (page cache)"

    @property
    def ram(self) -> bool:
        """On a memory file system: reads are RAM copies, whatever the open flags."""
        return self.fs in ("tmpfs", "ramfs")


def fs_type(path: Path) -> str:
    """The type of the file system holding ``path`` (the longest mount point in
    /proc/mounts that contains it), "?" where that cannot be told."""
    try:
        real = os.path.realpath(path)
        best, kind = "", "?"
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mnt = parts[1].replace("\\040", " ")
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, kind = mnt, parts[2]
        return kind
    except OSError:
        return "?"


def _direct_ok(path: Path) -> bool:
    from mittd.traces.collect import direct_io_error

    return direct_io_error(path) is None


def place_files(directory: str | Path | Sequence[str | Path] | None, replicas: int,
                size: int, default: Path) -> list[Replica]:
    """Replica ``i`` in the (i mod n)-th ``--dir`` directory (``default`` without one),
    each directory checked: it exists, is writable, has room for its replica files.
    A directory refusing O_DIRECT (tmpfs before Linux 6.6) is accepted: its reads are
    buffered there."""
    if directory is None or directory == "":
        bases = [default]
    elif isinstance(directory, str | Path):
        bases = [Path(d) for d in str(directory).split(",") if d]
    else:
        bases = [Path(d) for d in directory]
    if not bases:
        raise PlacementError("--dir: no directory given")
    bases = [b.absolute() for b in bases]  # the daemons' configs need absolute paths
    placement = [bases[i % len(bases)] for i in range(replicas)]
    facts: dict[Path, tuple[bool, str]] = {}
    for base in dict.fromkeys(bases):
        if not base.is_dir():
            raise PlacementError(f"--dir {base}: not a directory")
        if not os.access(base, os.W_OK):
            raise PlacementError(f"--dir {base}: not writable")
        need = placement.count(base) * size + 64 * MiB
        free = shutil.disk_usage(base).free
        if free < need:
            raise PlacementError(f"--dir {base}: {need / MiB:,.0f} MiB needed for the replica "
                                 f"files, {free / MiB:,.0f} MiB free; use a smaller --size or "
                                 "another --dir")
        facts[base] = (_direct_ok(base), fs_type(base))
    return [Replica(path=placement[i] / f"replica{i}.img", base=placement[i], given=False,
                    block=False, direct=facts[placement[i]][0], fs=facts[placement[i]][1])
            for i in range(replicas)]


def check_targets(targets: Sequence[str | Path], allow_block_device: bool) -> list[Replica]:
    """``--target`` paths: existing, readable regular files or block devices (the latter
    only with ``allow_block_device``), each at least 16 MiB."""
    from mittd.daemon.proxy import device_size

    out = []
    for t in targets:
        p = Path(t).absolute()
        try:
            st = p.stat()
        except OSError as e:
            raise PlacementError(f"--target {t}: {e.strerror or e}") from None
        block = stat.S_ISBLK(st.st_mode)
        if not (block or stat.S_ISREG(st.st_mode)):
            raise PlacementError(f"--target {t}: not a regular file or block device")
        if block and not allow_block_device:
            raise PlacementError(f"--target {t}: a block device; pass --allow-block-device "
                                 "to read it (reads only: it is never written without "
                                 "--write-targets)")
        if not os.access(p, os.R_OK):
            raise PlacementError(f"--target {t}: not readable")
        n = device_size(p)
        if n < MIN_SIZE:
            raise PlacementError(f"--target {t}: {n:,} bytes, at least 16 MiB needed")
        out.append(Replica(path=p, base=None, given=True, block=block, direct=_direct_ok(p),
                           fs="block device" if block else fs_type(p)))
    return out


def target_size(reps: Sequence[Replica]) -> int:
    """The bytes every given target has (reads stay below it), 4 KiB aligned."""
    from mittd.daemon.proxy import device_size

    return min(device_size(r.path) for r in reps) // 4096 * 4096
