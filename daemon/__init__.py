"""The mittd daemon, and the client API a storage application calls it with.

In the storage server's own process (no RPC: ``mittd.daemon.embedded``, with
failover over local replicas in ``mittd.daemon.replicas``)::

    from mittd.daemon import Embedded, LocalReplica, LocalReplicaSet

    adm = Embedded.from_config("/etc/mittd/mittd.toml")
    rs = LocalReplicaSet([LocalReplica(p0, "nvme0"), LocalReplica(p1, "nvme1")], adm)
    data = rs.read(offset, length, deadline_us=500).data

Across a socket, the client library (``mittd.daemon.client``)::

    from mittd.daemon import Client, MittdBusy, ReplicaSet

    with Client("unix:/run/mittd/mittd.sock") as c:
        try:
            c.admit("nvme0", offset, length, deadline_us=500)
        except MittdBusy:        # OSError(EBUSY): predicted to miss its deadline
            ...                  # retry on another replica

    with ReplicaSet([(Client(a), "nvme0"), (Client(b), "nvme0")]) as rs:
        data = rs.read(offset, length, deadline_us=500).data  # EBUSY -> next replica

They are imported on first use, so ``import mittd.daemon.admission`` (the offline
replayer's path) does not load grpc.

The service itself: ``admission`` (the core every path shares), ``devices`` (the
one servability check), ``service`` (gRPC), ``proxy`` (O_DIRECT reads),
``serve`` (process lifecycle: HUP, TERM, systemd), ``config`` and ``check``,
``metrics`` and ``histogram``, ``notify``, ``cli`` (the ``mittd`` command). The
tools built on it live below: ``replay/`` (the offline replayer) and ``bench/``
(benchmarks, the live harness, the demo).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mittd.daemon.client import (
        Admission,
        AdmitStream,
        Client,
        MittdBusy,
        MittdUnavailable,
        ReadResult,
        ReplicaSet,
        columns_batch,
        daemon_healthy,
    )
    from mittd.daemon.embedded import Embedded
    from mittd.daemon.replicas import LocalReplica, LocalReplicaSet
    from mittd.proto import MAX_DEADLINE_US

_EXPORTS = {
    "Admission": "mittd.daemon.client",
    "AdmitStream": "mittd.daemon.client",
    "Client": "mittd.daemon.client",
    "MittdBusy": "mittd.daemon.client",
    "MittdUnavailable": "mittd.daemon.client",
    "ReadResult": "mittd.daemon.client",
    "ReplicaSet": "mittd.daemon.client",
    "columns_batch": "mittd.daemon.client",
    "daemon_healthy": "mittd.daemon.client",
    "MAX_DEADLINE_US": "mittd.proto",
    "Embedded": "mittd.daemon.embedded",
    "LocalReplica": "mittd.daemon.replicas",
    "LocalReplicaSet": "mittd.daemon.replicas",
}

__all__ = [
    "MAX_DEADLINE_US",
    "Admission",
    "AdmitStream",
    "Client",
    "Embedded",
    "LocalReplica",
    "LocalReplicaSet",
    "MittdBusy",
    "MittdUnavailable",
    "ReadResult",
    "ReplicaSet",
    "columns_batch",
    "daemon_healthy",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
