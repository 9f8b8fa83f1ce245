"""``mittd bench live``: real IO, real tails — mittd vs. no mittd vs. hedging vs. both.

What runs
---------
* **Path** (``--path``): by default the decision runs **in the client process**
  (``inproc``), as Heimdall's client-level integration does: the client threads
  read through :class:`~mittd.daemon.replicas.LocalReplicaSet`, admission by one
  :class:`~mittd.daemon.embedded.Embedded` holding a device alias per replica
  (``r0``, ``r1``, …; the model loaded once per replica, each with its own
  tracker). A mittd read costs one admit and one complete call around a
  ``pread``; a rejection costs one prediction and no device IO. ``grpc`` starts
  one ``mittd serve`` daemon per replica (own process, Unix socket, proxy reads
  through :class:`~mittd.daemon.client.ReplicaSet`), as before: every read is an
  RPC, 0.7-0.9 ms of Python gRPC on a 2-core machine — 7-9× a 4 KiB read, which
  is why the in-process path is the default (DESIGN principle 6).
* **Replicas**: ``--replicas`` files (default 2 × 1 GiB), each written in full
  first (real blocks, not fallocated holes, so reads reach the device).
  ``--dir A,B`` puts replica *i* in the (*i* mod n)-th directory: one directory
  per disk makes the replicas independent, as in a deployment. Reads are
  ``O_DIRECT`` wherever the file system takes it. A **tmpfs** directory
  (``/dev/shm``) is accepted on both paths: its reads are RAM copies of a few
  µs — buffered where tmpfs refuses ``O_DIRECT`` (Linux before 6.6; the gRPC
  daemons then get ``direct_io = false`` for that replica), through
  ``O_DIRECT`` where it takes it, a memory copy all the same; the output says
  which replica is RAM. ``--target PATH`` (repeatable) uses
  existing files or block devices as they are instead: never filled, never
  removed, and never written unless ``--write-targets`` (contention writes would
  destroy their data); a block device needs ``--allow-block-device``.
* **Contention**: for every replica with a ``--busy`` share > 0, one fio process
  writes 1 MiB random blocks into that replica's file (libaio, ``--write-qd``
  deep, ``direct=1`` where the file system takes it: not on tmpfs before Linux
  6.6, where fio's direct IO fails). A scheduler
  thread switches each writer on and off with SIGCONT/SIGSTOP: within every
  ``--period`` seconds replica *i* is under writes for its busy share of the
  period, starting at ``i × period / replicas``. ``--busy`` takes one fraction
  for all or one per replica: ``--busy 0.5,0`` gives replica 1 no writer (a RAM
  replica normally gets none).
* **One disk, or disk + RAM**: with every file on one disk (the default), the
  writers share the device with every replica, so a write burst slows reads of
  every file about alike and there is no fast replica to fail over to (the
  per-phase table shows it: "primary busy" and "other busy" look the same) —
  the honest limit of a one-disk machine. The only truly independent pair on
  such a machine is the disk and RAM: ``--dir out,/dev/shm --busy 0.5,0`` puts
  replica 1 in RAM. That run shows the mechanism (reject the disk read while the
  disk is under writes, serve it from the other replica at once) and its
  overhead against a replica that is never slow; it is not a second disk (a
  second SSD's reads would cost ~100 µs, not ~5).
* **Clients**: ``--clients`` threads in this process. Closed loop (default, 2
  threads: on a 2-core machine more threads mostly measure the CPU queue): each
  issues a 4 KiB random read as soon as its previous one returned.
  Trace-driven (``--trace T``, any trace mittd reads; 4 threads): the reads of
  the trace (its read ops only) at its arrival times, open loop, the trace
  repeating, ``--trace-speed`` times faster; offsets modulo the replica size,
  aligned to 4 KiB, lengths rounded up to 4 KiB (at most 1 MiB). A read whose
  time has come while every thread is busy goes at once, and its lag is counted.
  Every read picks its primary replica at random (a key's primary, so load is
  balanced in every mode); the others follow in ring order.
* **Model**: by default the shipped ``precise_linear_hist_node95`` bundle at
  P(slow) > 0.97, the demo's operating point (chosen offline on the shipped
  trace's validation window); the shipped Heimdall bundle, the default of the
  gRPC-only check, misfires on the client's own view of this disk (see
  :func:`default_model` for the calibration figures) — the fixed operating
  point of a run without a validation window; ``--decision-threshold``,
  ``--max-reject-share`` (the cap on the share of a replica's decisions
  rejected) and ``--probe-after`` pass to the admission (or to each daemon).
  The run records the bundle and the policy it used.
* **Modes** (same clients, same replicas, same contention):

  - ``none``: every read served by its primary; in-process nothing is asked
    (no admission at all), on gRPC the deadline lies beyond the model (admitted
    without predicting).
  - ``mittd``: deadline = ``--deadline-us`` (default: the model's trained
    latency threshold); EBUSY → the next replica at once; the last one asked is
    never rejected.
  - ``hedge``: Dean & Barroso hedged requests: the read goes to the primary; if
    no answer came after ``--hedge-after-us`` (default: the p95 of a warm-up
    period in ``none`` mode), a duplicate goes to the next replica; first
    answer wins, the loser still costs its device IO. No admission.
  - ``both``: mittd + hedging: rejections as in ``mittd``, and an admitted read
    still unanswered after the hedge delay is duplicated (LinnOS's safety net
    for false admits).

  The run starts with one warm-up period (``none`` mode: caches, the hedge
  delay), then the validation window (below), then interleaves the modes in
  slices of exactly one contention period each, rotating the order every round
  (``none mittd hedge both``, ``mittd hedge both none``, …), so that every mode
  sees every contention phase equally often and a noisy shared machine hits all
  modes alike.

* **Validation window** (``--validation-rounds K``, default 2 in-process; 0 on
  gRPC, which has none): the project's rule is to choose every threshold, cutoff
  and policy on a validation window, never on the test part, so mittd's
  operating point is chosen live, on slices of its own between the warm-up and
  the test slices (:mod:`~mittd.daemon.bench.live.validation`). Candidates:
  ``off`` (no admission: reads like ``none``) and rejection at P(slow) cutoffs
  0.5, 0.8, 0.9, 0.97, 0.99 (``--validation-cutoffs``; ``--decision-threshold``
  joins them) at the run's reject cap, the two strictest also with the cap
  lifted (1.0): at most 8, one :class:`~mittd.daemon.embedded.Embedded` each
  (own trackers), all built before the clients start. Each round reads one
  whole contention period per candidate, the order rotated like the test
  slices. **Choice rule**: the candidate with the lowest validation p99 wins if
  that p99 is more than 3 % below ``off``'s; ties go to the fewer failovers,
  then to the one listed first; one with under 100 reads cannot win; otherwise
  mittd stays **off** for the test part ("on the validation window no cutoff
  beat reading without mittd: mittd stays off on this setup"): the ``mittd``
  mode then reads with no admission (like ``none``) and ``both`` hedges only,
  and the tables say so. The choice is used unchanged (its own admission, its
  tracker state carried on) in ``mittd`` and ``both``. The validation reads
  are counted apart (the validation table: reads, p50, p99, p99.9, failover %
  and rejections per candidate) and never enter the test rows. With 0 rounds
  the fixed operating point below is used, as before.

Reported (the validation table first, when there is one) per mode: reads,
reads/s, mean and p50/p90/p95/p99/p99.9/p99.99/max of the client-observed
latency (from the call into the replica set's ``read`` to its return, failovers
and hedges included; p99.99 shown from 10,000 reads on), failovers (EBUSY →
next replica), hedges, extra device IOs (every device read beyond one per read:
a hedge costs one, a rejection none) and, on gRPC, extra RPCs, the share served
off the primary; p50/p99 by the contention phase at issue (the read's primary
under writes, another replica under writes, none); the CPU seconds of this
process while the mode ran (and of the daemons on gRPC; fio's are the same in
every mode and left out), per read; the decision's cost: the model's featurise
+ predict time per decision (the admission's own ``predict_ns`` histogram, per
slice) and the admit + complete calls as the client timed them (wall time, so
GIL waits behind the other threads are in it), per call and per read; with
``--trace``, the mean lag and the share of reads issued over 1 ms late. The
issue's targets for the kind of run (disk + RAM, or replicas on one disk) are
checked and said met or not. The result is plain data (:func:`run_live`),
rendered by :func:`render` and :func:`plot` (CDF with a log x axis, and the
tail), so ``mittd demo`` runs a short version.

Clean-up: fio and the daemons run in their own sessions (a terminal's Ctrl-C
reaches only this process, which then stops them in order: clients, fio,
admission or daemons) and with a parent-death signal (nothing outlives a
killed parent); SIGTERM is handled like Ctrl-C; the files the run made are
removed unless ``keep_files``; ``--target`` paths are never touched.
"""

from __future__ import annotations

from mittd.daemon.bench.live.modes import MODES, Schedule
from mittd.daemon.bench.live.rendering import plot, render
from mittd.daemon.bench.live.run import (
    PATHS,
    LiveError,
    default_dir,
    default_model,
    parse_busy,
    run_live,
)

__all__ = ["MODES", "PATHS", "LiveError", "Schedule", "default_dir", "default_model",
           "parse_busy", "plot", "render", "run_live"]
