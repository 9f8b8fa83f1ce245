"""Atomic, durable output files: the one home of "write beside, fsync, rename".

Every file mittd writes for a user (converted traces, bundles, JSON reports,
record segments) must be either the old file or the whole new one after any
failure: a full disk, a quota, ``kill -9`` or a power cut. So the bytes go to
``<name>.partial`` in the same directory, are flushed and fsynced, the partial
is renamed over the name (atomic on POSIX) and the directory is fsynced so the
rename itself survives a crash. On any error the partial is removed and the
error becomes one :class:`OutputError` line naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PARTIAL_SUFFIX = ".partial"


class OutputError(Exception):
    """An output file cannot be written; the message is one line for the user."""


def partial_path(path: str | Path) -> Path:
    """Where ``path`` is written before it is renamed into place."""
    p = Path(path)
    return p.with_name(p.name + PARTIAL_SUFFIX)


def fsync_dir(path: str | Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def describe(e: OSError) -> str:
    """The errno's own words (``No space left on device``): pyarrow's strerror is
    ``Error writing bytes to file. Detail: [errno 28] ...``."""
    return os.strerror(e.errno) if e.errno else (e.strerror or str(e))


def output_error(path: str | Path, e: OSError) -> OutputError:
    """The one-line error for an output ``path`` that failed with ``e``."""
    return OutputError(f"cannot write {path}: {describe(e)}")


def commit(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it over ``path``, fsync the directory."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield the partial path to write to; on a clean exit it replaces ``path``.

    Any exception removes the partial; an ``OSError`` (ENOSPC, EFBIG, EACCES...)
    is raised again as :class:`OutputError` naming ``path``.
    """
    final = Path(path)
    tmp = partial_path(final)
    try:
        yield tmp
        commit(tmp, final)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise output_error(final, e) from None
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    write_bytes(path, text.encode())


def save_figure(fig: Any, path: str | Path, **savefig: Any) -> None:
    """``fig.savefig`` atomically (the format from ``path``'s suffix, not the partial's)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **savefig)
