"""Redaction fails closed: no secret of a request shows in EgressInfo, manifests, errors, logs or repr.

The unit tests pin what :mod:`pyegress.redaction` hides; the integration tests record real
egresses with a distinct secret in every place a request can carry one and look for each in
everything a user can see.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gc
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

import pyegress
from pyegress import redaction
from pyegress.config import StreamURL, build_config
from pyegress.errors import InvalidRequestError, NotSupportedError
from pyegress.info import new_info, snapshot
from pyegress.outputs.stream import StreamOutput
from pyegress.redaction import REDACTED, FieldKind, redact_message, redact_url, remember, scrub, url_secrets
from pyegress.sources.web import find_chromium
from pyegress.storage import base as storage_base
from pyegress.testing import LiveKitServer
from pyegress.testing.ports import free_tcp_port as free_port
from pyegress.testing.rtmp_server import RtmpServer, RtmpServerError
from pyegress.testing.storage_emulators import MinioServer

from .helpers import publisher, service_account, status, wait_active

PAGES = Path(__file__).parent / "pages"

# --- the classification of every string field of the protocol ------------------------------------

#: Every string field reachable from the requests, StartEgressRequest, EgressInfo and
#: StorageConfig, by what redaction does with it. A new field of livekit-protocol fails
#: test_every_string_field_is_classified until it is added here (and its name checked).
SECRET_FIELDS = {
    "AliOSSUpload.access_key",
    "AliOSSUpload.secret",
    "AzureBlobUpload.account_key",
    "GCPUpload.credentials",
    "ProxyConfig.password",
    "ProxyConfig.username",
    "S3Upload.access_key",
    "S3Upload.assume_role_external_id",
    "S3Upload.secret",
    "S3Upload.session_token",
    "WebhookConfig.signing_key",
}
URL_FIELDS = {
    "AliOSSUpload.endpoint",
    "ProxyConfig.url",
    "RoomCompositeEgressRequest.custom_base_url",
    "S3Upload.endpoint",
    "StreamDestination.url",
    "StreamInfo.url",
    "StreamOutput.urls",
    "TemplateSource.custom_base_url",
    "TrackEgressRequest.websocket_url",
    "UpdateStreamRequest.add_output_urls",
    "UpdateStreamRequest.remove_output_urls",
    "WebEgressRequest.url",
    "WebSource.url",
    "WebhookConfig.url",
}
#: names, ids, paths, free text: scrubbed of registered secrets and URL credentials
TEXT_FIELDS = {
    "AliOSSUpload.bucket",
    "AliOSSUpload.region",
    "AudioRoute.participant_identity",
    "AudioRoute.track_id",
    "AzureBlobUpload.account_name",
    "AzureBlobUpload.container_name",
    "DirectFileOutput.filepath",
    "EgressInfo.details",
    "EgressInfo.egress_id",
    "EgressInfo.error",
    "EgressInfo.manifest_location",
    "EgressInfo.room_id",
    "EgressInfo.room_name",
    "EncodedFileOutput.filepath",
    "ExportReplayRequest.replay_id",
    "FileInfo.filename",
    "FileInfo.location",
    "FileOutput.filepath",
    "FilterParams.exclude_events",
    "FilterParams.include_events",
    "GCPUpload.bucket",
    "ImageOutput.filename_prefix",
    "ImagesInfo.filename_prefix",
    "MediaSource.video_track_id",
    "ParticipantEgressRequest.identity",
    "ParticipantEgressRequest.room_name",
    "ParticipantVideo.identity",
    "RoomCompositeEgressRequest.layout",
    "RoomCompositeEgressRequest.room_name",
    "S3Upload.assume_role_arn",
    "S3Upload.bucket",
    "S3Upload.content_disposition",
    "S3Upload.metadata",  # map<string, string>: its values
    "S3Upload.region",
    "S3Upload.tagging",
    "SegmentedFileOutput.filename_prefix",
    "SegmentedFileOutput.live_playlist_name",
    "SegmentedFileOutput.playlist_name",
    "SegmentsInfo.live_playlist_location",
    "SegmentsInfo.live_playlist_name",
    "SegmentsInfo.playlist_location",
    "SegmentsInfo.playlist_name",
    "StartEgressRequest.room_name",
    "StreamDestination.id",
    "StreamInfo.error",
    "StreamInfo.id",
    "TemplateSource.layout",
    "TrackCompositeEgressRequest.audio_track_id",
    "TrackCompositeEgressRequest.room_name",
    "TrackCompositeEgressRequest.video_track_id",
    "TrackEgressRequest.room_name",
    "TrackEgressRequest.track_id",
    "UpdateStreamRequest.egress_id",
}
ROOTS = (
    pe.StartEgressRequest,
    pe.ParticipantEgressRequest,
    pe.TrackCompositeEgressRequest,
    pe.TrackEgressRequest,
    pe.RoomCompositeEgressRequest,
    pe.WebEgressRequest,
    pe.EgressInfo,
    pe.StorageConfig,
    pe.UpdateStreamRequest,
)


def string_fields(roots: Iterable[type[Message]]) -> dict[str, FieldDescriptor]:
    """``Message.field`` → descriptor of every string/bytes field (map values by the map's name)."""
    found: dict[str, FieldDescriptor] = {}
    seen: set[str] = set()

    def walk(d: Descriptor) -> None:
        if d.full_name in seen:
            return
        seen.add(d.full_name)
        for f in d.fields:
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                value = f.message_type.fields_by_name["value"]
                if value.message_type is not None:
                    walk(value.message_type)
                elif value.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
                    found[f"{d.name}.{f.name}"] = f
            elif f.message_type is not None:
                walk(f.message_type)
            elif f.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
                found[f"{d.name}.{f.name}"] = f

    for root in roots:
        walk(root.DESCRIPTOR)
    return found


def test_every_string_field_is_classified() -> None:
    fields = string_fields(ROOTS)
    table = {
        **dict.fromkeys(SECRET_FIELDS, FieldKind.SECRET),
        **dict.fromkeys(URL_FIELDS, FieldKind.URL),
        **dict.fromkeys(TEXT_FIELDS, FieldKind.TEXT),
    }
    assert len(table) == len(SECRET_FIELDS) + len(URL_FIELDS) + len(TEXT_FIELDS), "a field is listed twice"
    new = sorted(set(fields) - set(table))
    assert not new, f"string fields not classified yet (add them to this test after checking): {new}"
    assert not sorted(set(table) - set(fields)), "fields gone from livekit-protocol"
    got = {name: redaction.field_kind(fd.name) for name, fd in fields.items()}
    assert got == table


# --- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted", "hidden"),
    [
        # LiveKit's stream key form, as before
        (
            "rtmp://127.0.0.1:1935/live/sk_0123456789abcdefghijkl",
            "rtmp://127.0.0.1:1935/live/{sk_...jkl}",
            None,
        ),
        ("rtmps://h/app/short", "rtmps://h/app/{...}", None),
        ("rtmp://h/a/b/k12345678 live=1", "rtmp://h/a/b/{k...8}", None),
        ("RTMP://h/app/key_0123456789", "RTMP://h/app/{k...9}", None),
        ("rtmp://h/app/key?x=a/b", "rtmp://h/app/{k...b}", ["key?x=a/b"]),
        ("rtmp://bob:hunter22@h/app/key_0123456789", "rtmp://bob:{redacted}@h/app/{k...9}", ["hunter22"]),
        ("mux://mux_stream_key_123", "mux://{mu...23}", ["mux_stream_key_123"]),
        (
            "srt://h:9000?passphrase=pass-phrase-1&streamid=%23%21%3A%3Ar%3Dlive&latency=200",
            "srt://h:9000?passphrase={redacted}&streamid={redacted}&latency=200",
            ["pass-phrase-1", "#!::r=live"],
        ),
        ("wss://h/audio?Token=tok-123&room=r", "wss://h/audio?Token={redacted}&room=r", ["tok-123"]),
        ("https://ghp_0123456789@github.com/x", "https://{redacted}@github.com/x", ["ghp_0123456789"]),
        (
            "http://u:p%40ss@h/p?a=1#access_token=zz",
            "http://u:{redacted}@h/p?a=1#access_token={redacted}",
            ["p@ss"],
        ),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&X-Amz-Security-Token=t0k&X-Amz-Date=1",
            "https://b.s3.amazonaws.com/k?X-Amz-Signature={redacted}&X-Amz-Security-Token={redacted}&X-Amz-Date=1",
            ["abc", "t0k"],
        ),
        (
            "https://acct.blob.core.windows.net/c?sv=1&sig=s1gnature",
            "https://acct.blob.core.windows.net/c?sv=1&sig={redacted}",
            None,
        ),
        ("https://h/page?opaque-token-value", "https://h/page?{redacted}", ["opaque-token-value"]),
        ("https://templates.example/grid/?theme=dark", "https://templates.example/grid/?theme=dark", []),
        ("file:///tmp/page.html", "file:///tmp/page.html", []),
        ("http://[::1/x?token=abc", REDACTED, ["http://[::1/x?token=abc"]),
        ("http://h:99999/x", REDACTED, None),
        ("user:pass@host/x", REDACTED, None),
        ("", "", []),
    ],
)
def test_redact_url(url: str, redacted: str, hidden: list[str] | None) -> None:
    assert redact_url(url) == redacted
    assert redact_url(redacted) == redacted, "idempotent"
    if hidden is not None:
        assert set(hidden) <= set(url_secrets(url))


def test_stream_url_shows_only_the_redacted_form() -> None:
    url = StreamURL("rtmp://bob:hunter22@h/app/sk_0123456789abcdef")
    assert url.redacted == "rtmp://bob:{redacted}@h/app/{sk...ef}"
    assert "hunter22" not in repr(url) and "sk_0123456789abcdef" not in repr(url)


# --- messages ------------------------------------------------------------------------------------

GCP, _ = service_account("http://127.0.0.1:9/token", key_id="pkid-0123456789")


def secret_storage(tag: str) -> dict[str, Message]:
    """One of each store, a distinct secret (containing ``tag``) in every secret-bearing place."""
    return {
        "s3": pe.S3Upload(
            access_key=f"{tag}-s3-access",
            secret=f"{tag}-s3-secret",
            session_token=f"{tag}-s3-session",
            assume_role_external_id=f"{tag}-s3-external",
            endpoint=f"https://epuser:{tag}-ep-pass@s3.example",
            bucket="b",
            metadata={"note": "see https://h/x?token=meta-token-value"},
            proxy=pe.ProxyConfig(
                url=f"http://proxyuser:{tag}-proxy-url-pass@proxy.example:3128",
                username=f"{tag}-proxy-user",
                password=f"{tag}-proxy-pass",
            ),
        ),
        "gcp": pe.GCPUpload(bucket="b", credentials=GCP.replace("pkid", f"{tag}-pkid")),
        "azure": pe.AzureBlobUpload(account_name="acct", account_key=f"{tag}-azure-key", container_name="c"),
    }


def every_request(tag: str) -> list[Message]:
    """Each request type with secrets everywhere a user can put one."""
    stores = secret_storage(tag)
    files = [pe.EncodedFileOutput(filepath=f"{n}.mp4", **{n: m}) for n, m in stores.items()]  # type: ignore[arg-type]
    streams = [
        pe.StreamOutput(
            urls=[f"rtmp://h/app/{tag}-stream-key", f"rtmp://u:{tag}-rtmp-pass@h/app/{tag}-key2"],
            destinations=[
                pe.StreamDestination(id="d1", url=f"srt://h:1?passphrase={tag}-srt&streamid={tag}-sid")
            ],
        )
    ]
    return [
        pe.ParticipantEgressRequest(room_name="r", identity="a", file_outputs=files, stream_outputs=streams),
        pe.TrackCompositeEgressRequest(room_name="r", audio_track_id="TR_a", file_outputs=files),
        pe.TrackEgressRequest(room_name="r", track_id="TR", websocket_url=f"wss://h/x?token={tag}-ws"),
        pe.TrackEgressRequest(
            room_name="r", track_id="TR", file=pe.DirectFileOutput(filepath="x", s3=stores["s3"])
        ),  # type: ignore[arg-type]
        pe.RoomCompositeEgressRequest(
            room_name="r",
            custom_base_url=f"https://tpluser:{tag}-tpl-pass@t.example/?access_token={tag}-tpl",
            file_outputs=files,
            segment_outputs=[pe.SegmentedFileOutput(filename_prefix="s", gcp=stores["gcp"])],  # type: ignore[arg-type]
            image_outputs=[pe.ImageOutput(filename_prefix="i", azure=stores["azure"])],  # type: ignore[arg-type]
        ),
        pe.WebEgressRequest(
            url=f"https://w:{tag}-web-pass@w.example/?token={tag}-web", stream_outputs=streams
        ),
        pe.StartEgressRequest(
            room_name="r",
            web=pe.WebSource(url=f"https://w.example/?key={tag}-websource"),
            storage=pe.StorageConfig(s3=stores["s3"]),  # type: ignore[arg-type]
            outputs=[  # each output's own store, and stream URLs
                pe.Output(file=pe.FileOutput(filepath="f"), storage=pe.StorageConfig(gcp=stores["gcp"])),  # type: ignore[arg-type]
                pe.Output(segments=pe.SegmentedFileOutput(), storage=pe.StorageConfig(azure=stores["azure"])),  # type: ignore[arg-type]
                pe.Output(images=pe.ImageOutput(s3=stores["s3"])),  # type: ignore[arg-type]
                pe.Output(stream=streams[0]),
            ],
            webhooks=[
                pm.WebhookConfig(url=f"https://hook.example/?sig={tag}-hooksig", signing_key=f"{tag}-signing")
            ],
        ),
        pe.UpdateStreamRequest(
            egress_id="EG_x",
            add_output_urls=[f"rtmp://h/app/{tag}-added"],
            remove_output_urls=[f"rtmp://h/app/{tag}-removed"],
        ),
    ]


def test_redact_message_hides_every_secret_of_every_request() -> None:
    tag = "SeCrEt" + secrets.token_hex(4)
    for req in every_request(tag):
        before = MessageToJson(req)
        assert tag in before, "the request does carry secrets"
        copy = type(req)()
        copy.CopyFrom(req)
        redact_message(copy)
        text = str(copy) + MessageToJson(copy)
        assert tag not in text, f"{type(req).__name__}: {text}"
        again = type(copy)()
        again.CopyFrom(copy)
        redact_message(again)
        assert again == copy, "idempotent"
        assert MessageToJson(req) == before, "the caller's request is untouched"
        rest = str(req)  # each secret is known, so logs and errors can be scrubbed of it
        for secret in sorted(redaction.secrets_in(req), key=len, reverse=True):
            rest = rest.replace(secret, "")
        assert tag not in rest, rest


def test_redacted_fields_keep_what_is_not_secret() -> None:
    s3 = secret_storage("t")["s3"]
    assert isinstance(s3, pe.S3Upload)
    redact_message(s3)
    assert (s3.secret, s3.access_key, s3.session_token, s3.assume_role_external_id) == (REDACTED,) * 4
    assert (s3.proxy.username, s3.proxy.password) == (REDACTED, REDACTED)
    assert s3.proxy.url == "http://proxyuser:{redacted}@proxy.example:3128"
    assert s3.endpoint == "https://epuser:{redacted}@s3.example"
    assert s3.bucket == "b" and dict(s3.metadata) == {"note": "see https://h/x?token={redacted}"}


def test_egress_info_and_its_snapshots_are_redacted() -> None:
    req = every_request("tagX1")[0]
    assert isinstance(req, pe.ParticipantEgressRequest)
    info = new_info(req)
    assert "tagX1" not in str(info)
    assert info.participant.stream_outputs[0].urls[0] == "rtmp://h/app/{ta...ey}"
    # anything a recorder later writes into the info is cleaned when it is handed out
    info.error = "rtmp://h/app/tagX1-stream-key: refused; token=tagX1-leak"
    info.stream_results.add(url="rtmp://u:tagX1-p@h/app/tagX1-k", error="x")
    out = snapshot(info)
    assert "tagX1" not in str(out)
    assert snapshot(out) == out


async def test_new_egress_failing_its_config_shows_no_secret() -> None:
    svc = pyegress.EgressService("ws://127.0.0.1:9", "key", "s" * 32)
    req = pe.TrackCompositeEgressRequest(
        room_name="r",
        audio_track_id="TR",
        file_outputs=[pe.EncodedFileOutput(s3=pe.S3Upload(bucket="b", endpoint="ftp://u:pw-in-endpoint@h"))],
    )
    info = await svc.start_track_composite_egress(req)
    listed = await svc.list_egress(pe.ListEgressRequest())
    assert status(info) == "EGRESS_FAILED" and "file_outputs[0].s3.endpoint" in info.error
    assert "pw-in-endpoint" not in str(info) + str(listed)


# --- free text, the registry, errors, repr ----------------------------------------------------------


class Owner:
    """Something that lives as long as a recording (a recorder, a stream sink)."""


def test_registered_secrets_are_scrubbed_while_their_owner_lives() -> None:
    owner = Owner()
    value = "registered-" + secrets.token_hex(6)
    remember(owner, value, "abc")  # too short to look for in text: ignored
    assert scrub(f"x {value} y") == "x {redacted} y"
    assert scrub("abc") == "abc"
    del owner
    gc.collect()
    assert scrub(f"x {value} y") == f"x {value} y"


def test_scrub_hides_urls_pairs_and_jwts_in_text() -> None:
    text = (
        "cannot open 'rtmp://h/app/sk_live_0123456789': refused; see https://x/y?token=abc. "
        "passphrase=p4ss eyJhbGciOi.eyJzdWIi.c2ln key_frame_interval=2 "
        "got extra-secret-value"
    )
    got = scrub(text, ["extra-secret-value"])
    for leak in ("sk_live_0123456789", "abc", "p4ss", "eyJhbGciOi", "extra-secret-value"):
        assert leak not in got
    assert "'rtmp://h/app/{sk...89}'" in got and "y?token={redacted}." in got
    assert "key_frame_interval=2" in got
    assert scrub(got) == got


def test_errors_never_show_a_secret() -> None:
    e = InvalidRequestError("urls[0]", "bad rtmp://u:pw-err@h/app/sk_err_0123456789")
    for text in (str(e), repr(e)):
        assert "pw-err" not in text and "sk_err_0123456789" not in text


def test_config_repr_shows_no_secret() -> None:
    cfg = build_config(
        pe.TrackEgressRequest(room_name="r", track_id="TR", websocket_url="wss://h/x?token=ws-tok")
    )
    assert cfg.websocket_url == "wss://h/x?token=ws-tok"  # the recorder still has the real URL
    assert "ws-tok" not in repr(cfg) and "wss://h/x?token={redacted}" in repr(cfg)


def test_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    owner = Owner()
    value = "registered-" + secrets.token_hex(6)
    remember(owner, value)
    ours = logging.getLogger("pyegress.outputs.stream")
    ours.info("stream %s failed: %s", "rtmp://h/app/sk_log_0123456789", f"auth {value}")
    try:
        raise RuntimeError(f"boom wss://h/?token=tok-in-traceback {value}")
    except RuntimeError:
        ours.exception("egress failed")
    logging.getLogger("botocore.endpoint").debug("headers={'X-Amz-Security-Token': %r}", value)
    logging.getLogger("other").info("visiting https://h/?token=not-ours")  # not a registered secret
    text = caplog.text
    for r in caplog.records:
        text += r.getMessage() + (r.exc_text or "")
        if r.exc_info:
            text += logging.Formatter().formatException(r.exc_info)
    for leak in (value, "sk_log_0123456789", "tok-in-traceback"):
        assert leak not in text
    assert "rtmp://h/app/{sk...89}" in text and "RuntimeError: boom" in text
    assert "token=not-ours" in text, "other libraries' records lose registered secrets only"
    del owner


# --- end to end ----------------------------------------------------------------------------------


def collect_log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    for r in caplog.records:
        parts += [r.getMessage(), r.exc_text or "", r.stack_info or ""]
        if r.exc_info:
            parts.append(logging.Formatter().formatException(r.exc_info))
    return "\n".join(parts)


def assert_clean(what: str, text: str, hidden: Iterable[str]) -> None:
    leaks = [(s, text[max(text.index(s) - 300, 0) : text.index(s) + 100]) for s in hidden if s in text]
    assert not leaks, f"{what} shows {leaks}"


def info_texts(infos: Iterable[pe.EgressInfo]) -> str:
    return "\n".join(str(i) + MessageToJson(i) for i in infos)


@pytest.fixture
def fast_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uploads and RTMP connections that fail do so in a second, not after half a minute."""
    quick = functools.partial(storage_base.RetryPolicy, tries=2, first_delay=0.2, max_delay=0.2)
    monkeypatch.setattr(storage_base, "RetryPolicy", quick)
    monkeypatch.setattr(StreamOutput, "backoff", 0.2)
    monkeypatch.setattr(StreamOutput, "max_retries", 1)


@pytest.fixture
def rtmp() -> Iterator[RtmpServer]:
    server = RtmpServer(tls=False)
    try:
        server.start()
    except RtmpServerError as e:
        pytest.fail(f"cannot start the RTMP server (scripts/install-rtmp-server.sh): {e}", pytrace=False)
    yield server
    server.stop()


@pytest.mark.integration
async def test_no_secret_of_a_recording_shows_anywhere(
    livekit_server: LiveKitServer,
    minio: MinioServer,
    rtmp: RtmpServer,
    bucket_name: str,
    room_name: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    fast_failures: None,
) -> None:
    minio.make_bucket(bucket_name)  # the test's own S3 calls are not logged at DEBUG
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="pyegress")
    tag = secrets.token_hex(4)
    s = {
        name: f"{name}-{tag}-{secrets.token_hex(6)}"
        for name in (
            "external_id",
            "bad_secret",
            "session_token",
            "proxy_user",
            "proxy_pass",
            "stream_key",
            "rtmp_pass",
            "rtmp_key2",
            "srt_pass",
            "srt_sid",
            "ws_token",
            "signing_key",
            "signing_secret",
            "hook_token",
        )
    }
    s["azure_key"] = base64.b64encode(secrets.token_bytes(32)).decode()
    closed = free_port()  # nothing listens there: the stores and URLs that use it fail
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AZURE_STORAGE_BLOB_ENDPOINT", f"http://127.0.0.1:{closed}/acct")
    creds, creds_parts = service_account(f"http://127.0.0.1:{closed}/token")
    hidden = [
        *s.values(),
        minio.access_key,
        minio.secret_key,
        livekit_server.api_secret,
        creds,
        *creds_parts,
    ]
    good_s3 = minio.upload_message(bucket_name, assume_role_external_id=s["external_id"])
    bad_s3 = minio.upload_message(
        bucket_name,
        secret=s["bad_secret"],
        session_token=s["session_token"],
        proxy=pe.ProxyConfig(url=minio.endpoint, username=s["proxy_user"], password=s["proxy_pass"]),
    )
    infos: list[pe.EgressInfo] = []
    errors: list[BaseException] = []
    async with (
        pyegress.EgressService(
            livekit_server.url,
            livekit_server.api_key,
            livekit_server.api_secret,
            output_dir=tmp_path,
            wait_timeout=4.0,
            webhook_keys={s["signing_key"]: s["signing_secret"]},  # the key a request signs with
        ) as svc,
        publisher(livekit_server, room_name) as pub,
    ):
        req = pe.ParticipantEgressRequest(
            room_name=room_name,
            identity="alice",
            advanced=pe.EncodingOptions(width=320, height=180, framerate=15, video_bitrate=300),
            file_outputs=[
                pe.EncodedFileOutput(filepath="s3-good.mp4", s3=good_s3),
                pe.EncodedFileOutput(filepath="s3-bad.mp4", s3=bad_s3),
                pe.EncodedFileOutput(filepath="gcp.mp4", gcp=pe.GCPUpload(bucket="b", credentials=creds)),
                pe.EncodedFileOutput(
                    filepath="azure.mp4",
                    azure=pe.AzureBlobUpload(
                        account_name="acct", account_key=s["azure_key"], container_name="c"
                    ),
                ),
            ],
            stream_outputs=[
                pe.StreamOutput(
                    urls=[
                        rtmp.url(s["stream_key"]),
                        f"rtmp://rtmpuser:{s['rtmp_pass']}@127.0.0.1:{closed}/live/{s['rtmp_key2']}",
                    ]
                )
            ],
        )
        started = await svc.start_participant_egress(req)
        ws = await svc.start_track_egress(
            pe.TrackEgressRequest(
                room_name=room_name,
                track_id=pub.audio_track_sid,
                websocket_url=f"ws://127.0.0.1:{closed}/audio?token={s['ws_token']}",
            )
        )
        infos += [started, ws]
        bad_srt = await svc.start_participant_egress(
            pe.ParticipantEgressRequest(
                room_name=room_name,
                identity="alice",
                stream_outputs=[  # refused: an SRT URL has no path
                    pe.StreamOutput(
                        urls=[f"srt://127.0.0.1:9000/x?passphrase={s['srt_pass']}&streamid={s['srt_sid']}"]
                    )
                ],
            )
        )
        assert status(bad_srt) == "EGRESS_FAILED" and bad_srt.error.startswith("stream_outputs[0].urls[0]")
        infos.append(bad_srt)
        for bad in (
            svc.start_egress(
                pe.StartEgressRequest(
                    room_name=room_name,
                    preset=pe.PASSTHROUGH,
                    webhooks=[
                        pm.WebhookConfig(
                            url=f"http://127.0.0.1:{closed}/hook?token={s['hook_token']}",
                            signing_key=s["signing_key"],
                        )
                    ],
                )
            ),
        ):
            with pytest.raises(NotSupportedError) as refused:
                await bad
            errors.append(refused.value)
        active = await wait_active(svc, started.egress_id)
        assert status(active) == "EGRESS_ACTIVE", active.error
        recorder = svc.recorder(started.egress_id)
        reprs = [repr(svc), repr(recorder), repr(recorder.config), *map(repr, recorder.outputs)]
        await asyncio.sleep(3.0)
        infos += (await svc.list_egress(pe.ListEgressRequest())).items
        final = await svc.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
        infos += [final, await svc.wait_egress(ws.egress_id, timeout=15)]
        infos += (await svc.list_egress(pe.ListEgressRequest())).items
        reprs += [repr(svc), repr(recorder), repr(recorder.config)]

    logs = collect_log_text(caplog)
    caplog.set_level(logging.WARNING)
    # the recording really ran: a file uploaded with its manifest, the failing outputs said why
    assert final.file_results[0].location == f"{minio.endpoint}/{bucket_name}/s3-good.mp4", final.error
    assert json.loads(minio.read(bucket_name, "s3-good.mp4.json"))["egress_id"] == final.egress_id
    assert final.backup_storage_used, final.error
    for name in ("file_outputs[1]", "file_outputs[2]", "file_outputs[3]"):
        assert name in final.error, final.error
    good, bad = final.stream_results
    assert good.status == pe.StreamInfo.FINISHED and bad.status == pe.StreamInfo.FAILED and bad.error
    assert rtmp.recorded(s["stream_key"]), "the stream with a key was sent"
    ws_final = last_info(infos, ws.egress_id)
    assert status(ws_final) == "EGRESS_FAILED" and ws_final.error.startswith("websocket_url"), ws_final.error

    manifests = [p.read_text() for p in tmp_path.rglob("*.json")]
    assert len(manifests) == 4, manifests
    manifests.append(minio.read(bucket_name, "s3-good.mp4.json").decode())
    assert_clean("EgressInfo", info_texts(infos), hidden)
    assert_clean("a manifest", "\n".join(manifests), hidden)
    assert_clean("an error", "\n".join(f"{e} {e!r}" for e in errors), hidden)
    assert_clean("a repr", "\n".join(reprs), hidden)
    assert_clean("a log record", logs, hidden)
    assert "pyegress.outputs.stream" in logs and "botocore" in logs, "the logs were captured"


def last_info(infos: list[pe.EgressInfo], egress_id: str) -> pe.EgressInfo:
    return [i for i in infos if i.egress_id == egress_id][-1]


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """The test pages on 127.0.0.1."""
    app = web.Application()
    app.router.add_static("/", PAGES)
    runner = web.AppRunner(app)
    await runner.setup()
    server = web.TCPSite(runner, "127.0.0.1", 0)
    await server.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.integration
async def test_no_secret_of_a_web_or_template_egress_shows_anywhere(
    livekit_server: LiveKitServer,
    site: str,
    room_name: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    find_chromium()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="pyegress")
    s = {
        name: f"{name}-{secrets.token_hex(8)}" for name in ("web_pass", "web_token", "tpl_token", "tpl_pass")
    }
    hidden = [*s.values(), livekit_server.api_secret]
    small = pe.EncodingOptions(width=320, height=180, framerate=15, video_bitrate=300)
    infos: list[pe.EgressInfo] = []
    stopped: list[pe.EgressInfo] = []
    reprs: list[str] = []
    async with pyegress.EgressService(
        livekit_server.url,
        livekit_server.api_key,
        livekit_server.api_secret,
        output_dir=tmp_path,
        wait_timeout=5.0,
    ) as svc:
        web_req = pe.WebEgressRequest(
            url=f"http://viewer:{s['web_pass']}@{site}/animated.html?token={s['web_token']}",
            await_start_signal=True,
            advanced=small,
            file_outputs=[pe.EncodedFileOutput(filepath="web.mp4")],
        )
        async with publisher(livekit_server, room_name):
            tpl_req = pe.RoomCompositeEgressRequest(
                room_name=room_name,
                custom_base_url=f"http://tpl:{s['tpl_pass']}@{site}/animated.html?access_token={s['tpl_token']}",
                advanced=small,
                file_outputs=[pe.EncodedFileOutput(filepath="template.mp4")],
            )
            for start in (svc.start_web_egress(web_req), svc.start_room_composite_egress(tpl_req)):
                started = await start
                active = await wait_active(svc, started.egress_id, timeout=30)
                assert status(active) == "EGRESS_ACTIVE", active.error
                recorder = svc.recorder(started.egress_id)
                reprs += [repr(svc), repr(recorder), repr(recorder.config)]
                await asyncio.sleep(2.0)
                infos += (await svc.list_egress(pe.ListEgressRequest())).items
                stopped.append(await svc.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id)))
    assert [status(i) for i in stopped] == ["EGRESS_COMPLETE"] * 2, [i.error for i in stopped]
    infos += stopped
    manifests = [p.read_text() for p in tmp_path.rglob("*.json")]
    assert len(manifests) == 2
    assert_clean("EgressInfo", info_texts(infos), hidden)
    assert_clean("a manifest", "\n".join(manifests), hidden)
    assert_clean("a repr", "\n".join(reprs), hidden)
    assert_clean("a log record", collect_log_text(caplog), hidden)


def test_an_owner_finalized_while_the_pattern_is_built_does_not_hang() -> None:
    """Compiling the pattern can let the garbage collector finalize an owner on the same
    thread: its ``_drop`` must get in (a whole test run once hung there)."""
    import threading

    def build_while_dropping() -> None:
        with redaction._lock:  # as _registered holds it
            redaction._drop(-1)  # as a finalizer run by the collector does

    t = threading.Thread(target=build_while_dropping, daemon=True)
    t.start()
    t.join(2.0)
    assert not t.is_alive(), "a finalizer blocked on the redaction lock"
