"""mittd.proto: the gRPC API (mittd.v1) and its generated stubs.

``mittd.proto`` describes the service ``mittd.v1.Mittd`` (Admit, Complete,
AdmitStream, Read, Echo, Describe, Status); ``mittd_pb2`` / ``mittd_pb2_grpc``
are protoc's stubs, committed, and regenerated with
``python -m mittd.proto.generate``.

The stubs are re-exported lazily (``from mittd.proto import mittd_pb2``, or
``mittd.proto.mittd_pb2``) so that importing this package, or running the
generator after the .proto changed, never needs working stubs.

A rejected proxy ``Read`` fails with gRPC status UNAVAILABLE and trailing
metadata ``mittd-errno: 16`` (EBUSY) and ``mittd-p-slow: <float>``; the keys,
the errno and the wire limits are below so that daemon and clients share them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Trailing-metadata key carrying the errno of a failed call, as a decimal string.
ERRNO_METADATA_KEY = "mittd-errno"
#: Trailing-metadata key carrying the predicted probability of a slow IO.
P_SLOW_METADATA_KEY = "mittd-p-slow"
#: errno EBUSY (Linux), sent in ``mittd-errno`` when the predictor rejects a read.
EBUSY_ERRNO = 16
#: Full name of the service, e.g. for health checking and reflection.
SERVICE_NAME = "mittd.v1.Mittd"
#: Longest ``deadline_us`` the API accepts: 1 hour (longer is surely a unit
#: mistake: ns? ms?). It lies beyond every trained latency threshold, so the
#: daemon admits a request with it without predicting ("beyond the model"): a
#: client asks with it when it must not be rejected. 0 is NOT "no deadline" but
#: "the device's default".
MAX_DEADLINE_US = 3_600_000_000
#: Largest IO an Admit may describe: 1 GiB (no single block IO is larger; bigger is
#: a client bug). Proxy reads are bounded by the config's ``max_read_bytes``.
MAX_ADMIT_BYTES = 1 << 30

_STUBS = ("mittd_pb2", "mittd_pb2_grpc")

__all__ = [
    "EBUSY_ERRNO",
    "ERRNO_METADATA_KEY",
    "MAX_ADMIT_BYTES",
    "MAX_DEADLINE_US",
    "P_SLOW_METADATA_KEY",
    "SERVICE_NAME",
    "mittd_pb2",
    "mittd_pb2_grpc",
]


def __getattr__(name: str) -> ModuleType:
    if name in _STUBS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
