"""Proxy-mode device reads: the IO mittd performs itself for ``Mittd.Read``.

Reads bypass the page cache (``O_DIRECT``) by default, because the latency the
daemon measures here feeds the predictor's history: a cache hit would teach it
that the device is fast. ``O_DIRECT`` wants the file offset, the length and the
buffer address aligned to the logical block size, while clients may ask for any
byte range; so the reader reads the aligned superset of the range into a
page-aligned buffer (anonymous ``mmap`` memory is page aligned) and slices the
requested bytes out of it.

Proxy mode is read-only in this version: ``writable`` is accepted so a device's
config can be passed through unchanged, but the descriptor is always opened
``O_RDONLY`` and no write method exists (a proxied write would need the same
admission and durability story as the client's own, which is future work).

Thread safety: ``os.preadv`` takes its own offset, so one descriptor serves all
threads; each thread reads into its own buffer (``threading.local``), grown on
demand, so concurrent reads never share memory.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import threading
import time
from pathlib import Path

__all__ = ["DeviceReader", "ProxyError", "device_size"]


class ProxyError(Exception):
    """The device cannot be used for proxy reads (the server answers FAILED_PRECONDITION)."""


def device_size(path: str | Path) -> int:
    """Size in bytes of a regular file or block device (``st_size`` is 0 for the latter)."""
    st = os.stat(path)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


class DeviceReader:
    """Reads byte ranges of one device; ``read`` returns ``(data, latency_us)``."""

    def __init__(self, path: str | Path, alignment: int = 4096, direct_io: bool = True,
                 writable: bool = False) -> None:
        if alignment < 1 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment!r}")
        self.path = Path(path)
        self.alignment = alignment
        self.direct_io = direct_io
        self.writable = writable  # informational only: proxy mode never writes
        flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECT if direct_io else 0)
        try:
            self._fd = os.open(self.path, flags)
        except OSError as e:
            if direct_io and e.errno == errno.EINVAL:
                raise ProxyError(f"{self.path}: the filesystem refuses O_DIRECT; set "
                                 "direct_io = false for this device (reads will then "
                                 "go through the page cache)") from None
            raise ProxyError(f"{self.path}: cannot open for reading: "
                             f"{e.strerror or e}") from None
        try:
            st = os.fstat(self._fd)
            self.size = (st.st_size if stat.S_ISREG(st.st_mode)
                         else os.lseek(self._fd, 0, os.SEEK_END))
        except OSError:
            os.close(self._fd)
            raise
        self._local = threading.local()
        self._closed = False

    def _buffer(self, n: int) -> mmap.mmap:
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < n:
            if buf is not None:
                buf.close()
            size = -(-n // mmap.PAGESIZE) * mmap.PAGESIZE
            buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            self._local.buf = buf
        return buf

    def read(self, offset: int, length: int) -> tuple[bytes, float]:
        """Read ``length`` bytes at ``offset`` (any alignment) inside the device.

        Raises ``ValueError`` for a range outside the device, ``OSError`` (with the
        OS errno) when the read itself fails or comes back short.
        """
        if self._closed:
            raise ValueError(f"{self.path}: reader is closed")
        if offset < 0 or length <= 0:
            raise ValueError(f"offset must be >= 0 and length > 0, got {offset}, {length}")
        end = offset + length
        if end > self.size:
            raise ValueError(f"range [{offset}, {end}) is beyond the device size {self.size}")
        a = self.alignment
        start = offset & ~(a - 1)
        stop = -(-end // a) * a  # may pass EOF when the size is unaligned: read comes back short
        n = stop - start
        buf = self._buffer(n)
        with memoryview(buf) as mv:
            t0 = time.perf_counter_ns()
            got = os.preadv(self._fd, [mv[:n]], start)
            latency_us = (time.perf_counter_ns() - t0) / 1000.0
            if got < end - start:
                raise OSError(errno.EIO, f"{self.path}: short read ({got} of {end - start} "
                                         f"bytes at {start})")
            data = bytes(mv[offset - start:end - start])
        return data, latency_us

    def close(self) -> None:
        """Close the descriptor; later reads raise ``ValueError``. Idempotent."""
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def __enter__(self) -> DeviceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
