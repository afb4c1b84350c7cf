"""Fixtures for the storage tests: real emulators on loopback, and a small recorded-like MP4.

Never skipped: when an emulator cannot start the test fails with the reason (install them
with ``scripts/install-storage-emulators.sh``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import numpy as np
import pytest

from pyegress.testing.storage_emulators import (
    AzuriteServer,
    EmulatorError,
    FakeGcsServer,
    MinioServer,
    StorageEmulator,
)

E = TypeVar("E", bound=StorageEmulator)


def start_emulator(emulator: E) -> E:
    """Start ``emulator`` or fail the test (with CI=true too: a missing emulator is a failure)."""
    try:
        emulator.start()
    except EmulatorError as e:
        pytest.fail(f"cannot start {emulator.name}: {e}", pytrace=False)
    return emulator


@pytest.fixture(scope="session")
def minio() -> Iterator[MinioServer]:
    """A MinIO server shared by the session (tests that stop it use ``fresh_minio``)."""
    server = start_emulator(MinioServer())
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fresh_minio() -> Iterator[MinioServer]:
    """A MinIO server of this test alone, free to be stopped and restarted."""
    server = start_emulator(MinioServer())
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcsServer]:
    server = start_emulator(FakeGcsServer())
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    server = start_emulator(AzuriteServer())
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def bucket_name() -> str:
    """A fresh bucket / container name (valid for S3, GCS and Azure)."""
    return f"pyegress-{uuid.uuid4().hex[:12]}"


def make_mp4(path: Path, seconds: float = 2.0, *, width: int = 320, height: int = 240, fps: int = 25) -> Path:
    """A small H.264 + AAC MP4 with moving frames and a tone, like a recording."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        aus = out.add_stream("aac", rate=48000)
        aus.layout = "mono"
        for i in range(int(seconds * fps)):
            img = np.zeros((height, width, 3), np.uint8)
            img[:, : (i * 7) % width] = (200, 60, 30)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for pkt in vs.encode(frame):
                out.mux(pkt)
        t = np.arange(int(seconds * 48000)) / 48000
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for n, start in enumerate(range(0, len(tone), 1024)):
            chunk = tone[start : start + 1024]
            af = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            af.sample_rate = 48000
            af.pts = n * 1024
            af.time_base = Fraction(1, 48000)
            for pkt in aus.encode(af):
                out.mux(pkt)
        for s in (vs, aus):
            for pkt in s.encode(None):
                out.mux(pkt)
    return path


@pytest.fixture(scope="session")
def recorded_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s MP4 made once per session (copy it before handing it to a queue that moves files)."""
    return make_mp4(tmp_path_factory.mktemp("media") / "recording.mp4")
