"""CPU per recorded second of one track egress: passthrough (the sender's bitstream) against
the re-encode of the same track (rtc SDK decode + pyegress encode), side by side.

    python -m pyegress.testing.netns -- python bench/passthrough_cpu.py [seconds] [width height]

The publisher runs in this process too: its CPU over the same span without an egress is
measured first and taken off both figures.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from livekit.protocol import egress as pe

from pyegress.config import build_config
from pyegress.recorders import Options, TrackRecorder
from pyegress.recorders.track_passthrough import PassthroughTrackRecorder
from pyegress.testing import LiveKitServer, SyntheticPublisher


async def cpu_over(seconds: float) -> float:
    c0 = time.process_time()
    await asyncio.sleep(seconds)
    return time.process_time() - c0


async def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    w, h = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (1280, 720)
    with LiveKitServer() as srv, tempfile.TemporaryDirectory() as out:
        pub = SyntheticPublisher(srv.url, api_key=srv.api_key, api_secret=srv.api_secret, room="bench",
                                 identity="alice", width=w, height=h, audio=False)  # fmt: skip
        async with pub:
            await asyncio.sleep(2.0)
            base = await cpu_over(seconds)
            opts = Options(url=srv.url, api_key=srv.api_key, api_secret=srv.api_secret)
            rows = []
            for cls in (PassthroughTrackRecorder, TrackRecorder):
                file = pe.DirectFileOutput(filepath=f"{cls.__name__}.mp4")
                req = pe.TrackEgressRequest(room_name="bench", track_id=pub.video_track_sid, file=file)
                rec = cls.from_config(build_config(req, output_dir=Path(out)), opts)
                await rec.start()
                while rec.info.status == pe.EGRESS_STARTING:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1.0)
                cpu = await cpu_over(seconds) - base
                await rec.stop()
                rows.append((cls.__name__, cpu / seconds))
    print(f"{w}x{h} H.264, {seconds:g} s, publisher baseline {base / seconds:.3f} CPU s/s taken off")
    for name, per_s in rows:
        print(f"{name:26s} {per_s:.4f} CPU s per recorded s")
    print(f"passthrough / re-encode: {rows[0][1] / rows[1][1]:.1%}")


if __name__ == "__main__":
    asyncio.run(main())
