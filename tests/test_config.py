"""Request validation, presets and filename templates (no server needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

from pyegress.cli import infer_type, parse_request
from pyegress.config import FileType, Kind, audio_for, build_config
from pyegress.errors import InvalidRequestError, NotSupportedError
from pyegress.filenames import resolve_path, time_values
from pyegress.info import REDACTED, new_info

OUT = [pe.EncodedFileOutput(filepath="x.mp4")]


def tc(**kw: object) -> pe.TrackCompositeEgressRequest:
    base: dict[str, object] = {"room_name": "r", "audio_track_id": "TR_a", "video_track_id": "TR_v"}
    base.update(kw)
    if "file_outputs" not in base and "file" not in base:
        base["file_outputs"] = OUT
    return pe.TrackCompositeEgressRequest(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("preset", "size", "fps", "kbps"),
    [
        (pe.H264_720P_30, (1280, 720), 30, 3000),
        (pe.H264_720P_60, (1280, 720), 60, 4500),
        (pe.H264_1080P_30, (1920, 1080), 30, 4500),
        (pe.H264_1080P_60, (1920, 1080), 60, 6000),
        (pe.PORTRAIT_H264_720P_30, (720, 1280), 30, 3000),
        (pe.PORTRAIT_H264_720P_60, (720, 1280), 60, 4500),
        (pe.PORTRAIT_H264_1080P_30, (1080, 1920), 30, 4500),
        (pe.PORTRAIT_H264_1080P_60, (1080, 1920), 60, 6000),
    ],
)
def test_every_h264_preset(preset: int, size: tuple[int, int], fps: int, kbps: int) -> None:
    cfg = build_config(tc(preset=preset))
    assert cfg.video is not None
    assert (cfg.video.width, cfg.video.height, cfg.video.fps, cfg.video.bitrate_kbps) == (*size, fps, kbps)
    assert cfg.video.codec == "h264"


def test_default_is_720p30_aac() -> None:
    cfg = build_config(tc())
    assert cfg.kind is Kind.TRACK_COMPOSITE
    assert cfg.video is not None and (cfg.video.width, cfg.video.height, cfg.video.fps) == (1280, 720, 30)
    assert cfg.audio is not None and (cfg.audio.codec, cfg.audio.sample_rate) == ("aac", 44100)


def test_advanced_options() -> None:
    adv = pe.EncodingOptions(
        width=640,
        height=480,
        framerate=25,
        video_codec=pm.H264_HIGH,
        video_bitrate=1200,
        key_frame_interval=2,
        audio_codec=pm.OPUS,
        audio_bitrate=64,
        audio_frequency=48000,
    )
    cfg = build_config(tc(advanced=adv))
    assert cfg.video is not None and cfg.audio is not None
    v, a = cfg.video, cfg.audio
    assert (v.width, v.height, v.fps, v.profile, v.bitrate_kbps, v.gop) == (640, 480, 25, "high", 1200, 50)
    assert (a.codec, a.bitrate_kbps, a.sample_rate) == ("opus", 64, 48000)


def test_passthrough_preset_writes_the_senders_codecs_into_files() -> None:
    cfg = build_config(pe.ParticipantEgressRequest(room_name="r", identity="a", preset=pe.PASSTHROUGH,
                                                   file_outputs=OUT))  # fmt: skip
    assert cfg.passthrough and cfg.kind is Kind.PARTICIPANT
    assert [f.file_type for f in cfg.files] == [FileType.AUTO]  # MP4 for H.264, WebM for VP8
    audio = build_config(tc(video_track_id="", preset=pe.PASSTHROUGH,
                            file_outputs=[pe.EncodedFileOutput(file_type=pe.OGG)]))  # fmt: skip
    assert audio.passthrough and audio.video is None and [f.file_type for f in audio.files] == [FileType.AUTO]
    assert not build_config(tc()).passthrough


def test_a_unified_camera_and_microphone_source_is_written_as_sent() -> None:
    def unified(source: pe.MediaSource) -> pe.StartEgressRequest:
        out = pe.Output(file=pe.FileOutput(filepath="x"))
        return pe.StartEgressRequest(room_name="r", media=source, preset=pe.PASSTHROUGH, outputs=[out])

    mine = pe.AudioConfig(routes=[pe.AudioRoute(participant_identity="alice")])
    cfg = build_config(
        unified(pe.MediaSource(participant_video=pe.ParticipantVideo(identity="alice"), audio=mine))
    )
    assert (cfg.kind, cfg.identity, cfg.passthrough) == (Kind.PARTICIPANT, "alice", True)
    assert [f.file_type for f in cfg.files] == [FileType.AUTO]
    track = pe.AudioConfig(routes=[pe.AudioRoute(track_id="TR_a")])
    cfg = build_config(unified(pe.MediaSource(video_track_id="TR_v", audio=track)))
    assert (cfg.kind, cfg.video_track_id, cfg.audio_track_id) == (Kind.TRACK_COMPOSITE, "TR_v", "TR_a")
    left = pe.AudioConfig(routes=[pe.AudioRoute(track_id="TR_a", channel=pe.AUDIO_CHANNEL_LEFT)])
    with pytest.raises(NotSupportedError, match=r"^media.audio: not recordable as sent"):  # a channel: a mix
        build_config(unified(pe.MediaSource(video_track_id="TR_v", audio=left)))


@pytest.mark.parametrize(
    ("req", "field"),
    [
        (tc(room_name=""), "room_name"),
        (tc(audio_track_id="", video_track_id=""), "audio_track_id"),
        (tc(advanced=pe.EncodingOptions(width=641, height=360)), "advanced.width"),
        (tc(advanced=pe.EncodingOptions(framerate=500)), "advanced.framerate"),
        (tc(advanced=pe.EncodingOptions(audio_frequency=12345)), "advanced.audio_frequency"),
        (pe.RoomCompositeEgressRequest(room_name="r", preset=pe.PASSTHROUGH, file_outputs=OUT), "preset"),
        (tc(preset=pe.PASSTHROUGH, segment_outputs=[pe.SegmentedFileOutput()]), "segment_outputs[0]"),
        (
            tc(preset=pe.PASSTHROUGH, file_outputs=[pe.EncodedFileOutput(file_type=pe.OGG)]),
            "file_outputs[0].file_type",
        ),
        (
            tc(preset=pe.PASSTHROUGH, file_outputs=[pe.EncodedFileOutput(file_type=pe.MP3)]),
            "file_outputs[0].file_type",
        ),
        (tc(file_outputs=[pe.EncodedFileOutput(file_type=pe.OGG)]), "file_outputs[0].file_type"),
        (tc(file_outputs=[pe.EncodedFileOutput(filepath="{nope}.mp4")]), "file_outputs[0].filepath"),
        (tc(file_outputs=[]), "file_outputs"),
        (pe.ParticipantEgressRequest(room_name="r", file_outputs=OUT), "identity"),
        (pe.TrackEgressRequest(room_name="r", file=pe.DirectFileOutput()), "track_id"),
    ],
)
def test_bad_requests_name_the_field(req: object, field: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        build_config(req)  # type: ignore[arg-type]
    assert err.value.field == field
    assert field in str(err.value)


def test_custom_base_url_is_a_template() -> None:
    cfg = build_config(
        pe.RoomCompositeEgressRequest(
            room_name="r",
            layout="my-own-layout",  # a template's layouts are its own: not checked
            custom_base_url="http://127.0.0.1/grid/",
            file_outputs=[pe.EncodedFileOutput()],
        )
    )
    assert cfg.web_url == "http://127.0.0.1/grid/" and cfg.layout == "my-own-layout"
    with pytest.raises(InvalidRequestError, match="custom_base_url"):
        build_config(pe.RoomCompositeEgressRequest(room_name="r", custom_base_url="javascript:alert(1)"))


def test_srt_stream_outputs_are_taken() -> None:
    cfg = build_config(tc(stream_outputs=[pe.StreamOutput(protocol=pe.SRT, urls=["srt://127.0.0.1:9000"])]))
    assert [u.url for u in cfg.streams[0].urls] == ["srt://127.0.0.1:9000"]


def test_audio_only_track_composite_ogg_uses_opus() -> None:
    cfg = build_config(tc(video_track_id="", file_outputs=[pe.EncodedFileOutput(file_type=pe.OGG)]))
    assert cfg.video is None and cfg.audio is not None and cfg.audio.codec == "opus"
    assert cfg.files[0].file_type is FileType.OGG


def test_legacy_file_field() -> None:
    cfg = build_config(tc(file=pe.EncodedFileOutput(filepath="legacy.mp4"), file_outputs=[]))
    assert [f.filepath for f in cfg.files] == ["legacy.mp4"]


VALUES = {"room_name": "my room", "publisher_identity": "alice/../x", "track_type": "video", **time_values()}


def _resolve(template: str, tmp_path: Path, ext: str = ".mp4") -> Path:
    return resolve_path(
        template, values=VALUES, output_dir=tmp_path, default_stem="gen", extension=ext, field="f"
    )


def test_templates_expand_and_stay_inside(tmp_path: Path) -> None:
    p = _resolve("{room_name}/{publisher_identity}-{track_type}", tmp_path)
    assert p == tmp_path / "my_room" / "alice_.._x-video.mp4"
    assert _resolve("", tmp_path) == tmp_path / "gen.mp4"
    assert _resolve("sub/", tmp_path) == tmp_path / "sub" / "gen.mp4"
    assert _resolve("a.ogg", tmp_path, ".ogg") == tmp_path / "a.ogg"
    assert _resolve(str(tmp_path / "abs.mp4"), tmp_path) == tmp_path / "abs.mp4"
    assert _resolve("{utc}", tmp_path).stem.isdigit()


@pytest.mark.parametrize("bad", ["../x.mp4", "a/../../x.mp4", "/etc/x.mp4"])
def test_path_escaping_output_folder_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidRequestError, match="escapes the output folder"):
        _resolve(bad, tmp_path)


def test_secrets_are_redacted_in_info() -> None:
    s3 = pe.S3Upload(access_key="AK", secret="very-secret", bucket="b", region="r")
    req = tc(file_outputs=[pe.EncodedFileOutput(filepath="x.mp4", s3=s3)])
    info = new_info(req)
    text = str(info)
    assert "very-secret" not in text and "AK" not in text.replace("TRACK", "")
    assert info.track_composite.file_outputs[0].s3.secret == REDACTED
    assert req.file_outputs[0].s3.secret == "very-secret"  # the caller's request is untouched
    assert "very-secret" not in repr(build_config(req))


def test_cli_infers_type_like_lk() -> None:
    assert infer_type({"room_name": "r", "identity": "a"}) == "participant"
    assert infer_type({"roomName": "r", "audioTrackId": "TR"}) == "track-composite"
    assert infer_type({"room_name": "r", "track_id": "TR"}) == "track"
    assert infer_type({"room_name": "r", "layout": "grid"}) == "room-composite"
    kind, req = parse_request(
        '{"roomName": "r", "identity": "a", "fileOutputs": [{"fileType": "MP4"}]}', None
    )
    assert kind == "participant" and req.file_outputs[0].file_type == pe.MP4


def test_the_command_ends_with_its_status_and_output_and_names_an_unreadable_request(tmp_path: Path) -> None:
    """``python -m pyegress.cli`` (and the console script) end without the interpreter's teardown:
    what they printed into a pipe must still arrive, with the status ``main`` gave."""
    cmd = [sys.executable, "-m", "pyegress.cli"]
    shown = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: pyegress"), shown
    missing = tmp_path / "absent.json"
    refused = subprocess.run([*cmd, "record", str(missing)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1, refused
    assert refused.stderr.strip() == f"request: cannot read {missing}: No such file or directory"
    usage = subprocess.run([*cmd, "nonsense"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "invalid choice: 'nonsense'" in usage.stderr, usage


def test_room_composite_config() -> None:
    req = pe.RoomCompositeEgressRequest(room_name="r", layout="grid-light", audio_only=True, file_outputs=OUT)
    cfg = build_config(req)
    assert cfg.kind is Kind.ROOM_COMPOSITE and cfg.video is None and cfg.audio is not None
    with pytest.raises(InvalidRequestError, match="layout"):
        build_config(pe.RoomCompositeEgressRequest(room_name="r", layout="mosaic", file_outputs=OUT))
    with pytest.raises(InvalidRequestError, match="video_only"):
        build_config(
            pe.RoomCompositeEgressRequest(room_name="r", audio_only=True, video_only=True, file_outputs=OUT)
        )


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        (
            {"segment_outputs": [pe.SegmentedFileOutput(filename_prefix="../x")]},
            "segment_outputs[0].filename_prefix",
        ),
        (
            {"segment_outputs": [pe.SegmentedFileOutput(playlist_name="../../p")]},
            "segment_outputs[0].playlist_name",
        ),
        (
            {"image_outputs": [pe.ImageOutput(filename_prefix="../shots/x")]},
            "image_outputs[0].filename_prefix",
        ),
        (
            {"file_outputs": [pe.EncodedFileOutput(filepath="{room_name}/../../x.mp4")]},
            "file_outputs[0].filepath",
        ),
    ],
)
def test_every_output_path_is_checked_before_joining(
    tmp_path: Path, kw: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidRequestError, match="escapes the output folder") as err:
        build_config(tc(**kw), output_dir=tmp_path)
    assert err.value.field == field


def test_absolute_paths_are_jailed_only_by_a_chosen_output_folder(tmp_path: Path) -> None:
    absolute = str(tmp_path / "rec" / "{room_name}.mp4")
    cfg = build_config(tc(file_outputs=[pe.EncodedFileOutput(filepath=absolute)]))
    assert cfg.output_dir == Path.cwd().resolve() and not cfg.jail
    with pytest.raises(InvalidRequestError, match="escapes the output folder"):  # relative stays under cwd
        build_config(tc(file_outputs=[pe.EncodedFileOutput(filepath="../x.mp4")]))
    with pytest.raises(InvalidRequestError, match="escapes the output folder"):
        build_config(tc(file_outputs=[pe.EncodedFileOutput(filepath=absolute)]), output_dir=tmp_path / "jail")


def test_the_audio_codec_follows_each_carrier() -> None:
    cfg = build_config(
        tc(
            file_outputs=[pe.EncodedFileOutput(filepath="a.mp4")],
            segment_outputs=[pe.SegmentedFileOutput(filename_prefix="s")],
            advanced=pe.EncodingOptions(audio_codec=pm.OPUS),
        )
    )
    assert cfg.audio is not None and cfg.audio.codec == "opus"  # MP4 keeps what was asked for
    assert audio_for(cfg.audio, ".mp4") == cfg.audio
    assert audio_for(cfg.audio, "hls").codec == "aac"  # type: ignore[union-attr]
    assert audio_for(cfg.audio, ".mp3").codec == "mp3"  # type: ignore[union-attr]
    assert audio_for(None, ".ogg") is None
