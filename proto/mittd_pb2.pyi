from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OP_UNSPECIFIED: _ClassVar[Op]
    OP_READ: _ClassVar[Op]
    OP_WRITE: _ClassVar[Op]

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    ADMIT: _ClassVar[Decision]
    EBUSY: _ClassVar[Decision]
OP_UNSPECIFIED: Op
OP_READ: Op
OP_WRITE: Op
DECISION_UNSPECIFIED: Decision
ADMIT: Decision
EBUSY: Decision

class AdmitRequest(_message.Message):
    __slots__ = ("device", "op", "offset", "length", "deadline_us", "request_id")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_US_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    device: str
    op: Op
    offset: int
    length: int
    deadline_us: int
    request_id: int
    def __init__(self, device: _Optional[str] = ..., op: _Optional[_Union[Op, str]] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., deadline_us: _Optional[int] = ..., request_id: _Optional[int] = ...) -> None: ...

class AdmitReply(_message.Message):
    __slots__ = ("decision", "p_slow", "model_version", "threshold_index", "fail_open", "request_id")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    P_SLOW_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_INDEX_FIELD_NUMBER: _ClassVar[int]
    FAIL_OPEN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    p_slow: float
    model_version: str
    threshold_index: int
    fail_open: bool
    request_id: int
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., p_slow: _Optional[float] = ..., model_version: _Optional[str] = ..., threshold_index: _Optional[int] = ..., fail_open: _Optional[bool] = ..., request_id: _Optional[int] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("device", "request_id", "latency_us")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    device: str
    request_id: int
    latency_us: float
    def __init__(self, device: _Optional[str] = ..., request_id: _Optional[int] = ..., latency_us: _Optional[float] = ...) -> None: ...

class CompleteReply(_message.Message):
    __slots__ = ("known",)
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    known: bool
    def __init__(self, known: _Optional[bool] = ...) -> None: ...

class AdmitBatch(_message.Message):
    __slots__ = ("requests", "completions", "columns", "completion_columns")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[AdmitRequest]
    completions: _containers.RepeatedCompositeFieldContainer[CompleteRequest]
    columns: _containers.RepeatedCompositeFieldContainer[AdmitColumns]
    completion_columns: _containers.RepeatedCompositeFieldContainer[CompleteColumns]
    def __init__(self, requests: _Optional[_Iterable[_Union[AdmitRequest, _Mapping]]] = ..., completions: _Optional[_Iterable[_Union[CompleteRequest, _Mapping]]] = ..., columns: _Optional[_Iterable[_Union[AdmitColumns, _Mapping]]] = ..., completion_columns: _Optional[_Iterable[_Union[CompleteColumns, _Mapping]]] = ...) -> None: ...

class AdmitColumns(_message.Message):
    __slots__ = ("device", "op", "offset", "length", "deadline_us", "request_id")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_US_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    device: str
    op: _containers.RepeatedScalarFieldContainer[Op]
    offset: _containers.RepeatedScalarFieldContainer[int]
    length: _containers.RepeatedScalarFieldContainer[int]
    deadline_us: _containers.RepeatedScalarFieldContainer[int]
    request_id: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, device: _Optional[str] = ..., op: _Optional[_Iterable[_Union[Op, str]]] = ..., offset: _Optional[_Iterable[int]] = ..., length: _Optional[_Iterable[int]] = ..., deadline_us: _Optional[_Iterable[int]] = ..., request_id: _Optional[_Iterable[int]] = ...) -> None: ...

class CompleteColumns(_message.Message):
    __slots__ = ("device", "request_id", "latency_us")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    device: str
    request_id: _containers.RepeatedScalarFieldContainer[int]
    latency_us: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, device: _Optional[str] = ..., request_id: _Optional[_Iterable[int]] = ..., latency_us: _Optional[_Iterable[float]] = ...) -> None: ...

class AdmitColumnsReply(_message.Message):
    __slots__ = ("device", "decision", "p_slow", "threshold_index", "fail_open", "model_version")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    P_SLOW_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_INDEX_FIELD_NUMBER: _ClassVar[int]
    FAIL_OPEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    device: str
    decision: _containers.RepeatedScalarFieldContainer[Decision]
    p_slow: _containers.RepeatedScalarFieldContainer[float]
    threshold_index: _containers.RepeatedScalarFieldContainer[int]
    fail_open: _containers.RepeatedScalarFieldContainer[bool]
    model_version: str
    def __init__(self, device: _Optional[str] = ..., decision: _Optional[_Iterable[_Union[Decision, str]]] = ..., p_slow: _Optional[_Iterable[float]] = ..., threshold_index: _Optional[_Iterable[int]] = ..., fail_open: _Optional[_Iterable[bool]] = ..., model_version: _Optional[str] = ...) -> None: ...

class AdmitBatchReply(_message.Message):
    __slots__ = ("replies", "columns")
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[AdmitReply]
    columns: _containers.RepeatedCompositeFieldContainer[AdmitColumnsReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[AdmitReply, _Mapping]]] = ..., columns: _Optional[_Iterable[_Union[AdmitColumnsReply, _Mapping]]] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("device", "offset", "length", "deadline_us", "request_id")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_US_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    device: str
    offset: int
    length: int
    deadline_us: int
    request_id: int
    def __init__(self, device: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., deadline_us: _Optional[int] = ..., request_id: _Optional[int] = ...) -> None: ...

class ReadReply(_message.Message):
    __slots__ = ("data", "latency_us", "model_version")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    latency_us: float
    model_version: str
    def __init__(self, data: _Optional[bytes] = ..., latency_us: _Optional[float] = ..., model_version: _Optional[str] = ...) -> None: ...

class EchoRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: AdmitRequest
    def __init__(self, request: _Optional[_Union[AdmitRequest, _Mapping]] = ...) -> None: ...

class EchoReply(_message.Message):
    __slots__ = ("reply",)
    REPLY_FIELD_NUMBER: _ClassVar[int]
    reply: AdmitReply
    def __init__(self, reply: _Optional[_Union[AdmitReply, _Mapping]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("device",)
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    device: str
    def __init__(self, device: _Optional[str] = ...) -> None: ...

class DescribeReply(_message.Message):
    __slots__ = ("device", "model_version", "policy_mode", "hedge_after_us", "latency_thresholds_us", "p_slow_cutoffs", "max_reject_share", "policy_reason")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_MODE_FIELD_NUMBER: _ClassVar[int]
    HEDGE_AFTER_US_FIELD_NUMBER: _ClassVar[int]
    LATENCY_THRESHOLDS_US_FIELD_NUMBER: _ClassVar[int]
    P_SLOW_CUTOFFS_FIELD_NUMBER: _ClassVar[int]
    MAX_REJECT_SHARE_FIELD_NUMBER: _ClassVar[int]
    POLICY_REASON_FIELD_NUMBER: _ClassVar[int]
    device: str
    model_version: str
    policy_mode: str
    hedge_after_us: float
    latency_thresholds_us: _containers.RepeatedScalarFieldContainer[float]
    p_slow_cutoffs: _containers.RepeatedScalarFieldContainer[float]
    max_reject_share: float
    policy_reason: str
    def __init__(self, device: _Optional[str] = ..., model_version: _Optional[str] = ..., policy_mode: _Optional[str] = ..., hedge_after_us: _Optional[float] = ..., latency_thresholds_us: _Optional[_Iterable[float]] = ..., p_slow_cutoffs: _Optional[_Iterable[float]] = ..., max_reject_share: _Optional[float] = ..., policy_reason: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("device",)
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    device: str
    def __init__(self, device: _Optional[str] = ...) -> None: ...

class DeviceStatus(_message.Message):
    __slots__ = ("device", "mode", "model_version", "model_sha256", "window", "decided", "labelled", "slow", "roc_auc", "precision", "recall", "would_reject_share", "validation_roc_auc", "drift_margin", "drift", "reject_share", "admitted", "rejected", "shadow_rejects", "fail_open", "overruns", "probes", "capped", "pending", "records_written", "records_dropped", "drift_windows", "windows_below", "beyond_model", "below_model", "cold_overruns", "warm_ticks")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    LABELLED_FIELD_NUMBER: _ClassVar[int]
    SLOW_FIELD_NUMBER: _ClassVar[int]
    ROC_AUC_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    WOULD_REJECT_SHARE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ROC_AUC_FIELD_NUMBER: _ClassVar[int]
    DRIFT_MARGIN_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    REJECT_SHARE_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_REJECTS_FIELD_NUMBER: _ClassVar[int]
    FAIL_OPEN_FIELD_NUMBER: _ClassVar[int]
    OVERRUNS_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    CAPPED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RECORDS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    RECORDS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    DRIFT_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_BELOW_FIELD_NUMBER: _ClassVar[int]
    BEYOND_MODEL_FIELD_NUMBER: _ClassVar[int]
    BELOW_MODEL_FIELD_NUMBER: _ClassVar[int]
    COLD_OVERRUNS_FIELD_NUMBER: _ClassVar[int]
    WARM_TICKS_FIELD_NUMBER: _ClassVar[int]
    device: str
    mode: str
    model_version: str
    model_sha256: str
    window: int
    decided: int
    labelled: int
    slow: int
    roc_auc: float
    precision: float
    recall: float
    would_reject_share: float
    validation_roc_auc: float
    drift_margin: float
    drift: bool
    reject_share: float
    admitted: int
    rejected: int
    shadow_rejects: int
    fail_open: int
    overruns: int
    probes: int
    capped: int
    pending: int
    records_written: int
    records_dropped: int
    drift_windows: int
    windows_below: int
    beyond_model: int
    below_model: int
    cold_overruns: int
    warm_ticks: int
    def __init__(self, device: _Optional[str] = ..., mode: _Optional[str] = ..., model_version: _Optional[str] = ..., model_sha256: _Optional[str] = ..., window: _Optional[int] = ..., decided: _Optional[int] = ..., labelled: _Optional[int] = ..., slow: _Optional[int] = ..., roc_auc: _Optional[float] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., would_reject_share: _Optional[float] = ..., validation_roc_auc: _Optional[float] = ..., drift_margin: _Optional[float] = ..., drift: _Optional[bool] = ..., reject_share: _Optional[float] = ..., admitted: _Optional[int] = ..., rejected: _Optional[int] = ..., shadow_rejects: _Optional[int] = ..., fail_open: _Optional[int] = ..., overruns: _Optional[int] = ..., probes: _Optional[int] = ..., capped: _Optional[int] = ..., pending: _Optional[int] = ..., records_written: _Optional[int] = ..., records_dropped: _Optional[int] = ..., drift_windows: _Optional[int] = ..., windows_below: _Optional[int] = ..., beyond_model: _Optional[int] = ..., below_model: _Optional[int] = ..., cold_overruns: _Optional[int] = ..., warm_ticks: _Optional[int] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceStatus]
    def __init__(self, devices: _Optional[_Iterable[_Union[DeviceStatus, _Mapping]]] = ...) -> None: ...
