"""Output parsing, naming, redaction, playlists and segmenting/imaging of real encodes (no server)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

from pyegress.config import (
    FileType,
    ImageSuffix,
    SegmentSuffix,
    SegmentTarget,
    StreamURL,
    build_config,
    check_stream_url,
    redact_stream_url,
)
from pyegress.errors import InvalidRequestError
from pyegress.info import new_info
from pyegress.media.encoder import AudioEncoder, VideoEncoder
from pyegress.media.encoding import AudioEncoding, VideoEncoding
from pyegress.outputs import FileOutput, ImageOutput, SegmentOutput, StreamOutput
from pyegress.outputs.factory import after_retry
from pyegress.outputs.fmp4 import CannotContinue, resume_point
from pyegress.outputs.images import image_name
from pyegress.outputs.segments import Segment, SegmentPaths, render_playlist, segment_name, segment_paths
from pyegress.pipeline import Pipeline
from pyegress.testing import probe

URL = "rtmp://127.0.0.1:1935/live/sk_0123456789abcdefghijkl"


def part(**kw: object) -> pe.ParticipantEgressRequest:
    return pe.ParticipantEgressRequest(room_name="r", identity="a", **kw)  # type: ignore[arg-type]


def test_outputs_of_every_kind_are_typed() -> None:
    cfg = build_config(
        part(
            segment_outputs=[pe.SegmentedFileOutput(filename_prefix="s", filename_suffix=pe.TIMESTAMP)],
            stream_outputs=[
                pe.StreamOutput(urls=[URL], destinations=[pe.StreamDestination(id="d1", url=URL + "x")])
            ],
            image_outputs=[pe.ImageOutput(filename_suffix=pe.IMAGE_SUFFIX_NONE_OVERWRITE)],
        )
    )
    assert not cfg.files
    (seg,) = cfg.segments
    assert seg.segment_duration == 4 and seg.suffix is SegmentSuffix.TIMESTAMP  # LiveKit's default
    assert [u.id for u in cfg.streams[0].urls] == ["", "d1"]
    (img,) = cfg.images
    assert img.capture_interval == 10 and img.suffix is ImageSuffix.NONE_OVERWRITE
    assert cfg.video is not None and cfg.video.keyframe_interval == 4.0


def test_key_frame_interval_follows_the_segments_unless_given() -> None:
    segs = [pe.SegmentedFileOutput(segment_duration=4), pe.SegmentedFileOutput(segment_duration=6)]
    cfg = build_config(part(segment_outputs=segs))
    assert cfg.video is not None and cfg.video.keyframe_interval == 2.0  # GCD: both cut on key frames
    cfg = build_config(part(segment_outputs=segs[:1], advanced=pe.EncodingOptions(key_frame_interval=1)))
    assert cfg.video is not None and cfg.video.keyframe_interval == 1.0


def test_legacy_single_outputs_of_track_composite() -> None:
    req = pe.TrackCompositeEgressRequest(
        room_name="r", video_track_id="TR_v", stream=pe.StreamOutput(urls=[URL])
    )
    assert build_config(req).streams[0].field == "stream"
    req = pe.TrackCompositeEgressRequest(
        room_name="r", video_track_id="TR_v", segments=pe.SegmentedFileOutput(segment_duration=3)
    )
    assert build_config(req).segments[0].segment_duration == 3


@pytest.mark.parametrize(
    ("req", "field"),
    [
        (part(stream_outputs=[pe.StreamOutput(urls=["rtmp://host/onlykey"])]), "stream_outputs[0].urls[0]"),
        (part(stream_outputs=[pe.StreamOutput(urls=["https://a/b/c"])]), "stream_outputs[0].urls[0]"),
        (part(stream_outputs=[pe.StreamOutput()]), "stream_outputs[0].urls"),
        (part(stream_outputs=[pe.StreamOutput(urls=[URL, URL])]), "stream_outputs[0].urls"),
        (
            part(
                advanced=pe.EncodingOptions(video_codec=pm.VP8),
                stream_outputs=[pe.StreamOutput(urls=[URL])],
            ),
            "stream_outputs[0]",
        ),
        (
            part(
                advanced=pe.EncodingOptions(video_codec=pm.VP8),
                segment_outputs=[pe.SegmentedFileOutput()],
            ),
            "segment_outputs[0]",
        ),
        (part(image_outputs=[pe.ImageOutput(width=321)]), "image_outputs[0].width"),
        (part(image_outputs=[pe.ImageOutput(filename_prefix="{nope}")]), "image_outputs[0].filename_prefix"),
        (
            part(segment_outputs=[pe.SegmentedFileOutput(playlist_name="a.m3u8", live_playlist_name="a")]),
            "segment_outputs[0].live_playlist_name",
        ),
        (part(file_outputs=[pe.EncodedFileOutput(file_type=pe.MP3)]), "file_outputs[0].file_type"),
        (
            pe.TrackCompositeEgressRequest(
                room_name="r", audio_track_id="TR_a", image_outputs=[pe.ImageOutput()]
            ),
            "image_outputs[0]",
        ),
        (pe.TrackEgressRequest(room_name="r", track_id="TR", websocket_url="http://x"), "websocket_url"),
    ],
)
def test_errors_name_the_field(req: pe.ParticipantEgressRequest, field: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        build_config(req)
    assert err.value.field == field
    assert "sk_0123456789" not in str(err.value)


def test_stream_protocols_and_their_urls() -> None:
    """SRT URLs are taken like RTMP ones; as in LiveKit, one output's URLs are all of its protocol."""
    srt = "srt://h:9000?passphrase=pass-phrase-1&latency=200"
    cfg = build_config(part(stream_outputs=[pe.StreamOutput(protocol=pe.SRT, urls=[srt])]))
    assert cfg.streams[0].urls[0].url == srt
    assert build_config(part(stream_outputs=[pe.StreamOutput(urls=[srt])])).streams[0].urls[0].url == srt
    mixed = [
        (pe.StreamOutput(protocol=pe.SRT, urls=["rtmp://h/live/sk_0123456789"]), "stream_outputs[0].urls[0]"),
        (pe.StreamOutput(protocol=pe.RTMP, urls=[srt]), "stream_outputs[0].urls[0]"),
        (pe.StreamOutput(urls=[srt, "rtmp://h/live/sk_0123456789"]), "stream_outputs[0].urls[1]"),
        (pe.StreamOutput(urls=["srt://h?passphrase=pass-phrase-1"]), "stream_outputs[0].urls[0]"),  # no port
        (pe.StreamOutput(protocol=99, urls=[srt]), "stream_outputs[0].protocol"),  # type: ignore[arg-type]
    ]
    for out, field in mixed:
        with pytest.raises(InvalidRequestError) as err:
            build_config(part(stream_outputs=[out]))
        assert err.value.field == field and "pass-phrase-1" not in str(err.value), err.value
    assert check_stream_url("twitch://live_123_abc", "urls[0]") == "twitch://live_123_abc"
    with pytest.raises(InvalidRequestError, match="twitch://<stream_key>"):
        check_stream_url("twitch://key/extra", "urls[0]")


def test_mp3_and_websocket_configs() -> None:
    req = pe.TrackCompositeEgressRequest(
        room_name="r", audio_track_id="TR_a", file_outputs=[pe.EncodedFileOutput(file_type=pe.MP3)]
    )
    assert build_config(req).files[0].file_type is FileType.MP3
    cfg = build_config(pe.TrackEgressRequest(room_name="r", track_id="TR", websocket_url="wss://h/x"))
    assert cfg.websocket_url == "wss://h/x" and not cfg.files


def test_stream_keys_are_redacted() -> None:
    assert redact_stream_url(URL) == "rtmp://127.0.0.1:1935/live/{sk_...jkl}"
    assert redact_stream_url("rtmps://h/app/short") == "rtmps://h/app/{...}"  # short keys: nothing shown
    assert redact_stream_url("rtmp://h/a/b/k12345678 live=1") == "rtmp://h/a/b/{k...8}"
    assert repr(StreamURL(URL)).count("sk_0123") == 0
    assert check_stream_url("mux://abc", "u") == "rtmps://global-live.mux.com:443/app/abc"
    info = new_info(part(stream_outputs=[pe.StreamOutput(urls=[URL])]))
    assert "sk_0123456789" not in str(info) and "{sk_...jkl}" in str(info)


def target(**kw: object) -> SegmentTarget:
    base: dict[str, object] = {
        "field": "segment_outputs[0]",
        "filename_prefix": "",
        "playlist_name": "",
        "live_playlist_name": "",
        "segment_duration": 2,
        "suffix": SegmentSuffix.INDEX,
        "disable_manifest": False,
    }
    base.update(kw)
    return SegmentTarget(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "playlist", "prefix", "live"),
    [
        ({}, "gen.m3u8", "gen", None),
        ({"filename_prefix": "a/seg"}, "a/seg.m3u8", "a/seg", None),
        ({"playlist_name": "p/list.m3u8"}, "p/list.m3u8", "p/list", None),
        ({"playlist_name": "p/list", "filename_prefix": "s"}, "p/list.m3u8", "p/s", None),
        ({"playlist_name": "list", "filename_prefix": "d/s"}, "d/list.m3u8", "d/s", None),
        ({"playlist_name": "{room_name}", "live_playlist_name": "x/live.m3u8"}, "rm.m3u8", "rm", "live.m3u8"),
    ],
)
def test_segment_names_follow_livekit(
    tmp_path: Path, kw: dict[str, str], playlist: str, prefix: str, live: str | None
) -> None:
    paths = segment_paths(target(**kw), {"room_name": "rm"}, tmp_path, "gen")
    assert paths.playlist == tmp_path / playlist and paths.prefix == tmp_path / prefix
    assert paths.live_playlist == (tmp_path / live if live else None)
    with pytest.raises(InvalidRequestError, match="escapes"):
        segment_paths(target(filename_prefix="../x"), {}, tmp_path, "gen")


def test_segment_and_image_names() -> None:
    wall = 1706745599.123  # 2024-01-31T23:59:59.123Z
    assert segment_name("p", SegmentSuffix.INDEX, 7, wall) == "p_00007.ts"
    assert segment_name("p", SegmentSuffix.TIMESTAMP, 7, wall) == "p_20240131235959123.ts"
    assert image_name("i", ImageSuffix.INDEX, 3, wall) == "i_00003.jpeg"
    assert image_name("i", ImageSuffix.TIMESTAMP, 3, wall) == "i_20240131235959123.jpeg"
    assert image_name("i", ImageSuffix.NONE_OVERWRITE, 3, wall) == "i.jpeg"


def test_playlists() -> None:
    segs = [Segment(f"s_{i:05d}.ts", Path(), 2.0 * i, 2.0, 10, 0.0) for i in range(7)]
    event = render_playlist(segs, target=2, ended=False)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in event and "#EXT-X-ENDLIST" not in event
    assert event.count("#EXTINF:2.000000,") == 7
    live = render_playlist(segs[-5:], target=2, ended=True, live=True, first_index=2)
    assert "#EXT-X-MEDIA-SEQUENCE:2" in live and "PLAYLIST-TYPE" not in live
    assert live.rstrip().endswith("#EXT-X-ENDLIST") and live.count("#EXTINF") == 5


def encode_into(outputs: list[FileOutput | SegmentOutput | ImageOutput], seconds: float) -> Pipeline:
    """Drive a real Pipeline's encoders and output hooks by hand, without a clock or a room."""
    pipe = Pipeline(outputs=outputs, video_input=None, audio_inputs=[], fps=30)
    pipe.fps = 30
    pipe.open()
    for k in range(round(seconds * 30)):
        arr = np.full((270, 320), 16 + (k * 7) % 200, np.uint8)
        t = np.arange(round(k / 30 * 48000), round((k + 1) / 30 * 48000)) / 48000
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        pipe._encode(k, av.VideoFrame.from_ndarray(arr, format="yuv420p"), np.stack([tone, tone], 1))
    pipe._flush()
    return pipe


def test_shared_encoders_cut_key_frame_aligned_segments_and_images(tmp_path: Path) -> None:
    video = VideoEncoding(width=320, height=180, fps=30, bitrate_kbps=400, keyframe_interval=2.0)
    audio = AudioEncoding()
    paths = SegmentPaths(tmp_path / "p.m3u8", tmp_path / "live.m3u8", tmp_path / "seg")
    hls = SegmentOutput("hls", paths, segment_duration=2, video=video, audio=audio)
    mp4 = FileOutput("file", tmp_path / "f.mp4", video=video, audio=audio)
    shots = ImageOutput("img", tmp_path / "shot", canvas=video, interval=1.0, width=160, height=90)
    rtmp = StreamOutput("rtmp", [], video=video, audio=audio)
    pipe = encode_into([mp4, hls, shots], 7.0)
    assert Pipeline(outputs=[mp4, hls, shots, rtmp], video_input=None, audio_inputs=[]).encoder_count == 2
    assert pipe.encoder_count == 2 and not (mp4.failed or hls.failed or shots.failed)
    # the last segment also holds the AAC encoder's 1024-sample tail (23 ms at 44.1 kHz)
    assert [s.duration for s in hls.segments] == pytest.approx([2.0, 2.0, 2.0, 1.0], abs=0.025)
    assert [s.path.name for s in hls.segments] == [f"seg_{i:05d}.ts" for i in range(4)]
    with av.open(str(paths.playlist)) as c:
        assert abs(float(c.duration or 0) / 1e6 - 7.0) < 0.1
        assert sum(1 for _ in c.decode(video=0)) == 210
    assert len(shots.images) == 7 and [round(i.t, 3) for i in shots.images] == [0, 1, 2, 3, 4, 5, 6]
    with av.open(str(shots.images[0].path)) as c:
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (160, 90)


def test_a_retry_continues_the_same_playlist_after_a_discontinuity(tmp_path: Path) -> None:
    video = VideoEncoding(width=320, height=180, fps=30, bitrate_kbps=400, keyframe_interval=2.0)
    paths = SegmentPaths(tmp_path / "p.m3u8", None, tmp_path / "seg")
    first = SegmentOutput("hls", paths, segment_duration=2, video=video, audio=AudioEncoding())
    encode_into([first], 4.0)
    again = SegmentOutput("hls", paths, segment_duration=2, video=video, audio=AudioEncoding())
    again.resume(first)
    encode_into([again], 4.0)
    text = paths.playlist.read_text()
    names = [line for line in text.splitlines() if line.endswith(".ts")]
    assert names == [f"seg_{i:05d}.ts" for i in range(4)], text
    head, tail = text.split("#EXT-X-DISCONTINUITY")
    assert "seg_00001.ts" in head and "seg_00002.ts" in tail and tail.rstrip().endswith("#EXT-X-ENDLIST")
    info = new_info(part())
    first.attach(info, 1)
    again.attach(info, 2)  # the same result, not a second one
    again.refresh(3)
    assert len(info.segment_results) == 1 and info.segment_results[0].segment_count == 4
    with av.open(str(paths.playlist)) as c:  # the whole playlist plays: 8 s of pictures
        assert sum(1 for _ in c.decode(video=0)) == 240
    # an output whose playlist is another (its name has {retry}) starts a playlist of its own
    other = SegmentOutput("hls", SegmentPaths(tmp_path / "q.m3u8", None, tmp_path / "q"), segment_duration=2,
                          video=video, audio=AudioEncoding())  # fmt: skip
    other.resume(first)
    assert other.segments == []


def test_a_retry_never_overwrites_an_earlier_file(tmp_path: Path) -> None:
    path = Path("/out/rec.mp4")
    assert after_retry(path, "rec.mp4", {"retry": "0"}) == path
    assert after_retry(path, "rec.mp4", {"retry": "2"}) == Path("/out/rec-2.mp4")
    assert after_retry(Path("/out/rec-2.mp4"), "rec-{retry}.mp4", {"retry": "2"}) == Path("/out/rec-2.mp4")
    cfg = build_config(part(file_outputs=[pe.EncodedFileOutput(filepath="{room_name}-{retry}.mp4")]))
    assert cfg.files[0].filepath == "{room_name}-{retry}.mp4"
    with pytest.raises(InvalidRequestError, match=r"file_outputs\[0\].filepath.*escapes"):
        build_config(
            part(file_outputs=[pe.EncodedFileOutput(filepath="{retry}/../../x.mp4")]), output_dir=tmp_path
        )


def test_video_and_audio_encoders_are_one_per_distinct_encoding(tmp_path: Path) -> None:
    v1, v2 = VideoEncoding(width=320, height=180), VideoEncoding(width=640, height=360)
    outs = [
        FileOutput("a", tmp_path / "a.mp4", video=v1, audio=AudioEncoding()),
        FileOutput("b", tmp_path / "b.mp4", video=v1, audio=AudioEncoding()),
        FileOutput("c", tmp_path / "c.mp4", video=v2, audio=AudioEncoding(codec="opus", sample_rate=48000)),
    ]
    assert Pipeline(outputs=outs, video_input=None, audio_inputs=[]).encoder_count == 4
    assert isinstance(VideoEncoder(v1).stream, av.VideoStream)
    assert AudioEncoder(AudioEncoding(codec="mp3")).stream.codec_context.name == "libmp3lame"


def test_the_pipeline_closes_its_encoders_and_gives_each_output_its_own_packets(tmp_path: Path) -> None:
    video = VideoEncoding(width=320, height=180, fps=30, bitrate_kbps=400, keyframe_interval=1.0)
    outs = [FileOutput(n, tmp_path / f"{n}.mp4", video=video, audio=AudioEncoding()) for n in ("a", "b")]
    pipe = encode_into(list(outs), 2.0)
    assert all(e._box is None for e in [*pipe._video_enc.values(), *pipe._audio_enc.values()])
    # the same packets muxed into two files: identical timing whichever output came first
    stamps = []
    for o in outs:
        with av.open(str(o.path)) as c:
            stamps.append([(p.pts, p.dts) for p in c.demux(video=0) if p.size])
    assert stamps[0] == stamps[1] and len(stamps[0]) == 60


def test_a_retry_continues_the_same_fragmented_mp4(tmp_path: Path) -> None:
    """The retry's fragments go on in the first attempt's file: one file that decodes end to
    end, both attempts' pictures in order, a timeline without a hole, one result."""
    video = VideoEncoding(width=320, height=180, fps=30, bitrate_kbps=400, keyframe_interval=1.0)
    first = FileOutput("file", tmp_path / "rec.mp4", video=video, audio=AudioEncoding(), manifest=True)
    encode_into([first], 4.0)
    again = FileOutput("file", tmp_path / "rec-1.mp4", video=video, audio=AudioEncoding(), manifest=True)
    again.resume(first)
    encode_into([again], 3.0)
    assert again.continued and again.path == first.path and not (tmp_path / "rec-1.mp4").exists()
    assert again.manifest_path == tmp_path / "rec.mp4.json"
    assert abs(again.duration - 7.0) < 0.05, again.duration
    with av.open(str(first.path)) as c:
        frames = [(float(f.time or 0), float(f.to_ndarray()[:180].mean())) for f in c.decode(video=0)]
    with av.open(str(first.path)) as c:
        audio_end = max(float(f.time or 0) + f.samples / f.sample_rate for f in c.decode(audio=0))
    times = [t for t, _ in frames]
    assert len(frames) == 210 and times == sorted(set(times)), "every frame, in order, once"
    steps = [b - a for a, b in itertools.pairwise(times)]
    # no hole: the retry starts where the longer track (audio: the AAC tail, 1024 samples)
    # ended, so one picture shows that much longer
    assert all(abs(d - 1 / 30) < 1e-3 for i, d in enumerate(steps) if i != 119), steps
    assert abs(steps[119] - (1 / 30 + 1024 / 48000)) < 2e-3, steps[119]
    # the canvas of tick k has luma 16 + 7k mod 200: the retry's first frame (k = 0) follows the
    # first attempt's last (k = 119)
    assert abs(frames[119][1] - (16 + 119 * 7 % 200)) < 3 and abs(frames[120][1] - 16) < 3
    assert abs(audio_end - 7.0) < 0.1, audio_end
    media = probe(first.path)
    assert abs(media.duration - again.duration) < 0.1, (media.duration, again.duration)
    info = new_info(part())
    first.attach(info, 1)
    again.attach(info, 2)  # the same result, not a second one
    again.refresh(3)
    assert len(info.file_results) == 1 and info.file_results[0].size == first.path.stat().st_size
    # a name with {retry} asked for a file per attempt; other encodings cannot continue the file
    own = FileOutput("file", tmp_path / "rec_1.mp4", video=video, audio=AudioEncoding(), per_attempt=True)
    own.resume(first)
    other = FileOutput("file", tmp_path / "rec-2.mp4", video=replace(video, width=640, height=360),
                       audio=AudioEncoding())  # fmt: skip
    other.resume(first)
    size = first.path.stat().st_size
    encode_into([own, other], 1.0)
    assert not own.continued and own.path == tmp_path / "rec_1.mp4"
    assert not other.continued and other.path == tmp_path / "rec-2.mp4" and not other.failed
    assert first.path.stat().st_size == size, "the continued file is left alone"
    assert probe(other.path).video is not None and probe(other.path).video.width == 640  # type: ignore[union-attr]


def test_a_retry_continues_a_file_cut_short_where_its_last_whole_fragment_ends(tmp_path: Path) -> None:
    """A first attempt whose last fragment is incomplete (cut mid-write) and whose index
    (``mfra``) is gone: the retry cuts the partial fragment and goes on after the last whole
    one, which decodes as before."""
    video = VideoEncoding(width=320, height=180, fps=30, bitrate_kbps=400, keyframe_interval=1.0)
    first = FileOutput("file", tmp_path / "rec.mp4", video=video, audio=AudioEncoding())
    encode_into([first], 3.0)
    whole = resume_point(first.path)
    data = first.path.read_bytes()
    assert data[whole.cut_at + 4 : whole.cut_at + 8] == b"mfra", "FFmpeg's index is what follows"
    assert whole.fragments == 3 and abs(whole.seconds - 3.02) < 0.02, (whole.fragments, whole.seconds)
    moofs = [i - 4 for i in range(len(data)) if data[i : i + 4] == b"moof"]
    first.path.write_bytes(data[: moofs[-1] + 100])  # the last fragment cut off mid-moof
    cut = resume_point(first.path)
    assert (cut.fragments, cut.cut_at) == (2, moofs[-1]) and abs(cut.seconds - 2.0) < 0.05, cut.seconds
    again = FileOutput("file", tmp_path / "rec-1.mp4", video=video, audio=AudioEncoding())
    again.resume(first)
    encode_into([again], 2.0)
    assert again.continued and abs(again.duration - (cut.seconds + 2.02)) < 0.05, again.duration
    with av.open(str(first.path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 120
    assert resume_point(first.path).fragments == 4
    (tmp_path / "junk.mp4").write_bytes(b"\0\0\0\x10ftypisom\0\0\0\0")
    with pytest.raises(CannotContinue, match="not a fragmented MP4"):
        resume_point(tmp_path / "junk.mp4")
