"""Demo: record two synthetic participants from a local livekit-server, then describe the files.

Four recordings: the room composite (grid of both), alice as a participant, bob's camera and
microphone as a track composite, and alice's microphone as a track.

Run with ``bash scripts/demo.sh`` (sets everything up first) or, once set up,
``.venv/bin/python examples/demo.py [--seconds 8] [--out out/demo]``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from livekit.protocol import egress as pe
from rich.console import Console

import pyegress
from pyegress.console import follow_progress, results_table
from pyegress.testing import LiveKitServer, SyntheticPublisher, probe


async def main(seconds: float, out: Path) -> None:
    console = Console()
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
                await egress.start_room_composite_egress(
                    pe.RoomCompositeEgressRequest(
                        room_name="demo",
                        layout="grid",
                        file_outputs=[pe.EncodedFileOutput(filepath="{room_name}/room-composite-{time}")],
                    )
                ),
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
            console.print(f"recording {len(started)} egresses for {seconds:g} s ...")
            elapsed = asyncio.Event()
            asyncio.get_running_loop().call_later(seconds, elapsed.set)
            await follow_progress(egress, [i.egress_id for i in started], elapsed, console)
            ended = await asyncio.gather(
                *(egress.stop_egress(pe.StopEgressRequest(egress_id=i.egress_id)) for i in started)
            )
            console.print(results_table(ended, out.resolve()))
            for info in ended:
                if info.status != pe.EGRESS_COMPLETE:
                    print(f"{pe.EgressStatus.Name(info.status)}: {info.egress_id} {info.error}")
                for f in info.file_results:
                    path = Path(f.filename)
                    shown = path.relative_to(out.resolve()) if path.is_relative_to(out.resolve()) else path
                    print(f"{shown}  {probe(path).summary()}")
        for p in pubs:
            await p.stop()
    print(f"output folder: {out.resolve()}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
    args = ap.parse_args()
    asyncio.run(main(args.seconds, args.out))
