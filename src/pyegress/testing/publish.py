"""Publish synthetic camera/microphone tracks from the command line.

Example::

    python -m pyegress.testing.publish --url ws://127.0.0.1:7880 \\
        --api-key K --api-secret S --room demo --identity alice --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from .publisher import SyntheticPublisher

__all__ = ["main"]


def _color(value: str) -> tuple[int, int, int]:
    parts = value.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected R,G,B")
    try:
        r, g, b = (int(p) for p in parts)
    except ValueError as e:
        raise argparse.ArgumentTypeError("expected R,G,B integers") from e
    if not all(0 <= c <= 255 for c in (r, g, b)):
        raise argparse.ArgumentTypeError("components must be 0..255")
    return r, g, b


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pyegress.testing.publish",
        description="Join a LiveKit room and publish a synthetic test pattern and tone.",
    )
    p.add_argument("--url", default=os.environ.get("LIVEKIT_URL"), help="env LIVEKIT_URL")
    p.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY"), help="env LIVEKIT_API_KEY")
    p.add_argument(
        "--api-secret",
        default=os.environ.get("LIVEKIT_API_SECRET"),
        help="env LIVEKIT_API_SECRET",
    )
    p.add_argument("--room", required=True)
    p.add_argument("--identity", default="synthetic")
    p.add_argument("--name", default=None)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--codec", choices=["h264", "vp8"], default="h264")
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--no-video", action="store_true")
    p.add_argument("--color", type=_color, default=None, help="solid colour R,G,B")
    p.add_argument("--marker-interval", type=float, default=1.0)
    p.add_argument("--vfr", action="store_true", help="irregular 10-120 ms frame gaps")
    p.add_argument("--simulcast", action="store_true", help="publish full, half and quarter size layers")
    p.add_argument(
        "--audio-burst",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="hand the audio to the SDK in bursts this far apart (moves the sender's own audio timing too)",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    return p


async def _run(args: argparse.Namespace) -> None:
    pub = SyntheticPublisher(
        args.url,
        api_key=args.api_key,
        api_secret=args.api_secret,
        room=args.room,
        identity=args.identity,
        name=args.name,
        width=args.width,
        height=args.height,
        fps=args.fps,
        video_codec=args.codec,
        video=not args.no_video,
        audio=not args.no_audio,
        color=args.color,
        marker_interval=args.marker_interval,
        vfr=args.vfr,
        simulcast=args.simulcast,
        audio_burst=args.audio_burst,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with pub:
        print(
            f"publishing as {pub.identity!r} in room {args.room!r} "
            f"(video={pub.video_track_sid}, audio={pub.audio_track_sid})",
            file=sys.stderr,
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    missing = [n for n in ("url", "api_key", "api_secret") if not getattr(args, n)]
    if missing:
        _parser().error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))
    if args.no_audio and args.no_video:
        _parser().error("nothing to publish: both --no-audio and --no-video")
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
