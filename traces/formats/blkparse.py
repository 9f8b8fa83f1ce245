"""blkparse's default text output (``blktrace -d DEV -o - | blkparse -i -``).

One event per line: ``%D %2c %8s %5T.%9t %5p %2a %3d`` then action fields::

    8,0    3        1     0.000000000   697  Q  WS 223490 + 8 [kjournald]

(device, CPU, sequence, seconds.nanoseconds since the first event, pid, action,
RWBS, then mostly ``sector + nsectors [process]``; C ends in ``[error]``). Only
Q (queued), D (dispatched to the driver) and C (completed) make rows; M/F
(back/front merge) and R (requeue) steer the pairing; every other action, the
``Input file ... added`` header and the trailing summary are skipped, as are
events without ``sector + nsectors`` (data-less flushes, SCSI pass-through).
``blkparse -f`` custom formats are not supported.

Pairing: a C, keyed by ``(device, sector, nsectors)``, takes the oldest
outstanding D of that key (FIFO): device time is what mittd predicts, so issue
time is the D. Without one (``-a queue -a complete`` captures, bio-based devices
such as dm) the oldest Q at the same start sector is used. Q is keyed by start
sector only, because merges grow a request after its first bio was queued; a
front merge moves that Q to the new start. Merged bios never get their own C
and are dropped; a requeued request is timed from its last D. Offset and size
come from the C, the op from the issue event's RWBS.

Memory holds only outstanding requests (completions lost by blktrace would
linger); requests still outstanding at the end of the file, and completions of
requests issued before the trace began, are dropped. One batch per input block
holds the requests *completed* in it, sorted by issue time: across batches,
rows come in completion order.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from mittd.traces.errors import BadLines
from mittd.traces.formats.base import Progress, ReadOptions, TraceFormat
from mittd.traces.schema import OP_OTHER, OP_READ, OP_WRITE, make_batch
from mittd.traces.source import iter_blocks

SECTOR_BYTES = 512

# Events used for pairing, by blkparse action letter.
_Q, _D, _C, _M, _F, _R = range(6)
_ACTIONS = {"Q": _Q, "D": _D, "C": _C, "M": _M, "F": _F, "R": _R}
_NEEDS_EXTENTS = frozenset({"Q", "D", "C"})  # malformed when their extents do not parse

_DEVICE = re.compile(r"\d+,\d+\Z")
_TIMESTAMP = re.compile(r"\d+\.\d{9}\Z")  # %5T.%9t, nanoseconds zero-padded
_ACTION = re.compile(r"[A-Za-z]{1,2}\Z")
_TRAILER_HEAD = re.compile(r"(CPU\d+|Total) \(.*\):\s*\Z")
_MAX_NS = 10**18  # 31 years: far beyond any trace, and safe in int64
_MAX_SECTORS = (2**63 - 1) // SECTOR_BYTES  # sectors whose byte offset fits in int64


def op_code(rwbs: str) -> int:
    """Op code from blkparse's RWBS field.

    The optional leading ``F`` is a pre-flush; the next letter is the operation:
    ``R`` read, ``W`` write, ``D`` discard, ``N`` none (flush only), ``Z?`` zone
    management (``ZA`` zone append writes data; resets, opens, closes, finishes
    do not). Later letters are flags (``F`` FUA, ``A`` readahead, ``S`` sync,
    ``M`` metadata, ``B`` barrier), so ``WFS`` is a write and ``ZR`` not a read.
    """
    op = rwbs[1:] if rwbs.startswith("F") else rwbs
    if op.startswith("R"):
        return OP_READ
    if op.startswith(("W", "ZA")):
        return OP_WRITE
    return OP_OTHER


def _is_device(field: str) -> bool:
    return _DEVICE.match(field) is not None


def looks_like_event(line: str) -> bool:
    """True for a line in blkparse's default per-event format."""
    f = line.split(None, 7)
    return (
        len(f) >= 7
        and _is_device(f[0])
        and f[1].isdigit()
        and f[2].isdigit()
        and _TIMESTAMP.match(f[3]) is not None
        and f[4].isdigit()
        and _ACTION.match(f[5]) is not None
        and f[6].isalpha()
    )


def _diagnose(f: list[str]) -> str | None:
    """Why a Q/D/C line failed the fast parse; None when it is a valid event
    that carries no ``sector + nsectors`` (or not an event line at all)."""
    if not _is_device(f[0]):
        return None
    if len(f) < 7:
        return "truncated event line: no RWBS field"
    if len(f) >= 8 and f[7][:1] in ("[", "("):
        return None  # no data (e.g. flush) or a pass-through payload: nothing to pair
    if len(f) >= 9 and f[7].isdecimal() and f[8][:1] in ("[", "("):
        return None  # pass-through byte count, or completion of a request without data
    if _TIMESTAMP.match(f[3]) is None or int(f[3].replace(".", "")) >= _MAX_NS:
        return f"bad timestamp {f[3]!r}"
    if len(f) < 8:
        return "missing 'sector + nsectors'"
    if not f[7].isdecimal():
        return f"bad sector {f[7]!r}"
    if int(f[7]) >= _MAX_SECTORS:
        return f"sector {f[7]} out of range (its byte offset overflows int64)"
    if len(f) < 9 or f[8] != "+":
        return "expected 'sector + nsectors' after the RWBS field"
    if len(f) < 10:
        return "missing nsectors after '+'"
    if not f[9].isdecimal() or int(f[9]) == 0:
        return f"bad nsectors {f[9]!r}"
    if int(f[9]) >= _MAX_SECTORS:
        return f"nsectors {f[9]} out of range (its byte size overflows int64)"
    return "unparseable event"  # pragma: no cover - every failure is named above


class _Pairer:
    """Streaming Q/D/C pairing state; ``feed`` one block at a time.

    ``queued``: (device, start sector) -> (time, nsectors, rwbs) of Q events.
    ``dispatched``: (device, sector, nsectors) -> (time, rwbs) of D events.
    A second entry under a key already present waits in the ``*_more`` deques,
    so a key's entries are consumed first in, first out.
    """

    def __init__(self) -> None:
        self.queued: dict[tuple[int, int], tuple[int, int, str]] = {}
        self.queued_more: dict[tuple[int, int], deque] = {}
        self.dispatched: dict[tuple[int, int, int], tuple[int, str]] = {}
        self.dispatched_more: dict[tuple[int, int, int], deque] = {}
        self.devices: dict[str, int] = {}  # "maj,min" -> index into device_names
        self.device_names: list[str] = []

    @property
    def outstanding(self) -> int:
        return (
            len(self.queued) + sum(map(len, self.queued_more.values()))
            + len(self.dispatched) + sum(map(len, self.dispatched_more.values()))
        )

    def _device(self, field: str) -> int:
        """Index of a device field; -1 when it is not ``major,minor``."""
        if not _is_device(field):
            return -1
        self.devices[field] = idx = len(self.device_names)
        self.device_names.append(field)
        return idx

    def feed(self, text: str, first_line: int, bad: BadLines) -> tuple[list, ...]:
        """Parse one block of whole lines; return the requests it completed as
        columns (issue ns, complete ns, rwbs, device index, sector, nsectors)."""
        out_ti: list[int] = []
        out_tc: list[int] = []
        out_rw: list[str] = []
        out_dev: list[int] = []
        out_sec: list[int] = []
        out_n: list[int] = []
        queued, queued_more = self.queued, self.queued_more
        dispatched, dispatched_more = self.dispatched, self.dispatched_more
        devices = self.devices
        actions = _ACTIONS
        max_ns = _MAX_NS

        for idx, line in enumerate(text.split("\n")):
            f = line.split(None, 10)
            if len(f) < 10:
                # P/U/X/m lines, summaries, blank lines, events without extents.
                if len(f) > 5 and f[5] in _NEEDS_EXTENTS:
                    reason = _diagnose(f)
                    if reason is not None:
                        bad.add(first_line + idx, line, reason)
                elif 0 < len(f) < 6 and _is_device(f[0]):
                    bad.add(first_line + idx, line, "truncated event line")
                continue
            kind = actions.get(f[5])
            if kind is None:
                continue  # A, G, I, S, T, X, B, m ... (or a summary line)
            dev = devices.get(f[0])
            if dev is None:
                dev = self._device(f[0])
            if dev < 0:
                continue  # not an event line
            try:
                ts = f[3]  # seconds.nanoseconds, always 9 digits: parsed exactly as ns
                if f[8] != "+" or ts[-10:-9] != ".":
                    raise ValueError
                sec = int(f[7])
                n = int(f[9])
                t = int(ts.replace(".", ""))
                if (sec < 0 or n <= 0 or not 0 <= t < max_ns
                        or sec >= _MAX_SECTORS or n >= _MAX_SECTORS):
                    raise ValueError
            except ValueError:
                if kind <= _C:
                    reason = _diagnose(f)
                    if reason is not None:
                        bad.add(first_line + idx, line, reason)
                continue

            if kind == _C:
                key3 = (dev, sec, n)
                hit = _take(dispatched, dispatched_more, key3)
                if hit is not None:
                    ti, rw = hit
                else:
                    q = _take(queued, queued_more, (dev, sec))
                    if q is None:
                        continue  # issued before the trace started
                    ti, _, rw = q
                out_ti.append(ti)
                out_tc.append(t)
                out_rw.append(rw)
                out_dev.append(dev)
                out_sec.append(sec)
                out_n.append(n)
            elif kind == _Q:
                _put(queued, queued_more, (dev, sec), (t, n, f[6]))
            elif kind == _D:
                # The request's first bio was queued at its start sector: its Q
                # is superseded by this D (and would otherwise never be removed).
                _take(queued, queued_more, (dev, sec))
                _put(dispatched, dispatched_more, (dev, sec, n), (t, f[6]))
            elif kind == _R:
                _take(dispatched, dispatched_more, (dev, sec, n))
            else:  # back (M) or front (F) merge: this bio joins another request
                key2 = (dev, sec)
                _take(queued, queued_more, key2)
                if kind == _F:
                    # The request it joined now starts here: move that Q along.
                    target = _take(queued, queued_more, (dev, sec + n))
                    if target is not None:
                        _put(queued, queued_more, key2, (target[0], target[1] + n, target[2]))
        return out_ti, out_tc, out_rw, out_dev, out_sec, out_n


def _put(first: dict, more: dict, key: tuple, value: tuple) -> None:
    """Append to the FIFO of requests sharing ``key``: its head lives in ``first``
    (the common case, one request per key), later ones in a deque in ``more``."""
    if first.setdefault(key, value) is not value:
        more.setdefault(key, deque()).append(value)


def _take(first: dict, more: dict, key: tuple) -> tuple | None:
    """Pop the oldest request with ``key`` (None when there is none)."""
    head = first.pop(key, None)
    if head is not None and more:
        rest = more.get(key)
        if rest:
            first[key] = rest.popleft()
            if not rest:
                del more[key]
    return head


def _to_batch(
    cols: tuple[list, ...], device_names: list[str], options: ReadOptions
) -> pa.RecordBatch:
    """Canonical batch of completed requests, sorted by issue time."""
    ti_ns, tc_ns, rws, devs, secs, ns = cols
    issue_ns = np.asarray(ti_ns, dtype=np.int64)
    done_ns = np.asarray(tc_ns, dtype=np.int64)
    codes: dict[str, int] = {}
    ops = np.fromiter(
        (codes[r] if r in codes else codes.setdefault(r, op_code(r)) for r in rws),
        dtype=np.int8, count=len(rws),
    )
    order = np.argsort(issue_ns, kind="stable")
    issue_ns = issue_ns[order]
    device: str | pa.Array
    if options.device is not None:
        device = options.device
    elif len(device_names) == 1:
        device = device_names[0]
    else:
        idx = np.asarray(devs, dtype=np.int32)[order]
        device = pa.DictionaryArray.from_arrays(
            pa.array(idx), pa.array(device_names, type=pa.string())
        ).cast(pa.string())
    return make_batch(
        issue_ns // 1000,
        (done_ns[order] - issue_ns) / 1000.0,
        ops[order],
        np.asarray(secs, dtype=np.int64)[order] * SECTOR_BYTES,
        np.asarray(ns, dtype=np.int64)[order] * SECTOR_BYTES,
        device,
    )


class BlkparseFormat(TraceFormat):
    name = "blkparse"
    title = "blkparse text output"
    has_latency = True
    example = "8,0    3        1     0.000000000   697  Q  WS 223490 + 8 [kjournald]"

    def sniff(self, lines: Sequence[str]) -> bool:
        """Most lines before blkparse's trailing summary are event lines."""
        events = considered = 0
        for line in lines:
            text = line.strip()
            if not text or text.startswith("Input file "):
                continue
            if _TRAILER_HEAD.match(text):
                break
            considered += 1
            events += looks_like_event(text)
        return events > 0 and events >= 0.8 * considered

    def read(
        self, path: Path, options: ReadOptions, bad: BadLines, progress: Progress = None
    ) -> Iterator[pa.RecordBatch]:
        pairer = _Pairer()
        for block in iter_blocks(path, options.block_bytes, progress):
            text = block.data.decode("utf-8", errors="replace")
            cols = pairer.feed(text, block.first_line, bad)
            if cols[0]:
                yield _to_batch(cols, pairer.device_names, options)
