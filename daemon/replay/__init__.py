"""Offline replay: what the daemon would have done on a recorded trace (``mittd replay``).

The replayer drives **the daemon's own admission core** (``AdmissionCore`` and
``DeviceState`` from ``mittd.daemon.admission``) over a labelled block trace on a
virtual clock, and compares the read latencies the application would have seen
under several policies. Nothing here re-implements featurising or deciding.

Semantics
---------
*Virtual clock.* The primary trace is walked in issue order (stable sort on
``ts_issue_us``); ``now_us`` of every call is the IO's own ``ts_issue_us``. The
prediction takes no virtual time, and the core's prediction budget is unlimited
(``predict_budget_us=inf``): wall-clock overruns on the replaying machine must not
change the outcome.

*What is decided.* Reads only, as in MittOS: a rejected read can be served by
another replica, a write must reach every replica anyway. Every read is
``admit``-ed with ``deadline_us`` = the SLO. Writes (and ``other`` ops) are
issued into the tracker through the same ``admit`` with an infinite deadline
(beyond every trained threshold, so the core admits them without a prediction,
and counts them under ``beyond_model``): the pending state is what the live
daemon would see.

*Completions.* An admitted IO with latency ``L`` completes at ``ts + ceil(L)``
(``mittd.predictor.tracker.completion_times_us``: never, for an unknown latency
or one beyond the tracker timeout). Completions are fed to ``complete`` in order
of (completion time, issue order) before any later issue at a time ``>=`` theirs
— the tracker's offline rule. A rejected read is never issued, so it never
becomes pending. Consequence, checked by the tests: with a policy that admits
everything, the features the core computes equal ``featuriser.encode_trace`` of
the trace row for row.

*Replicas and failover.* A read rejected with EBUSY fails over to the next
replica; each failover adds ``failover_cost_us`` (default 10 µs: one fast reject
plus a re-send on a LAN). Replica ``j`` (1-based) therefore receives the read at
``t + j·cost``, and its latency there is the latency, in replica ``j``'s own
trace, of the read issued nearest at or after the same *relative* time (time
since each trace's first IO; LinnOS's method). A replica trace shorter than the
primary is used circularly. The replicas' latencies are what they recorded:
extra load from failed-over reads is not modelled.

- With no ``--replica``, the one replica is the primary trace itself shifted by
  half its duration, circularly: relative time ``u`` on the primary maps to
  ``(u + D/2) mod D`` on the replica (``D`` = last − first issue time + 1 µs), so
  a slow period of the primary meets an unrelated period of its "twin".
- With several replicas, every replica but the last also decides: it has its own
  ``DeviceState`` in the same core (same model, engine shared) whose tracker is
  fed, lazily up to each failover's arrival time, with that replica trace's own
  IOs (all admitted: they are the replica's background load, issued with an
  infinite deadline) and with the failed-over reads it admits (completing at
  arrival + ceil(latency)). Own IOs issued at the arrival time come first.
- The last replica never rejects (the client would otherwise have nowhere to go).

*Probes.* As in the daemon (``server.probe_after``, default 32): after that many
predicted rejections in a row on a replica, the next one is admitted as a probe,
so a model fed by latency history cannot lock itself into rejecting everything
(``--probe-after 0`` turns it off).

*Policies.*

- ``baseline``: no rejection; every read gets its recorded latency.
- one row per model (``--model``; named by the bundle's file stem): the core
  decides as above; latency = primary latency if admitted, else
  ``j·cost + latency of replica j`` where ``j`` is the replica that admitted it.
- ``hedge`` (Dean & Barroso): no rejection; a duplicate goes to the first replica
  when the primary has not answered after ``h`` = the p95 of the primary's read
  latencies; latency = ``min(L, h + replica latency at u + h)``; one extra IO per
  read with ``L > h``.
- ``random``: rejects each read at each non-last replica (the primary included)
  independently with probability ``r`` = the reject rate of the best model row
  (lowest p99; the oracle's reject rate when no model ran); seeded.
- ``oracle``: rejects exactly the reads whose primary latency exceeds the SLO
  (and, with several replicas, an intermediate replica rejects exactly when its
  own latency exceeds the SLO).

Metrics are over reads whose primary latency is known; see
``mittd.daemon.replay.report``.
"""


from mittd.daemon.replay.core import (
    DEFAULT_FAILOVER_COST_US,
    DEFAULT_PROBE_AFTER,
    Model,
    PolicyResult,
    load_model,
    replay_model,
    replica_latencies,
    resolve_slo,
    split_operating_point,
)
from mittd.daemon.replay.policies import (
    POLICIES,
    Replay,
    best_model,
    hedge_delay_us,
    parse_policies,
    replay_baseline,
    replay_hedge,
    replay_oracle,
    replay_random,
    run_replay,
    unique_names,
)
from mittd.daemon.replay.traces import (
    ReplayError,
    ReplayTrace,
    Replica,
    load_trace,
    self_replica,
    trace_from_table,
    trace_replica,
)

__all__ = [
    "DEFAULT_FAILOVER_COST_US",
    "DEFAULT_PROBE_AFTER",
    "POLICIES",
    "Model",
    "PolicyResult",
    "Replay",
    "ReplayError",
    "ReplayTrace",
    "Replica",
    "best_model",
    "hedge_delay_us",
    "load_model",
    "load_trace",
    "parse_policies",
    "replay_baseline",
    "replay_hedge",
    "replay_model",
    "replay_oracle",
    "replay_random",
    "replica_latencies",
    "resolve_slo",
    "run_replay",
    "self_replica",
    "split_operating_point",
    "trace_from_table",
    "trace_replica",
    "unique_names",
]
