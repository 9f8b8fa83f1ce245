"""``mittd bench live``: real IO, real tails — mittd vs. no mittd vs. hedging.

What runs
---------
* **Replicas**: ``--replicas`` files (default 2 × 1 GiB) on the local disk, each
  written in full first (real blocks, not fallocated holes, so reads reach the
  device) and each served by **its own daemon** (``mittd serve`` in its own
  process, Unix socket, ``direct_io = true``, the model of ``--model``). One
  daemon per replica is how replicas are deployed (one per storage node); it
  also keeps replicas uncoupled: with one daemon serving every device, the slow
  replica's reads would hold the shared worker pool and the GIL that the fast
  replica's reads need, which would penalise exactly the failover being
  measured. The price on a 2-core machine is one more Python process; the
  client, the daemons and fio all share the same cores in every mode alike.
* **Contention**: one fio process per replica writes 1 MiB random blocks with
  ``direct=1`` (libaio, ``--write-qd`` deep) into that replica's file. A
  scheduler thread switches each writer on and off with SIGCONT/SIGSTOP (fio
  runs its job as a thread, so one signal pauses the whole job): within every
  ``--period`` seconds replica *i* is under writes for ``--busy`` of the period,
  starting at ``i × period / replicas`` — the replicas are slow at different
  times, with quiet gaps in between. ``--busy 0`` turns contention off.
* **One disk or several**: with every file on one disk (the default), the
  writers share the device with every replica, so how independent the replicas
  are is the disk's business: on a virtio disk the write bursts slow reads of
  every file about alike, and there is then no fast replica to fail over to
  (the per-phase table shows it: "primary busy" and "other busy" look the
  same). ``--dir A,B`` puts replica *i* in the (*i* mod n)-th directory: one
  directory per disk makes the replicas independent, as in a deployment.
* **Client**: ``--clients`` threads (default 2: on a 2-core machine more
  threads mostly measure the CPU queue) in this process, closed loop: each
  issues a 4 KiB random read as soon as its previous one returned, through
  :class:`~mittd.daemon.client.ReplicaSet` in proxy mode (the daemon decides and
  does the O_DIRECT read). Every read picks its primary replica at random (a
  key's primary, so load is balanced in every mode); the others follow in
  ring order.
* **Model**: by default the shipped Heimdall bundle (see :func:`default_model`
  for why that one), trained on the shipped fio trace; a model trained on the
  daemon's own view of *this* workload would do better (the daemon times its
  reads in Python, under the same CPU load as everything else, so its latency
  features run higher than fio's were). ``--decision-threshold`` raises the
  P(slow) cut-off of every daemon.
* **Modes** (same client, same replicas, same contention):

  - ``mittd``: deadline = ``--deadline-us`` (default: the model's trained
    latency threshold); EBUSY → the next replica; the last one asked is never
    rejected (ReplicaSet's rule).
  - ``none``: the deadline lies beyond the model, so the daemon admits every
    read without predicting: every read is served by its primary. Same RPC
    path, no admission control.
  - ``hedge``: Dean & Barroso hedged requests: the read goes to the primary; if
    no answer came after ``--hedge-after-us`` (default: the p95 of a warm-up
    period in ``none`` mode), a duplicate goes to the next replica; first
    answer wins, the loser still costs its device IO.

  The run starts with one warm-up period (``none`` mode: daemons, caches,
  hedge threshold), then interleaves the modes in slices of exactly one
  contention period each, rotating the order every round (``mittd none hedge``,
  ``none hedge mittd``, …), so that every mode sees every contention phase
  equally often and a noisy shared machine hits all modes alike.

Reported per mode: reads, reads/s, mean and p50/p90/p95/p99/p99.9/max of the
client-observed latency (from the call into ``ReplicaSet.read`` to its return,
failovers and hedges included), failovers (EBUSY → next replica), hedges,
extra RPCs and extra device IOs (a rejected read costs an RPC but no device
IO; a hedge costs both), the share of reads served off their primary, and
p50/p99 by the contention phase at issue (the read's primary under writes,
another replica under writes, none). Each daemon's own counters (admitted,
EBUSY, prediction overruns, mean prediction time, mean device read latency and
the share of device reads over 200 µs) are scraped from its Prometheus endpoint
at the end. The result is plain data (:func:`run_live`), rendered by
:func:`render` and :func:`plot`, so ``mittd demo`` can run a short version
(e.g. ``run_live(duration_s=20, size=64 << 20)``).

Clean-up: daemons and fio run in their own sessions (a terminal's Ctrl-C
reaches only this process, which then stops them in order: clients, fio,
daemons) and with a parent-death signal (nothing outlives a killed parent);
SIGTERM is handled like Ctrl-C; the files are removed unless ``keep_files``.
"""

from __future__ import annotations

from mittd.daemon.bench.live.modes import MODES, Schedule
from mittd.daemon.bench.live.rendering import plot, render
from mittd.daemon.bench.live.run import LiveError, default_dir, default_model, run_live

__all__ = ["MODES", "LiveError", "Schedule", "default_dir", "default_model", "plot", "render",
           "run_live"]
