"""The protobuf messages livekit-protocol's Python package lacks: psrpc's envelopes, LiveKit's rpc
egress messages, and pyegress's own control request (:mod:`pyegress.worker.control`).

Built at import time from descriptors (no protoc at build time) in a descriptor pool of their own,
so a future livekit-protocol that ships ``rpc.*`` itself cannot collide with them. The livekit
files they refer to (``livekit.EgressInfo``, the request types) are copied into that pool from
livekit.protocol's own descriptors, which makes the nested messages classes of this pool: use
:func:`recast` to get livekit.protocol's class of one. Field names and numbers follow
psrpc v0.7.2 ``internal/internal.proto`` and livekit/protocol ``protobufs/rpc/egress.proto``.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message
from livekit.protocol import egress as lk_egress

__all__ = [
    "ClaimRequest",
    "ClaimResponse",
    "ControlRequest",
    "ListActiveEgressRequest",
    "ListActiveEgressResponse",
    "Msg",
    "Request",
    "Response",
    "StartEgressRequest",
    "recast",
    "start_request_kind",
]

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BYTES, _BOOL = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_BOOL
_INT64, _INT32, _FLOAT, _DOUBLE, _MESSAGE = (
    _F.TYPE_INT64,
    _F.TYPE_INT32,
    _F.TYPE_FLOAT,
    _F.TYPE_DOUBLE,
    _F.TYPE_MESSAGE,
)
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# (name, number, type, type_name or "", repeated, oneof index or None)
_Field = tuple[str, int, int, str, bool, "int | None"]


def _message(
    name: str, fields: list[_Field], *, oneofs: tuple[str, ...] = ()
) -> descriptor_pb2.DescriptorProto:
    msg = descriptor_pb2.DescriptorProto(name=name)
    for oneof in oneofs:
        msg.oneof_decl.add(name=oneof)
    for fname, number, ftype, type_name, repeated, oneof_index in fields:
        field = msg.field.add(
            name=fname, number=number, type=ftype, label=_REPEATED if repeated else _OPTIONAL
        )
        field.json_name = "".join(p.capitalize() if i else p for i, p in enumerate(fname.split("_")))
        if type_name:
            field.type_name = type_name
        if oneof_index is not None:
            field.oneof_index = oneof_index
    return msg


def _internal_file() -> descriptor_pb2.FileDescriptorProto:
    """psrpc's envelopes (package ``internal``, as the Go side names them in type URLs)."""
    f = descriptor_pb2.FileDescriptorProto(
        name="pyegress/psrpc_internal.proto",
        package="internal",
        syntax="proto3",
        dependency=["google/protobuf/any.proto"],
    )
    any_t = ".google.protobuf.Any"
    f.message_type.append(
        _message(
            "Msg",
            [
                ("type_url", 1, _STRING, "", False, None),
                ("value", 2, _BYTES, "", False, None),
                ("channel", 3, _STRING, "", False, None),
            ],
        )
    )
    request = _message(
        "Request",
        [
            ("request_id", 1, _STRING, "", False, None),
            ("client_id", 2, _STRING, "", False, None),
            ("sent_at", 3, _INT64, "", False, None),
            ("expiry", 4, _INT64, "", False, None),
            ("multi", 5, _BOOL, "", False, None),
            ("request", 6, _MESSAGE, any_t, False, None),
            ("metadata", 7, _MESSAGE, ".internal.Request.MetadataEntry", True, None),
            ("raw_request", 8, _BYTES, "", False, None),
        ],
    )
    entry = _message(
        "MetadataEntry", [("key", 1, _STRING, "", False, None), ("value", 2, _STRING, "", False, None)]
    )
    entry.options.map_entry = True
    request.nested_type.append(entry)
    f.message_type.append(request)
    f.message_type.append(
        _message(
            "Response",
            [
                ("request_id", 1, _STRING, "", False, None),
                ("server_id", 2, _STRING, "", False, None),
                ("sent_at", 3, _INT64, "", False, None),
                ("response", 4, _MESSAGE, any_t, False, None),
                ("error", 5, _STRING, "", False, None),
                ("code", 6, _STRING, "", False, None),
                ("raw_response", 7, _BYTES, "", False, None),
                ("error_details", 8, _MESSAGE, any_t, True, None),
            ],
        )
    )
    f.message_type.append(
        _message(
            "ClaimRequest",
            [
                ("request_id", 1, _STRING, "", False, None),
                ("server_id", 2, _STRING, "", False, None),
                ("affinity", 3, _FLOAT, "", False, None),
            ],
        )
    )
    f.message_type.append(
        _message(
            "ClaimResponse",
            [("request_id", 1, _STRING, "", False, None), ("server_id", 2, _STRING, "", False, None)],
        )
    )
    return f


def _rpc_egress_file() -> descriptor_pb2.FileDescriptorProto:
    """``rpc.StartEgressRequest`` and the ListActiveEgress pair of LiveKit's rpc/egress.proto."""
    f = descriptor_pb2.FileDescriptorProto(
        name="pyegress/rpc_egress.proto",
        package="rpc",
        syntax="proto3",
        dependency=[lk_egress.DESCRIPTOR.name],
    )
    lk = ".livekit."
    f.message_type.append(
        _message(
            "StartEgressRequest",
            [
                ("egress_id", 1, _STRING, "", False, None),
                ("room_id", 3, _STRING, "", False, None),
                ("room_composite", 5, _MESSAGE, lk + "RoomCompositeEgressRequest", False, 0),
                ("track_composite", 6, _MESSAGE, lk + "TrackCompositeEgressRequest", False, 0),
                ("track", 7, _MESSAGE, lk + "TrackEgressRequest", False, 0),
                ("token", 8, _STRING, "", False, None),
                ("ws_url", 9, _STRING, "", False, None),
                ("cloud_backup_enabled", 10, _BOOL, "", False, None),
                ("web", 11, _MESSAGE, lk + "WebEgressRequest", False, 0),
                ("participant", 13, _MESSAGE, lk + "ParticipantEgressRequest", False, 0),
                ("estimated_cpu", 14, _DOUBLE, "", False, None),
                ("retry_count", 15, _INT32, "", False, None),
                ("egress", 16, _MESSAGE, lk + "StartEgressRequest", False, 0),
                ("replay", 17, _MESSAGE, lk + "ExportReplayRequest", False, 0),
                ("room_name", 18, _STRING, "", False, None),
            ],
            oneofs=("request",),
        )
    )
    f.message_type.append(_message("ListActiveEgressRequest", []))
    f.message_type.append(_message("ListActiveEgressResponse", [("egress_ids", 1, _STRING, "", True, None)]))
    return f


def _control_file() -> descriptor_pb2.FileDescriptorProto:
    """pyegress's own control request (:mod:`pyegress.worker.control`): pause, resume, mark."""
    f = descriptor_pb2.FileDescriptorProto(name="pyegress/control.proto", package="pyegress", syntax="proto3")
    f.message_type.append(
        _message(
            "ControlRequest",
            [
                ("egress_id", 1, _STRING, "", False, None),
                ("fill", 2, _STRING, "", False, None),  # PauseEgress: cut, black or still
                ("label", 3, _STRING, "", False, None),  # MarkEgress
                ("data", 4, _STRING, "", False, None),  # MarkEgress: JSON
            ],
        )
    )
    return f


def _add_with_dependencies(pool: descriptor_pool.DescriptorPool, fd: FileDescriptor, done: set[str]) -> None:
    """Copy ``fd`` and everything it imports (dependencies first) into ``pool``."""
    if fd.name in done:
        return
    for dep in fd.dependencies:
        _add_with_dependencies(pool, dep, done)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    pool.Add(proto)
    done.add(fd.name)


_POOL = descriptor_pool.DescriptorPool()
_copied: set[str] = set()
_add_with_dependencies(_POOL, any_pb2.DESCRIPTOR, _copied)
_add_with_dependencies(_POOL, lk_egress.DESCRIPTOR, _copied)
_POOL.Add(_internal_file())
_POOL.Add(_rpc_egress_file())
_POOL.Add(_control_file())


def _cls(full_name: str) -> type[Message]:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


#: psrpc's wire envelope around every published payload (byte-identical to ``google.protobuf.Any``).
Msg: type[Message] = _cls("internal.Msg")
Request: type[Message] = _cls("internal.Request")
Response: type[Message] = _cls("internal.Response")
ClaimRequest: type[Message] = _cls("internal.ClaimRequest")
ClaimResponse: type[Message] = _cls("internal.ClaimResponse")
StartEgressRequest: type[Message] = _cls("rpc.StartEgressRequest")
ListActiveEgressRequest: type[Message] = _cls("rpc.ListActiveEgressRequest")
ListActiveEgressResponse: type[Message] = _cls("rpc.ListActiveEgressResponse")
ControlRequest: type[Message] = _cls("pyegress.ControlRequest")

_M = TypeVar("_M", bound=Message)


def recast(msg: Message, cls: type[_M]) -> _M:
    """``msg`` as the same message type of another pool: ``recast(req.track, lk_egress.TrackEgressRequest)``
    gives livekit.protocol's class of a field of this module's messages, and
    ``req.track.CopyFrom(recast(lk_msg, type(req.track)))`` sets one (the two pools' classes are
    distinct, their wire format is one)."""
    if msg.DESCRIPTOR.full_name != cls.DESCRIPTOR.full_name:
        raise TypeError(f"{msg.DESCRIPTOR.full_name} is not {cls.DESCRIPTOR.full_name}")
    return cls.FromString(msg.SerializeToString())


def start_request_kind(req: Message) -> str | None:
    """Which request a ``StartEgressRequest`` carries (``"room_composite"``, ``"track"``, ...; None
    when it carries none)."""
    kind: str | None = req.WhichOneof("request")
    return kind
