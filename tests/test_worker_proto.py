"""The worker's protobuf messages: field numbers as LiveKit's Go side has them (wire bytes built by hand)."""

from __future__ import annotations

import struct
from typing import Any

from google.protobuf import any_pb2
from livekit.protocol import egress as lk_egress

from pyegress.worker import proto


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | str | int | float, *, double: bool = False) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if double:
        return _varint(number << 3 | 1) + struct.pack("<d", value)
    return _varint(number << 3) + _varint(int(value))


def test_start_egress_request_wire_format() -> None:
    track_composite = lk_egress.TrackCompositeEgressRequest(
        room_name="room", audio_track_id="TR_audio", video_track_id="TR_video"
    )
    req: Any = proto.StartEgressRequest(
        egress_id="EG_abc",
        room_id="RM_xyz",
        token="jwt",
        ws_url="ws://x",
        cloud_backup_enabled=True,
        estimated_cpu=1.5,
        retry_count=2,
        room_name="room",
    )
    req.track_composite.CopyFrom(proto.recast(track_composite, type(req.track_composite)))
    by_hand = (
        _field(1, "EG_abc")
        + _field(3, "RM_xyz")
        + _field(6, track_composite.SerializeToString())
        + _field(8, "jwt")
        + _field(9, "ws://x")
        + _field(10, 1)
        + _field(14, 1.5, double=True)
        + _field(15, 2)
        + _field(18, "room")
    )
    assert req.SerializeToString() == by_hand
    back: Any = proto.StartEgressRequest.FromString(by_hand)
    assert proto.start_request_kind(back) == "track_composite"
    assert proto.recast(back.track_composite, lk_egress.TrackCompositeEgressRequest) == track_composite
    assert (back.egress_id, back.room_id, back.room_name, back.retry_count) == ("EG_abc", "RM_xyz", "room", 2)


def test_start_egress_request_oneof_numbers() -> None:
    kinds = {
        "room_composite": (5, lk_egress.RoomCompositeEgressRequest(room_name="r")),
        "track": (7, lk_egress.TrackEgressRequest(room_name="r")),
        "web": (11, lk_egress.WebEgressRequest(url="http://x")),
        "participant": (13, lk_egress.ParticipantEgressRequest(room_name="r")),
        "egress": (16, lk_egress.StartEgressRequest(room_name="r")),
    }
    for kind, (number, inner) in kinds.items():
        req: Any = proto.StartEgressRequest.FromString(_field(number, inner.SerializeToString()))
        assert proto.start_request_kind(req) == kind
        assert proto.recast(getattr(req, kind), type(inner)) == inner


def test_list_active_egress_response() -> None:
    res: Any = proto.ListActiveEgressResponse(egress_ids=["EG_a", "EG_b"])
    assert res.SerializeToString() == _field(1, "EG_a") + _field(1, "EG_b")
    assert proto.ListActiveEgressRequest().SerializeToString() == b""


def test_msg_is_byte_identical_to_any() -> None:
    inner = proto.ClaimRequest(request_id="REQ_1", server_id="NODE", affinity=0.5).SerializeToString()
    msg = proto.Msg(type_url="type.googleapis.com/internal.ClaimRequest", value=inner)
    ref = any_pb2.Any(type_url="type.googleapis.com/internal.ClaimRequest", value=inner)
    assert msg.SerializeToString() == ref.SerializeToString()
    assert inner == _field(1, "REQ_1") + _field(2, "NODE") + _varint(3 << 3 | 5) + struct.pack("<f", 0.5)


def test_envelopes_field_numbers() -> None:
    req: Any = proto.Request(
        request_id="REQ_1", client_id="CLI", sent_at=5, expiry=7, multi=True, raw_request=b"\x01"
    )
    req.metadata["k"] = "v"
    assert req.SerializeToString() == (
        _field(1, "REQ_1")
        + _field(2, "CLI")
        + _field(3, 5)
        + _field(4, 7)
        + _field(5, 1)
        + _field(7, _field(1, "k") + _field(2, "v"))
        + _field(8, b"\x01")
    )
    res = proto.Response(
        request_id="REQ_1",
        server_id="S",
        sent_at=9,
        error="bad",
        code="invalid_argument",
        raw_response=b"\x02",
    )
    assert res.SerializeToString() == (
        _field(1, "REQ_1")
        + _field(2, "S")
        + _field(3, 9)
        + _field(5, "bad")
        + _field(6, "invalid_argument")
        + _field(7, b"\x02")
    )
    assert proto.ClaimResponse(request_id="REQ_1", server_id="S").SerializeToString() == (
        _field(1, "REQ_1") + _field(2, "S")
    )
