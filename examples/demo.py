"""Demo: record two synthetic participants from a local livekit-server, then print the files.

Run with ``bash scripts/demo.sh`` (sets everything up first) or, once set up,
``.venv/bin/python examples/demo.py [--seconds 8] [--out out/demo]``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import LiveKitServer, SyntheticPublisher, probe


async def main(seconds: float, out: Path) -> None:
    with LiveKitServer() as server:
        print(f"livekit-server running at {server.url}")
        pubs = [
            SyntheticPublisher(
                server.url,
                api_key=server.api_key,
                api_secret=server.api_secret,
                room="demo",
                identity=name,
                width=1280,
                height=720,
            )
            for name in ("alice", "bob")
        ]
        for p in pubs:
            await p.start()
        async with pyegress.EgressService(
            server.url, server.api_key, server.api_secret, output_dir=out
        ) as egress:
            alice, bob = pubs
            started = [
                await egress.start_participant_egress(
                    pe.ParticipantEgressRequest(
                        room_name="demo",
                        identity="alice",
                        preset=pe.H264_720P_30,
                        file_outputs=[
                            pe.EncodedFileOutput(filepath="{room_name}/{publisher_identity}-{time}")
                        ],
                    )
                ),
                await egress.start_track_composite_egress(
                    pe.TrackCompositeEgressRequest(
                        room_name="demo",
                        audio_track_id=bob.audio_track_sid,
                        video_track_id=bob.video_track_sid,
                        file_outputs=[
                            pe.EncodedFileOutput(filepath="{room_name}/composite-{publisher_identity}")
                        ],
                    )
                ),
                await egress.start_track_egress(
                    pe.TrackEgressRequest(
                        room_name="demo",
                        track_id=alice.audio_track_sid,
                        file=pe.DirectFileOutput(filepath="{room_name}/{track_id}"),
                    )
                ),
            ]
            print(f"recording {len(started)} egresses for {seconds:g} s ...")
            await asyncio.sleep(seconds)
            for info in started:
                final = await egress.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
                status = pe.EgressStatus.Name(final.status)
                for f in final.file_results:
                    m = probe(f.filename)
                    v = f"{m.video.codec} {m.video.width}x{m.video.height}" if m.video else "no video"
                    a = f"{m.audio.codec} {m.audio.sample_rate} Hz" if m.audio else "no audio"
                    print(f"{status}: {f.filename}  ({f.duration / 1e9:.1f} s, {f.size} bytes, {v}, {a})")
                if final.error:
                    print(f"  error: {final.error}")
        for p in pubs:
            await p.stop()
    print(f"output folder: {out.resolve()}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
    args = ap.parse_args()
    asyncio.run(main(args.seconds, args.out))
