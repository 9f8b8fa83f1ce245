"""Opening trace files and cutting them into line-aligned blocks.

Readers never load a whole file: they see blocks of a few MiB that end on a line
boundary, each tagged with the line number of its first line, so the memory a
reader needs is bounded whatever the file size, and malformed lines can still be
reported by their number. Compressed files (gzip, bz2, zstd, lz4) are detected
by their magic bytes and decompressed on the fly, since public traces (MSR,
SYSTOR '17, Alibaba) are distributed compressed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from mittd.traces.errors import TraceError

DEFAULT_BLOCK_BYTES = 8 << 20

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
)


@dataclass(frozen=True)
class Block:
    """A run of whole lines from a file; ``first_line`` is 1-based."""

    data: bytes
    first_line: int


def check_readable(path: str | Path) -> Path:
    """Fail with one clear line when ``path`` is not a readable, non-empty file."""
    p = Path(path)
    if not p.exists():
        raise TraceError(f"{p}: no such file")
    if p.is_dir():
        raise TraceError(f"{p}: is a directory, expected a trace file")
    if not os.access(p, os.R_OK):
        raise TraceError(f"{p}: permission denied")
    if p.stat().st_size == 0:
        raise TraceError(f"{p}: file is empty")
    return p


def compression_of(path: str | Path) -> str | None:
    """Codec name when the file starts with a known compression magic, else None."""
    with open(path, "rb") as f:
        head = f.read(4)
    for magic, codec in _MAGIC:
        if head.startswith(magic):
            return codec
    return None


class _Stream:
    """A raw file, decompressed when needed, that reports raw bytes consumed."""

    def __init__(self, path: Path) -> None:
        self._raw = pa.OSFile(str(path), "rb")
        codec = compression_of(path)
        try:
            self._stream = (
                pa.CompressedInputStream(self._raw, codec) if codec else self._raw
            )
        except (pa.ArrowException, ValueError) as e:
            self._raw.close()
            raise TraceError(f"{path}: cannot decompress {codec} data: {e}") from None
        self.path = path

    def read(self, n: int) -> bytes:
        try:
            return self._stream.read(n)
        except (pa.ArrowException, OSError) as e:
            raise TraceError(f"{self.path}: read failed (corrupt or truncated?): {e}") from None

    def raw_position(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._stream.close()
        if self._stream is not self._raw:
            self._raw.close()


def read_head(path: str | Path, n: int = 64 << 10) -> bytes:
    """The first ``n`` decompressed bytes, for format detection."""
    s = _Stream(Path(path))
    try:
        return s.read(n)
    finally:
        s.close()


def iter_blocks(
    path: str | Path,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Block]:
    """Yield line-aligned blocks of the (decompressed) file.

    ``progress`` is called with the number of raw (on-disk) bytes consumed since
    the previous call, so a progress bar can be sized by the file's size.
    """
    s = _Stream(Path(path))
    line_no = 1
    carry = b""
    last_pos = 0
    try:
        while True:
            chunk = s.read(block_bytes)
            if progress is not None:
                pos = s.raw_position()
                progress(pos - last_pos)
                last_pos = pos
            if not chunk:
                break
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            block, carry = data[: cut + 1], data[cut + 1 :]
            yield Block(block, line_no)
            line_no += block.count(b"\n")
        if carry.strip():
            yield Block(carry + b"\n", line_no)
    finally:
        s.close()
