"""Seeded fio workloads for ``mittd bench tailcut``: a wide space nobody tuned on.

Each workload is a foreground reader and one or two concurrent background jobs,
drawn from the seed (the same seed gives the same workloads):

- reader: random or sequential reads, 4 KiB to 256 KiB, queue depth 1 to 32,
  rate-limited (so a 20 s recording stays a few hundred thousand IOs and the
  device is loaded, not saturated, as a serving node is);
- background, from: a bursty writer (sequential or random writes of 64 KiB to
  1 MiB in bursts separated by think time: the contention that puts reads in the
  tail), a steady rate-limited random writer, a mixed reader/writer, a second
  reader of another size;
- the writers' average rate is set from a target read share drawn in [50 %,
  100 %] (the share measured on the recording is reported beside it).

Every workload is recorded twice (one recording the other's replica). The two
recordings differ in fio's random offsets and in the phase of every bursty job
(a start delay drawn per recording), so their slow periods are independent, as
two replicas on two nodes would be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Workload", "generate"]

READ_SIZES = (4, 4, 4, 8, 16, 16, 64, 128, 256)  # KiB, small reads more likely
WRITE_SIZES = (64, 128, 256, 1024)  # KiB, for bursts
DEPTHS = (1, 2, 4, 8, 16, 32)
MAX_READ_MBPS = 120.0  # the reader's rate limit keeps its bandwidth below this


@dataclass(frozen=True)
class Workload:
    """One generated workload: fio jobs (options as strings) and what was drawn."""

    name: str
    seed: int
    jobs: tuple[dict[str, str], ...]
    read_share_target: float
    summary: str
    bursty: tuple[int, ...] = ()  # indices of jobs whose phase each recording redraws
    params: dict[str, Any] = field(default_factory=dict)

    def jobs_for_recording(self, recording: int) -> list[dict[str, str]]:
        """The jobs of one recording: bursty jobs start at a phase drawn for it."""
        rng = np.random.default_rng([self.seed, recording, 7])
        out = []
        for i, job in enumerate(self.jobs):
            j = dict(job)
            if i in self.bursty:
                cycle = float(self.params.get("cycle_s", 1.0))
                j["startdelay"] = f"{int(rng.uniform(0, cycle) * 1000)}ms"
            out.append(j)
        return out


def _reader(rng: np.random.Generator) -> tuple[dict[str, str], float, str]:
    bs = int(rng.choice(READ_SIZES))
    qd = int(rng.choice(DEPTHS))
    seq = rng.random() < 0.25
    iops = float(rng.uniform(800, 5000))
    iops = min(iops, MAX_READ_MBPS * 1024 / bs)
    job = {"rw": "read" if seq else "randread", "bs": f"{bs}k", "iodepth": str(qd),
           "rate_iops": str(max(50, int(iops)))}
    return job, float(job["rate_iops"]), f"{'seq' if seq else 'rand'} {bs}k reads QD{qd} " \
        f"@{int(iops)}/s"


def _bursty(rng: np.random.Generator, avg_iops: float) -> tuple[dict[str, str], str, float]:
    bs = int(rng.choice(WRITE_SIZES))
    qd = int(rng.choice((1, 2, 4, 8)))
    peak = float(rng.uniform(100, 400)) * (1024 / bs if bs > 256 else 1.0)
    peak = max(peak, avg_iops * 1.5)
    think_s = float(rng.uniform(0.3, 3.0))
    # avg = B / (B / peak + think)  =>  B = avg * think / (1 - avg / peak)
    blocks = max(4, int(avg_iops * think_s / max(1e-3, 1.0 - avg_iops / peak)))
    burst_s = blocks / peak
    seq = rng.random() < 0.5
    job = {"rw": "write" if seq else "randwrite", "bs": f"{bs}k", "iodepth": str(qd),
           "rate_iops": str(int(peak)), "thinktime": f"{int(think_s * 1e6)}",
           "thinktime_blocks": str(blocks)}
    return job, (f"bursty {'seq' if seq else 'rand'} {bs}k writes QD{qd}: {blocks} at "
                 f"{int(peak)}/s every {think_s + burst_s:.1f} s"), think_s + burst_s


def _steady_writer(rng: np.random.Generator, avg_iops: float) -> tuple[dict[str, str], str]:
    bs = int(rng.choice((4, 16, 64)))
    qd = int(rng.choice((1, 4, 8)))
    job = {"rw": "randwrite", "bs": f"{bs}k", "iodepth": str(qd),
           "rate_iops": str(max(10, int(avg_iops)))}
    return job, f"steady rand {bs}k writes QD{qd} @{int(avg_iops)}/s"


def _mixed(rng: np.random.Generator, avg_write_iops: float) -> tuple[dict[str, str], str]:
    mix = int(rng.uniform(50, 90))
    total = avg_write_iops / max(0.1, 1.0 - mix / 100.0)
    bs = int(rng.choice((4, 8, 16, 64)))
    qd = int(rng.choice((1, 2, 4, 8)))
    think = int(rng.uniform(0, 2000))  # µs after each IO: a client that thinks
    job = {"rw": "randrw", "rwmixread": str(mix), "bs": f"{bs}k", "iodepth": str(qd),
           "rate_iops": str(max(10, int(total))), "thinktime": str(think)}
    return job, f"mixed rand {bs}k {mix}% reads QD{qd} @{int(total)}/s, think {think} µs"


def _second_reader(rng: np.random.Generator) -> tuple[dict[str, str], str]:
    bs = int(rng.choice((16, 64, 128, 256)))
    qd = int(rng.choice((1, 4, 16)))
    iops = min(float(rng.uniform(100, 800)), MAX_READ_MBPS * 512 / bs)
    job = {"rw": "randread", "bs": f"{bs}k", "iodepth": str(qd), "rate_iops": str(int(iops))}
    return job, f"second reader rand {bs}k QD{qd} @{int(iops)}/s"


def generate(seed: int, k: int) -> list[Workload]:
    """``k`` workloads from ``seed`` (deterministic: same seed, same workloads)."""
    if k < 1:
        raise ValueError(f"--workloads must be >= 1, got {k}")
    out = []
    for i in range(k):
        rng = np.random.default_rng([seed, i])
        reader, r_iops, r_text = _reader(rng)
        share = float(rng.uniform(0.5, 1.0))
        write_iops = r_iops * (1.0 - share) / share
        jobs, texts, bursty = [reader], [r_text], []
        params: dict[str, Any] = {"read_share_target": share}
        kinds = ["bursty", "steady", "mixed"]
        n_bg = 1 if rng.random() < 0.5 else 2
        chosen = list(rng.choice(kinds, size=n_bg, replace=False))
        if share > 0.95:  # hardly any writes: the contention is another reader
            chosen = ["second", *chosen[:1]]
        parts = max(1, sum(c != "second" for c in chosen))
        for c in chosen:
            if c == "bursty":
                job, text, cycle = _bursty(rng, write_iops / parts)
                bursty.append(len(jobs))
                params["cycle_s"] = cycle
            elif c == "steady":
                job, text = _steady_writer(rng, write_iops / parts)
            elif c == "mixed":
                job, text = _mixed(rng, write_iops / parts)
            else:
                job, text = _second_reader(rng)
            jobs.append(job)
            texts.append(text)
        out.append(Workload(f"w{seed}-{i}", seed * 1000 + i, tuple(jobs), share,
                            "; ".join(texts), tuple(bursty), params))
    return out
