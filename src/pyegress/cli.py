"""``pyegress`` command: run the request JSON that ``lk egress start`` takes, in this process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from google.protobuf.json_format import MessageToJson, ParseDict, ParseError
from livekit.protocol import egress as pe
from rich.console import Console

from .config import REQUEST_TYPES, RequestType
from .console import follow_progress, results_table
from .errors import EgressError, InvalidRequestError
from .pauses import FILLS
from .recorders import RECEIVE_PATHS
from .selection import Selection
from .service import EgressService

_TYPES: dict[str, RequestType] = {t.cli: t for t in REQUEST_TYPES}


def infer_type(data: dict[str, Any]) -> str:
    """The request type from its keys, as ``lk egress start`` would need it spelled out: a
    ``template`` / ``web`` / ``media`` source or an ``outputs`` list is the unified request."""
    keys = {k.replace("_", "").lower() for k in data}
    if keys & {"template", "web", "media", "outputs"}:
        return "egress"
    if "url" in keys:
        return "web"
    if "trackid" in keys:
        return "track"
    if keys & {"audiotrackid", "videotrackid"}:
        return "track-composite"
    if "identity" in keys:
        return "participant"
    return "room-composite"


def parse_request(text: str, kind: str | None) -> tuple[str, Any]:
    """Parse request JSON (camelCase or snake_case) into the protocol message of ``kind``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"request: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise SystemExit("request: expected a JSON object")
    kind = kind or infer_type(data)
    try:
        return kind, ParseDict(data, _TYPES[kind].message())
    except ParseError as e:
        raise SystemExit(f"request: {e}") from e


async def record(args: argparse.Namespace) -> int:
    """Start the egress, show progress until it ends, Ctrl-C or ``--duration``."""
    try:
        text = Path(args.request).read_text()
    except OSError as e:
        raise SystemExit(f"request: cannot read {args.request}: {e.strerror or e}") from e
    kind, req = parse_request(text, args.type)
    try:
        sidecars = [s for s in args.sidecars.split(",") if s] if args.sidecars else []
        svc = EgressService(
            args.url,
            args.api_key,
            args.api_secret,
            output_dir=args.output_dir,
            sidecars=sidecars,
            receive_path=args.receive_path,
        )
        info = await getattr(svc, _TYPES[kind].method)(req, **_composite_options(args, kind))
    except EgressError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    pause = {
        signal.SIGUSR1: lambda: svc.recorder(info.egress_id).pause(args.pause_fill),
        signal.SIGUSR2: lambda: svc.recorder(info.egress_id).resume(),
    }
    for sig, act in pause.items():
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, _quietly, act)
    if args.duration:
        loop.call_later(args.duration, stop.set)
    stopper = loop.create_task(_stop_on(stop, svc, info.egress_id))
    latest = [info]
    over = asyncio.Event()

    async def follow() -> None:  # the info as it changes, without polling
        async for changed in svc.updates(info.egress_id):
            latest[0] = changed
        over.set()

    follower = loop.create_task(follow())
    console = Console(stderr=True)
    try:
        if args.quiet:
            await over.wait()
        else:  # a live progress line meanwhile (stderr: stdout is the final info)
            await follow_progress(svc, [info.egress_id], over, console)
    finally:
        stopper.cancel()
        follower.cancel()
        await svc.aclose()  # its last webhooks go out (within a grace) before the process ends
    info = latest[0]
    if not args.quiet:
        console.print(results_table([info], Path(args.output_dir or ".").resolve()))
    print(MessageToJson(info, preserving_proto_field_name=True))
    return 0 if info.status == pe.EGRESS_COMPLETE else 1


def _quietly(act: Callable[[], object]) -> None:
    """Pause or resume on a signal; one that comes before the egress is active says why."""
    try:
        act()
    except EgressError as e:
        print(f"\n{e}", file=sys.stderr)


def _composite_options(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """``selection`` / ``speaker_tracks`` of a room composite, when the flags ask for them."""
    options: dict[str, Any] = {}
    if args.include or args.exclude or args.hide_without_video:
        hide = args.hide_without_video
        options["selection"] = Selection.of(args.include, args.exclude, hide_without_video=hide)
    if args.speaker_tracks:
        options["speaker_tracks"] = True
    if options and kind not in ("room-composite", "egress"):
        raise InvalidRequestError(next(iter(options)), f"a {kind} request records no room composite")
    return options


async def _stop_on(stop: asyncio.Event, svc: EgressService, egress_id: str) -> None:
    await stop.wait()
    await svc.stop_egress(pe.StopEgressRequest(egress_id=egress_id))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pyegress`` console script."""
    parser = argparse.ArgumentParser(prog="pyegress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run an egress request (lk egress start JSON) in-process")
    rec.add_argument("request", help="request JSON file")
    rec.add_argument("--type", choices=sorted(_TYPES), help="request type (default: from the JSON)")
    rec.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    rec.add_argument("--url", help="LiveKit URL (default: LIVEKIT_URL)")
    rec.add_argument("--api-key", help="API key (default: LIVEKIT_API_KEY)")
    rec.add_argument("--api-secret", help="API secret (default: LIVEKIT_API_SECRET)")
    rec.add_argument(
        "--output-dir",
        help="folder that holds every local file (default: relative paths under the working folder, "
        "absolute ones where they say)",
    )
    rec.add_argument("--quiet", action="store_true", help="no progress line")
    rec.add_argument(
        "--sidecars",
        help="time-aligned sidecars beside the media, comma-separated: events,transcript,chat",
    )
    rec.add_argument(
        "--receive-path",
        choices=RECEIVE_PATHS,
        default="auto",
        help="participant, track composite and room composite: receive the tracks as sent, decoded by PyAV "
        "(encoded: lip sync under jitter, less CPU), or through the rtc SDK (sdk); auto "
        "(default): encoded wherever it can be",
    )
    rec.add_argument(
        "--pause-fill",
        choices=FILLS,
        default="cut",
        help="SIGUSR1 pauses, SIGUSR2 resumes: files leave the paused span out (cut) or show a "
        "black or still slate (default: cut)",
    )
    rules = "identity:<id>, kind:<agent|sip|standard|...> or attribute:<key>=<value>"
    rec.add_argument(
        "--include", action="append", default=[], metavar="RULE", help=f"room composite: record only {rules}"
    )
    rec.add_argument(
        "--exclude", action="append", default=[], metavar="RULE", help=f"room composite: never record {rules}"
    )
    rec.add_argument(
        "--hide-without-video", action="store_true", help="room composite: no tile for who publishes no video"
    )
    rec.add_argument(
        "--speaker-tracks",
        action="store_true",
        help="room composite: one audio track per participant beside the mix (MP4, OGG, WebM files)",
    )
    wrk = sub.add_parser("worker", help="serve a LiveKit cluster as an egress worker (Redis dispatch)")
    wrk.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="seconds running egresses get on SIGTERM (default: the config's drain_timeout, 60)",
    )
    ctl = sub.add_parser(
        "control",
        help="pause, resume or mark an egress a pyegress worker of the cluster runs (through its Redis)",
    )
    ctl.add_argument("action", choices=["pause", "resume", "mark"])
    ctl.add_argument("egress_id")
    ctl.add_argument("--fill", choices=FILLS, default="cut", help="pause: cut, or a black or still slate")
    ctl.add_argument("--label", default="", help="mark: its label")
    ctl.add_argument("--data", default="null", help="mark: its data, as JSON")
    for p in (wrk, ctl):
        p.add_argument("--config", help="worker config YAML file (default: EGRESS_CONFIG_FILE)")
        p.add_argument("--config-body", help="worker config as YAML text (default: EGRESS_CONFIG_BODY)")
    args = parser.parse_args(argv)
    if args.command in ("worker", "control"):
        return _worker(args)
    return asyncio.run(record(args))


def _worker(args: argparse.Namespace) -> int:
    """``worker`` and ``control``: both read the worker config (``control`` for its Redis)."""
    try:  # the worker's dependencies are an extra: pip install 'pyegress[worker]'
        from .worker.config import ConfigError, load_config
        from .worker.control import run_control
        from .worker.run import run_worker
    except ImportError as e:
        print(
            f"error: pyegress worker needs the worker extra (pip install 'pyegress[worker]'): {e}",
            file=sys.stderr,
        )
        return 2
    try:
        config = load_config(args.config, args.config_body)
    except EgressError as e:
        print(f"error: worker config: {e}", file=sys.stderr)
        return 2
    if args.command == "control":
        return asyncio.run(
            run_control(config.redis, args.action, args.egress_id, args.fill, args.label, args.data)
        )
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(run_worker(config, drain_timeout=args.drain_timeout))
    except ConfigError as e:  # a port of the config that cannot be served
        print(f"error: worker config: {e}", file=sys.stderr)
        return 2


def run() -> NoReturn:
    """The console script and ``python -m pyegress.cli``: :func:`main`, then the process ends
    without the interpreter's teardown. There livekit's FFI runtime (livekit 1.2.1) aborts the
    process now and then, once every egress is done and its result printed ("panic in a function
    that cannot unwind" in a tokio thread, exit 134), which turned a finished recording into a
    failed command. Everything teardown would still do for us is done first: the threads it
    would wait for are waited for, logs and output are flushed."""
    try:
        code = main()
    except SystemExit as e:  # --help, a usage error, a request that cannot be read or parsed
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
