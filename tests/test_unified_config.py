"""The unified ``StartEgressRequest`` without a server: how each source and output is read, what
is refused (naming the field), what ``EgressInfo.egress`` shows, and ``list_egress`` paging."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

import pyegress
from pyegress.cli import infer_type, parse_request
from pyegress.config import Channel, FileType, Kind, build_config
from pyegress.config.unified import source_kind
from pyegress.errors import InvalidRequestError, NotSupportedError
from pyegress.info import new_info
from pyegress.media.mixer import Mixer
from pyegress.recorders import (
    ENCODED_PATH,
    RECORDERS,
    MediaRecorder,
    Options,
    decodes_encoded,
    encoded_pcm,
    passthrough,
    recorder_for,
)
from pyegress.redaction import REDACTED

FILE = pe.Output(file=pe.FileOutput(filepath="out.mp4"))


def media(**kw: Any) -> pe.MediaSource:
    return pe.MediaSource(**kw)


def req(**kw: Any) -> pe.StartEgressRequest:
    kw.setdefault("room_name", "r")
    kw.setdefault("outputs", [FILE])
    return pe.StartEgressRequest(**kw)


def route(channel: int = pe.AUDIO_CHANNEL_BOTH, **match: Any) -> pe.AudioRoute:
    return pe.AudioRoute(channel=channel, **match)  # type: ignore[arg-type]


def test_template_source_is_the_room_composite() -> None:
    cfg = build_config(req(template=pe.TemplateSource(layout="grid")))
    assert cfg.kind is Kind.ROOM_COMPOSITE and not cfg.template and cfg.layout == "grid"
    assert cfg.video is not None and cfg.audio is not None
    audio = build_config(
        req(
            template=pe.TemplateSource(audio_only=True),
            outputs=[pe.Output(file=pe.FileOutput(file_type=pe.OGG))],
        )
    )
    assert audio.video is None and audio.audio is not None and audio.audio.codec == "opus"
    page = build_config(
        req(template=pe.TemplateSource(custom_base_url="http://127.0.0.1/t/", video_only=True))
    )
    assert page.template and page.audio is None  # rendered by the template recorder


def test_web_source_is_the_web_egress() -> None:
    cfg = build_config(req(room_name="", web=pe.WebSource(url="https://127.0.0.1/", await_start_signal=True)))
    assert cfg.kind is Kind.WEB and cfg.web_url == "https://127.0.0.1/" and cfg.await_start_signal
    info = new_info(cfg.request)
    assert info.source_type == pe.EGRESS_SOURCE_TYPE_WEB and info.WhichOneof("request") == "egress"


def test_media_source_video_and_routes() -> None:
    r = req(
        media=media(
            participant_video=pe.ParticipantVideo(identity="cam", prefer_screen_share=True),
            audio=pe.AudioConfig(
                capture_all=True,
                routes=[
                    route(pe.AUDIO_CHANNEL_LEFT, track_id="TR_a"),
                    route(pe.AUDIO_CHANNEL_RIGHT, participant_identity="bob"),
                    route(participant_kind=pm.ParticipantInfo.CONNECTOR),
                ],
            ),
        )
    )
    cfg = build_config(r)
    assert cfg.kind is Kind.MEDIA and RECORDERS[Kind.MEDIA] is MediaRecorder
    assert (cfg.identity, cfg.screen_share, cfg.capture_all_audio) == ("cam", True, True)
    assert [(x.channel, x.track_id, x.identity, x.participant_kind) for x in cfg.audio_routes] == [
        (Channel.LEFT, "TR_a", "", ""),
        (Channel.RIGHT, "", "bob", ""),
        (Channel.BOTH, "", "", "CONNECTOR"),  # by name: rtc numbers CONNECTOR 5, the protocol 7
    ]
    assert new_info(r).source_type == pe.EGRESS_SOURCE_TYPE_SDK
    video_only = build_config(req(media=media(video_track_id="TR_v")))
    assert video_only.video_track_id == "TR_v" and video_only.audio is None and video_only.video is not None
    audio_only = build_config(
        req(
            media=media(audio=pe.AudioConfig(capture_all=True)),
            outputs=[pe.Output(file=pe.FileOutput(file_type=pe.OGG))],
        )
    )
    assert audio_only.video is None and audio_only.audio is not None


def test_mixer_puts_a_routed_voice_on_its_channel() -> None:
    m = Mixer(48000, 2, 0.0)
    tone = np.full((480, 2), 1000, np.int16)
    m.voice("left", side=Channel.LEFT.value).push(tone, 0.01)
    m.voice("right", side=Channel.RIGHT.value).push(tone * 2, 0.01)
    m.voice("both", side=Channel.BOTH.value).push(tone * 4, 0.01)
    out = m.read(0, 480)
    assert out[0].tolist() == [5000, 6000]


def test_outputs_and_their_stores() -> None:
    s3 = pe.S3Upload(bucket="own", region="r", access_key="AKOWN", secret="own-secret")
    gcs = pe.GCPUpload(bucket="request-wide")
    cfg = build_config(
        req(
            template=pe.TemplateSource(layout="grid"),
            storage=pe.StorageConfig(gcp=gcs),
            outputs=[
                pe.Output(file=pe.FileOutput(filepath="a.mp4"), storage=pe.StorageConfig(s3=s3)),
                pe.Output(segments=pe.SegmentedFileOutput(filename_prefix="hls/a", segment_duration=2)),
                pe.Output(images=pe.ImageOutput(capture_interval=5, s3=s3)),
                pe.Output(stream=pe.StreamOutput(urls=["rtmp://127.0.0.1/live/key"])),
            ],
        ),
        default=pe.StorageConfig(s3=pe.S3Upload(bucket="service-default", region="r")),
    )
    assert cfg.files[0].field == "outputs[0].file" and cfg.files[0].file_type is FileType.MP4
    assert isinstance(cfg.files[0].storage, pe.S3Upload) and cfg.files[0].storage.bucket == "own"
    assert isinstance(cfg.segments[0].storage, pe.GCPUpload)  # the request's, before the service's
    assert isinstance(cfg.images[0].storage, pe.S3Upload)  # the message's own s3 still counts
    assert cfg.streams[0].field == "outputs[3].stream"
    assert cfg.video is not None and cfg.video.keyframe_interval == 2.0  # segments start on key frames
    plain = build_config(req(template=pe.TemplateSource()), default=pe.StorageConfig(gcp=gcs))
    assert isinstance(plain.files[0].storage, pe.GCPUpload)  # no storage in the request: the service's


BAD: list[tuple[pe.StartEgressRequest, str]] = [
    (req(), "source"),
    (req(room_name="", template=pe.TemplateSource()), "room_name"),
    (req(template=pe.TemplateSource(layout="mosaic")), "template.layout"),
    (req(template=pe.TemplateSource(audio_only=True, video_only=True)), "template.video_only"),
    (req(template=pe.TemplateSource(custom_base_url="ftp://x/")), "template.custom_base_url"),
    (req(web=pe.WebSource(url="javascript:alert(1)")), "web.url"),
    (req(web=pe.WebSource(url="http://x/", audio_only=True, video_only=True)), "web.video_only"),
    (req(media=media()), "media"),
    (req(media=media(video_track_id=" ")), "media.video_track_id"),
    (req(media=media(participant_video=pe.ParticipantVideo())), "media.participant_video.identity"),
    (req(media=media(audio=pe.AudioConfig())), "media.audio"),
    (req(media=media(audio=pe.AudioConfig(routes=[route()]))), "media.audio.routes[0]"),
    (req(media=media(audio=pe.AudioConfig(routes=[route(track_id="")]))), "media.audio.routes[0].track_id"),
    (
        req(media=media(audio=pe.AudioConfig(routes=[route(participant_kind=99)]))),  # type: ignore[arg-type]
        "media.audio.routes[0].participant_kind",
    ),
    (
        req(media=media(audio=pe.AudioConfig(routes=[route(7, track_id="TR")]))),  # type: ignore[arg-type]
        "media.audio.routes[0].channel",
    ),
    (req(template=pe.TemplateSource(), outputs=[]), "outputs"),
    (req(template=pe.TemplateSource(), outputs=[pe.Output()]), "outputs[0]"),
    (
        req(template=pe.TemplateSource(), outputs=[FILE, pe.Output(file=pe.FileOutput(filepath="../x.mp4"))]),
        "outputs[1].file.filepath",
    ),
    (
        req(template=pe.TemplateSource(), outputs=[pe.Output(file=pe.FileOutput(filepath="{nope}"))]),
        "outputs[0].file.filepath",
    ),
    (
        req(
            template=pe.TemplateSource(),
            outputs=[
                pe.Output(
                    stream=pe.StreamOutput(urls=["rtmp://h/a/k"]),
                    storage=pe.StorageConfig(gcp=pe.GCPUpload(bucket="b")),
                )
            ],
        ),
        "outputs[0].storage",
    ),
    (
        req(
            template=pe.TemplateSource(),
            outputs=[
                pe.Output(
                    segments=pe.SegmentedFileOutput(gcp=pe.GCPUpload(bucket="b")),
                    storage=pe.StorageConfig(gcp=pe.GCPUpload(bucket="c")),
                )
            ],
        ),
        "outputs[0].segments.gcp",
    ),
    (
        req(
            template=pe.TemplateSource(),
            outputs=[pe.Output(file=pe.FileOutput(), storage=pe.StorageConfig(s3=pe.S3Upload(bucket="b")))],
        ),
        "outputs[0].storage.s3.region",
    ),
    (req(template=pe.TemplateSource(), storage=pe.StorageConfig(s3=pe.S3Upload())), "storage.s3.bucket"),
    (
        req(template=pe.TemplateSource(audio_only=True), outputs=[pe.Output(images=pe.ImageOutput())]),
        "outputs[0].images",
    ),
    (
        req(media=media(video_track_id="TR"), outputs=[pe.Output(file=pe.FileOutput(file_type=pe.OGG))]),
        "outputs[0].file.file_type",
    ),
    (req(template=pe.TemplateSource(), advanced=pe.EncodingOptions(width=7)), "advanced.width"),
]


def ws(*urls: str, protocol: int = pe.WEBSOCKET) -> pe.Output:
    return pe.Output(stream=pe.StreamOutput(protocol=protocol, urls=list(urls)))  # type: ignore[arg-type]


def test_websocket_stream_output_is_the_pcm_output() -> None:
    """``protocol: WEBSOCKET`` (or a ws:// URL with the default protocol) is the WebSocket PCM
    output; as in LiveKit, it makes the whole egress audio only."""
    audio = media(
        participant_video=pe.ParticipantVideo(identity="cam"), audio=pe.AudioConfig(capture_all=True)
    )
    cfg = build_config(req(media=audio, outputs=[FILE, ws("wss://h/pcm?token=t0k")]))
    assert cfg.websocket_url == "wss://h/pcm?token=t0k" and cfg.websocket_field == "outputs[1].stream"
    assert cfg.video is None and cfg.audio is not None and not cfg.streams
    assert "t0k" not in repr(cfg)
    by_scheme = build_config(
        req(template=pe.TemplateSource(), outputs=[ws("ws://h/x", protocol=pe.DEFAULT_PROTOCOL)])
    )
    assert by_scheme.websocket_url == "ws://h/x" and by_scheme.video is None


WS_BAD = [
    (req(template=pe.TemplateSource(), outputs=[ws("rtmp://h/live/k")]), "outputs[0].stream.urls[0]"),
    (req(template=pe.TemplateSource(), outputs=[ws("ws://h/a", "ws://h/b")]), "outputs[0].stream.urls"),
    (req(template=pe.TemplateSource(), outputs=[ws()]), "outputs[0].stream.urls"),
    (req(template=pe.TemplateSource(), outputs=[ws("ws://h/a"), ws("ws://h/b")]), "outputs[1].stream"),
    (
        req(
            template=pe.TemplateSource(),
            outputs=[ws("ws://h/a"), pe.Output(stream=pe.StreamOutput(urls=["rtmp://h/live/k"]))],
        ),
        "outputs[1].stream",
    ),
    (req(template=pe.TemplateSource(video_only=True), outputs=[ws("ws://h/a")]), "outputs[0].stream"),
    (req(media=media(video_track_id="TR"), outputs=[ws("ws://h/a")]), "outputs[0].stream"),
    (
        req(template=pe.TemplateSource(), outputs=[ws("ws://h/a"), pe.Output(images=pe.ImageOutput())]),
        "outputs[1].images",
    ),
    (
        pe.ParticipantEgressRequest(
            room_name="r",
            identity="a",
            stream_outputs=[pe.StreamOutput(protocol=pe.WEBSOCKET, urls=["ws://h/a"])],
        ),
        "stream_outputs[0].protocol",
    ),
]


@pytest.mark.parametrize(("request_", "field"), WS_BAD)
def test_websocket_outputs_refused_where_livekit_refuses_them(request_: Any, field: str) -> None:
    with pytest.raises(InvalidRequestError) as e:
        build_config(request_)
    assert e.value.field == field, e.value


@pytest.mark.parametrize(("request_", "field"), BAD)
def test_bad_fields_are_refused_naming_the_field(request_: pe.StartEgressRequest, field: str) -> None:
    with pytest.raises(InvalidRequestError) as e:
        build_config(request_)
    assert e.value.field == field, e.value


def test_passthrough_of_one_track_is_its_track_egress() -> None:
    """LiveKit's shapes: a media source of exactly one track (video_track_id, or one audio
    route by track_id) to files of the track's own container."""
    video = build_config(req(media=media(video_track_id=" TR_v "), preset=pe.PASSTHROUGH))
    audio = build_config(
        req(media=media(audio=pe.AudioConfig(routes=[route(track_id="TR_a")])), preset=pe.PASSTHROUGH)
    )
    for cfg, sid in ((video, "TR_v"), (audio, "TR_a")):
        assert cfg.kind is Kind.TRACK and cfg.track_id == sid and cfg.video is None and cfg.audio is None
        assert [(f.field, f.file_type) for f in cfg.files] == [("outputs[0].file", FileType.AUTO)]
    options = Options(url="ws://127.0.0.1:1", api_key="k", api_secret="s")
    if not ENCODED_PATH:  # Python 3.10 has no aiortc: refused, never re-encoded behind its back
        with pytest.raises(NotSupportedError, match="preset: PASSTHROUGH needs the encoded receive path"):
            recorder_for(video, options)
        return
    assert type(recorder_for(video, options)).__name__ == "PassthroughTrackRecorder"
    assert passthrough(video, Options()) and encoded_pcm(
        build_config(pe.TrackEgressRequest(room_name="r", track_id="TR_a", websocket_url="ws://h/pcm")),
        Options(),
    )


async def test_participant_track_and_room_composite_take_the_encoded_path_by_default_where_they_can() -> None:
    """``auto``: encoded wherever it can run, the SDK's frames elsewhere (never refused);
    ``encoded`` asked for where it cannot run is refused naming ``receive_path``. A room
    composite rendered by a web template is Chromium's: never the encoded path."""
    part = build_config(pe.ParticipantEgressRequest(room_name="r", identity="a", file_outputs=[
        pe.EncodedFileOutput(filepath="a.mp4")]))  # fmt: skip
    room = build_config(pe.RoomCompositeEgressRequest(room_name="r", file_outputs=[
        pe.EncodedFileOutput(filepath="a.mp4")]))  # fmt: skip
    template = build_config(pe.RoomCompositeEgressRequest(room_name="r", custom_base_url="http://127.0.0.1:1/",
        file_outputs=[pe.EncodedFileOutput(filepath="a.mp4")]))  # fmt: skip
    own = rtc.Room()
    assert Options().receive_path == "auto"
    assert decodes_encoded(part, Options()) is ENCODED_PATH
    assert decodes_encoded(room, Options()) is ENCODED_PATH
    assert template.template and not decodes_encoded(template, Options())
    for config in (part, room):
        for options in (
            Options(room=own),
            Options(sidecars=frozenset({"transcript"})),
            Options(receive_path="sdk"),
        ):
            assert not decodes_encoded(config, options), (config.kind, options)
    with pytest.raises(NotSupportedError, match=r"^receive_path: "):
        decodes_encoded(part, Options(room=own, receive_path="encoded"))
    chat = frozenset({"events", "chat"})
    why = "transcript and chat sidecars" if ENCODED_PATH else "the encoded receive path needs aiortc"
    with pytest.raises(NotSupportedError, match=rf"^receive_path: {why}"):
        decodes_encoded(part, Options(sidecars=chat, receive_path="encoded"))
    assert decodes_encoded(part, Options(sidecars=frozenset({"events"}))) is ENCODED_PATH  # signaling's


PASSTHROUGH_REFUSED: list[tuple[pe.StartEgressRequest, type[Exception], str]] = [
    (req(template=pe.TemplateSource()), NotSupportedError, "preset"),
    (req(media=media(participant_video=pe.ParticipantVideo(identity="a"),
                     audio=pe.AudioConfig(routes=[route(participant_identity="b")]))),
     NotSupportedError, "media.participant_video"),
    (req(media=media(video_track_id="TR_v", audio=pe.AudioConfig(routes=[route(participant_identity="a")]))),
     NotSupportedError, "media.audio"),
    (req(media=media(audio=pe.AudioConfig(capture_all=True))), NotSupportedError, "media.audio"),
    (req(media=media(audio=pe.AudioConfig(routes=[route(participant_identity="a")]))), NotSupportedError,
     "media.audio.routes[0]"),
    (req(media=media(audio=pe.AudioConfig(routes=[route(pe.AUDIO_CHANNEL_LEFT, track_id="TR_a")]))),
     InvalidRequestError, "media.audio.routes[0].channel"),
    (req(media=media(video_track_id="TR_v"), outputs=[pe.Output(file=pe.FileOutput(file_type=pe.MP4))]),
     InvalidRequestError, "outputs[0].file.file_type"),
    (req(media=media(video_track_id="TR_v"), outputs=[FILE, pe.Output(segments=pe.SegmentedFileOutput())]),
     NotSupportedError, "outputs[1]"),
    (req(media=media(video_track_id=" ")), InvalidRequestError, "media.video_track_id"),
]  # fmt: skip


@pytest.mark.parametrize(("request_", "error", "field"), PASSTHROUGH_REFUSED)
def test_passthrough_refuses_what_a_remux_cannot_give(
    request_: pe.StartEgressRequest, error: type[Exception], field: str
) -> None:
    request_.preset = pe.PASSTHROUGH
    with pytest.raises(error, match=rf"^{re.escape(field)}: "):
        build_config(request_)


async def test_passthrough_never_falls_back_to_an_encode() -> None:
    """An application's own room hands over decoded frames only: PASSTHROUGH is refused there
    (raised, nothing started) rather than re-encoded."""
    svc = pyegress.EgressService("ws://127.0.0.1:1", "key", "secret")
    with pytest.raises(NotSupportedError, match=r"^preset: PASSTHROUGH needs the encoded receive path"):
        await svc.start_egress(
            req(media=media(video_track_id="TR_v"), preset=pe.PASSTHROUGH),
            room=rtc.Room(),
        )
    assert not (await svc.list_egress(pe.ListEgressRequest())).items  # nothing was started


async def test_a_bad_request_is_listed_failed_naming_the_field_without_its_secrets() -> None:
    secrets = [
        "AKIDOWN1234",
        "s3-own-secret-value",
        "request-secret-xyz",
        "hook-token-123456",
        "sign-key-987",
    ]
    keys = {secrets[4]: "hook-secret"}  # the signing key must be one the service knows
    svc = pyegress.EgressService("ws://127.0.0.1:1", "key", "secret", webhook_keys=keys)
    s3 = pe.S3Upload(bucket="b", region="r", access_key=secrets[0], secret=secrets[1])
    info = await svc.start_egress(
        req(
            room_name="",  # the one mistake
            template=pe.TemplateSource(),
            storage=pe.StorageConfig(azure=pe.AzureBlobUpload(account_name="a", account_key=secrets[2])),
            outputs=[pe.Output(file=pe.FileOutput(filepath="x.mp4"), storage=pe.StorageConfig(s3=s3))],
            webhooks=[pm.WebhookConfig(url=f"http://127.0.0.1/h?token={secrets[3]}", signing_key=secrets[4])],
        )
    )
    assert info.status == pe.EGRESS_FAILED and info.error == "room_name: is required"
    assert info.egress.outputs[0].storage.s3.secret == REDACTED
    assert info.egress.webhooks[0].signing_key == REDACTED  # kept for the webhook sender, redacted
    assert info.egress.webhooks[0].url == "http://127.0.0.1/h?token={redacted}"
    listed = (await svc.list_egress(pe.ListEgressRequest())).items
    for text in (str(info), str(listed)):
        assert not [s for s in secrets if s in text]


async def test_list_egress_pages_in_start_order() -> None:
    svc = pyegress.EgressService("ws://127.0.0.1:1", "key", "secret")
    svc.list_page_size = 2
    started = [
        (await svc.start_egress(req(room_name=f"room{i % 2}", media=media()))).egress_id for i in range(5)
    ]
    seen, token, pages = [], "", 0
    while True:
        page = await svc.list_egress(pe.ListEgressRequest(page_token=pm.TokenPagination(token=token)))
        seen += [i.egress_id for i in page.items]
        pages += 1
        token = page.next_page_token.token
        if not token:
            break
        assert started[0] not in token  # opaque
    assert seen == started and pages == 3
    # a filter pages over what matches; the last page has no next token
    first = await svc.list_egress(pe.ListEgressRequest(room_name="room0"))
    assert [i.egress_id for i in first.items] == [started[0], started[2]]
    rest = await svc.list_egress(pe.ListEgressRequest(room_name="room0", page_token=first.next_page_token))
    assert [i.egress_id for i in rest.items] == [started[4]] and not rest.HasField("next_page_token")
    exact = await svc.list_egress(pe.ListEgressRequest(room_name="room1"))
    assert len(exact.items) == 2 and not exact.HasField("next_page_token")  # no empty last page
    foreign = base64.urlsafe_b64encode(b"EG_unknown").decode()
    for bad in (foreign, "pyeg1." + foreign, "pyeg1.%%%"):
        with pytest.raises(InvalidRequestError) as e:
            await svc.list_egress(pe.ListEgressRequest(page_token=pm.TokenPagination(token=bad)))
        assert e.value.field == "page_token"


def test_cli_reads_unified_json() -> None:
    assert infer_type({"roomName": "r", "media": {"videoTrackId": "TR"}}) == "egress"
    assert infer_type({"web": {"url": "https://x/"}, "outputs": []}) == "egress"
    text = json.dumps(
        {
            "roomName": "r",
            "template": {"layout": "grid"},
            "outputs": [{"file": {"filepath": "a.mp4"}, "storage": {"s3": {"bucket": "b", "region": "x"}}}],
        }
    )
    kind, parsed = parse_request(text, None)
    assert kind == "egress" and isinstance(parsed, pe.StartEgressRequest)
    assert parsed.outputs[0].storage.s3.bucket == "b" and parsed.template.layout == "grid"
    assert parse_request(text, "egress")[0] == "egress"


def test_worker_cost_follows_the_source() -> None:
    assert source_kind(req(template=pe.TemplateSource())) == "room_composite"
    assert source_kind(req(template=pe.TemplateSource(custom_base_url="http://x/"))) == "web"
    assert source_kind(req(web=pe.WebSource(url="http://x/"))) == "web"
    assert source_kind(req(media=media(video_track_id="TR"))) == "participant"
