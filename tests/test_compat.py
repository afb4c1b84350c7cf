"""The reaches into libraries' private parts (pyegress.compat) and the SDK behaviour pyegress relies on."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from livekit import rtc
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2

from pyegress.compat import avio
from pyegress.compat import livekit as livekit_compat
from pyegress.sources.room import VIDEO_QUEUE, video_stream

RECHECK_AVIO = (
    "re-check pyegress/compat/avio.py against the new PyAV / FFmpeg: the AVIOContext head up to "
    "write_flag, avio_open2's signature, and whether PyAV now opens output URLs with a timeout or "
    "an interrupt callback (then drop the binding); then update WRITTEN_FOR"
)


@pytest.fixture
def fresh_avio(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_avio as on its first call in a new process."""
    monkeypatch.setattr(avio, "_loaded", [])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback TCP port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def flv_of_frames(target: object, frames: int) -> None:
    """Mux ``frames`` small encoded video frames as FLV into ``target`` (a path or file object)."""
    with av.open(target, "w", format="flv") as out:
        stream = out.add_stream("flv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_avio_binding_is_pinned_to_the_installed_pyav() -> None:
    assert avio.version_drift() == "", f"{avio.version_drift()}: {RECHECK_AVIO}"


def test_avio_writer_muxes_into_a_local_url(tmp_path: Path) -> None:
    api = avio.get_avio()
    assert api is not None, "the PyAV wheel's libavformat is reachable"
    path = tmp_path / "out.flv"
    writer = avio.AvioWriter(api, f"file:{path}", rw_timeout=5.0, abort=threading.Event())
    flv_of_frames(writer, 10)
    writer.close()
    with av.open(str(path)) as c:
        assert c.format.name == "flv"
        assert len(list(c.decode(video=0))) == 10


def test_avio_writer_stops_writing_when_aborted(tmp_path: Path) -> None:
    api = avio.get_avio()
    assert api is not None
    abort = threading.Event()
    writer = avio.AvioWriter(api, f"file:{tmp_path / 'out.flv'}", rw_timeout=5.0, abort=abort)
    assert writer.write(b"FLV") == 3
    abort.set()
    with pytest.raises(ConnectionError, match="send failed: aborted"):
        writer.write(b"more")
    writer.close()


def test_avio_writer_gives_up_on_a_silent_server_after_rw_timeout(silent_server: int) -> None:
    api = avio.get_avio()
    assert api is not None
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot connect"):
        avio.AvioWriter(
            api, f"rtmp://127.0.0.1:{silent_server}/live/key", rw_timeout=0.5, abort=threading.Event()
        )
    assert time.monotonic() - t0 < 3.0


def test_avio_writer_connect_is_cut_short_by_abort(silent_server: int) -> None:
    api = avio.get_avio()
    assert api is not None
    abort = threading.Event()
    timer = threading.Timer(0.3, abort.set)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot connect: aborted"):
        avio.AvioWriter(api, f"rtmp://127.0.0.1:{silent_server}/live/key", rw_timeout=60.0, abort=abort)
    assert time.monotonic() - t0 < 2.0
    timer.join()


def test_avio_version_drift_warns_once_and_still_works(
    fresh_avio: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(avio, "WRITTEN_FOR", (("1.0.0", (58, 0)),))
    with caplog.at_level(logging.WARNING, logger="pyegress.compat.avio"):
        apis = [avio.get_avio() for _ in range(3)]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "written for PyAV 1.0.0 with libavformat 58.0" in warnings[0], warnings
    api = apis[0]
    assert api is not None and all(a is api for a in apis), "the binding is still used"
    path = tmp_path / "out.flv"
    writer = avio.AvioWriter(api, f"file:{path}", rw_timeout=5.0, abort=threading.Event())
    flv_of_frames(writer, 3)
    writer.close()
    with av.open(str(path)) as c:
        assert len(list(c.decode(video=0))) == 3


def test_avio_unreachable_library_warns_once_and_falls_back(
    fresh_avio: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(avio, "wheel_lib_dirs", lambda: [str(tmp_path)])
    monkeypatch.setattr(avio, "WRITTEN_FOR", (avio.installed(),))  # only the missing library warns
    with caplog.at_level(logging.WARNING, logger="pyegress.compat.avio"):
        assert [avio.get_avio() for _ in range(3)] == [None, None, None]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["libavformat not reachable with ctypes: stream connections have no timeout"]


async def test_sdk_streams_get_only_their_own_frame_events() -> None:
    """livekit >= 1.2.1 filters frame events by stream handle (pyegress did it itself before).

    Without that, every stream's task wakes up for every frame of every track. If this fails
    after an SDK upgrade, the SDK dropped that filter: restore the narrowing of each stream's
    FfiQueue subscription (git history of sources/room.py, ``own_events_only``) as a compat module.
    """
    streams: list[rtc.VideoStream | rtc.AudioStream] = []
    for i in range(2):
        vsource = rtc.VideoSource(64, 48)
        streams.append(rtc.VideoStream(rtc.LocalVideoTrack.create_video_track(f"v{i}", vsource)))
        asource = rtc.AudioSource(48000, 1)
        streams.append(rtc.AudioStream(rtc.LocalAudioTrack.create_audio_track(f"a{i}", asource)))
    try:
        subscribers = {id(q): f for q, _, f in FfiClient.instance.queue._subscribers}
        for stream in streams:
            accepts = subscribers[id(stream._ffi_queue)]
            assert accepts is not None
            for other in streams:
                event = ffi_pb2.FfiEvent()
                kind = "video_stream_event" if isinstance(other, rtc.VideoStream) else "audio_stream_event"
                getattr(event, kind).stream_handle = other._ffi_handle.handle
                assert accepts(event) == (other is stream), "see this test's docstring"
    finally:
        for stream in streams:
            await stream.aclose()


async def test_video_stream_native_queue_is_set_and_frames_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream pyegress pulls asks the FFI for a native queue of several frames (the SDK's own
    request leaves it at one), and a local track's frames come through it. If the pin fails after
    an SDK upgrade, re-read ``rtc.VideoStream._create_owned_stream`` and update the compat module
    (or drop it if the SDK exposes the queue size)."""
    assert livekit_compat.drift() == "", "see this test's docstring"
    sent: list[ffi_pb2.FfiRequest] = []
    real = FfiClient.instance.request

    def request(req: ffi_pb2.FfiRequest) -> ffi_pb2.FfiResponse:
        sent.append(req)
        return real(req)

    monkeypatch.setattr(FfiClient.instance, "request", request)
    source = rtc.VideoSource(64, 48)
    track = rtc.LocalVideoTrack.create_video_track("v", source)
    stream = video_stream(track)
    monkeypatch.undo()
    try:
        new = [r.new_video_stream for r in sent if r.HasField("new_video_stream")]
        assert len(new) == 1 and new[0].queue_size_frames == VIDEO_QUEUE
        assert new[0].format == rtc.VideoBufferType.I420 and new[0].normalize_stride
        frame = rtc.VideoFrame(64, 48, rtc.VideoBufferType.I420, bytes(64 * 48 * 3 // 2))
        for i in range(3):
            source.capture_frame(frame, timestamp_us=i * 33_000)
        ev = await asyncio.wait_for(anext(aiter(stream)), 5)
        assert (ev.frame.width, ev.frame.height) == (64, 48)
    finally:
        await stream.aclose()
