"""EgressService: the methods of ``livekit.api.EgressService``, run in this process."""

from __future__ import annotations

import asyncio
import base64
import builtins
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Container, Mapping, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

from livekit import rtc
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

from .config import EgressConfig, Kind, Request, StreamURL, build_config, check_stream_url
from .errors import EgressError, EgressNotFoundError, InvalidRequestError, NotSupportedError
from .info import Listener, is_active, new_info, set_status, snapshot
from .limits import SessionLimits
from .pauses import PauseFill
from .preview import Preview, View
from .recorders import (
    MediaRecorder,
    Options,
    Recorder,
    RoomCompositeRecorder,
    TemplateRecorder,
    check_receive_path,
    recorder_for,
)
from .recorders.base import DEFAULT_MAX_RETRIES, RECONNECT_TIMEOUT
from .redaction import redact_url
from .selection import Selection
from .sidecars import check_kinds
from .storage.config import default_storage
from .webhooks import EgressWebhooks

#: How long :meth:`EgressService.aclose` lets queued webhooks go out.
WEBHOOK_GRACE = 5.0

#: Egresses a ``list_egress`` page holds (``EgressService.list_page_size``).
LIST_PAGE_SIZE = 100
_TOKEN_PREFIX = "pyeg1."


def _token(egress_id: str) -> str:
    """An opaque page token: the page continues after this egress (they are never reordered)."""
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(egress_id.encode()).decode().rstrip("=")


def _native_composite(config: EgressConfig) -> bool:
    return config.kind is Kind.ROOM_COMPOSITE and not config.template


_START_ARGS = {
    "start": "a ``{request}``; a bad one ends the egress ``EGRESS_FAILED`` with an ``error``"
    " naming the field instead of raising.",
    "room": "an ``rtc.Room`` your application already has connected, to record from without a"
    " second participant (None: the recorder joins, hidden).",
    "egress_id": "the id to record under (default: a new ``EG_...``).",
    "selection": "who is recorded (native layouts; :meth:`update_selection` changes it live; a"
    " ``media`` source takes it for its mix).",
    "speaker_tracks": "one audio track per participant beside the mix in MP4 / Ogg / WebM files.",
}
_START_RESULT = """
Returns:
    The egress's info at once (``EGRESS_STARTING``); the recording runs in the background.

Raises:
    NotSupportedError: something pyegress cannot do (such as ``PASSTHROUGH`` of more than one
        track, or with ``room``), naming the field.
"""
_Start = TypeVar("_Start", bound=Callable[..., Awaitable[pe.EgressInfo]])


def _start_doc(method: _Start) -> _Start:
    """Give a start method the Args, Returns and Raises all starts share, from its parameters
    (the reference page reads docstrings by inspection, so it shows them)."""
    request = str(method.__annotations__["start"]).rsplit(".", 1)[-1]
    args = "".join(
        f"\n    {name}: {_START_ARGS[name].format(request=request)}"
        for name in inspect.signature(method).parameters
        if name in _START_ARGS
    )
    method.__doc__ = f"{inspect.cleandoc(method.__doc__ or '')}\n\nArgs:{args}\n{_START_RESULT}"
    return method


def _page_after(token: str, known: Container[str]) -> str:
    """The egress id a page token continues after; ``InvalidRequestError`` for a foreign token."""
    try:
        body = token.removeprefix(_TOKEN_PREFIX)
        egress_id = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        egress_id = ""
    if not token.startswith(_TOKEN_PREFIX) or egress_id not in known:
        raise InvalidRequestError("page_token", "not a token this service gave")
    return egress_id


class EgressService:
    """Start, list and stop egresses that record inside this process.

    ``url``, ``api_key`` and ``api_secret`` default to ``LIVEKIT_URL``, ``LIVEKIT_API_KEY`` and
    ``LIVEKIT_API_SECRET``. Local files go under ``output_dir``, which then keeps every path
    inside it; without one, relative paths go under the working folder and absolute ones where
    they say.
    ``wait_timeout`` bounds the wait for a room, participant or track to show up;
    ``room_empty_timeout`` ends a room composite whose room stayed empty that long.
    ``limits`` (:class:`~pyegress.SessionLimits`) ends each egress ``EGRESS_LIMIT_REACHED``
    when it reaches one, as LiveKit Egress's ``session_limits`` do.
    ``storage`` is where file outputs with no ``s3`` / ``gcp`` / ``azure`` of their own are
    uploaded (None: they stay local); see :mod:`pyegress.storage`.
    A lost room connection is ridden out for up to ``reconnect_timeout`` seconds (the recording
    goes on, the gap held); an egress that fails for a transient reason (the room lost for
    good, the store unreachable) is retried up to ``max_retries`` times under the same id,
    ``EgressInfo.retry_count`` counting; see "Retries" in the README. ``backup_storage`` takes an
    output's uploads once its own store failed for good (bad credentials, missing bucket, down
    past the retries): the info then says ``backup_storage_used``. ``insecure`` runs web and
    template pages in Chromium without web security (cross-origin requests need no CORS, mixed
    content runs), like LiveKit Egress's ``insecure``.
    Starts return at once; the recording runs on the caller's event loop. ``egress_id`` lets
    the caller choose the id (a LiveKit server does when it dispatches a request). Follow an
    egress with ``async for info in service.updates(egress_id)`` or every egress with
    :meth:`listen`; a finished egress's recorder is let go, its final info stays listable.
    The service sends LiveKit's egress webhooks (:mod:`pyegress.webhooks`) to each request's
    ``webhooks`` and to ``webhooks`` given here; a request's ``signing_key`` names ``api_key``
    or one of ``webhook_keys`` (API key → secret). ``webhooks=None`` sends none at all, not even
    the requests' (a LiveKit worker: livekit-server sends them).
    ``sidecars`` names the time-aligned sidecars written beside each recording (``"events"``,
    ``"transcript"``, ``"chat"``; :mod:`pyegress.sidecars`).
    ``receive_path``: participant, track composite and room composite egresses are recorded from the tracks as
    their senders encoded them, decoded by PyAV (``"encoded"``), rather than from the rtc SDK's
    decoded frames (``"sdk"``): lip sync holds under network jitter and it costs less CPU. The
    default, ``"auto"``, takes it wherever it can (not on Python 3.10, not from an application's
    own ``rtc.Room``, not with transcript or chat sidecars; see "Receive paths" in the README).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        *,
        output_dir: str | os.PathLike[str] | None = None,
        wait_timeout: float = 10.0,
        room_empty_timeout: float = 30.0,
        storage: pe.StorageConfig | None = None,
        backup_storage: pe.StorageConfig | None = None,
        insecure: bool = False,
        webhooks: Sequence[pm.WebhookConfig] | None = (),
        webhook_keys: Mapping[str, str] | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        limits: SessionLimits | None = None,
        sidecars: Collection[str] = (),
        receive_path: str = "auto",
    ) -> None:
        self.sidecars = check_kinds(sidecars)
        self.receive_path = check_receive_path(receive_path)
        if max_retries < 0:
            raise InvalidRequestError("max_retries", "must be 0 or more")
        if reconnect_timeout <= 0:
            raise InvalidRequestError("reconnect_timeout", "must be more than 0 seconds")
        self.max_retries = max_retries
        self.reconnect_timeout = reconnect_timeout
        self.url = url or os.environ.get("LIVEKIT_URL", "")
        self.api_key = api_key or os.environ.get("LIVEKIT_API_KEY", "")
        self._secret = api_secret or os.environ.get("LIVEKIT_API_SECRET", "")
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.wait_timeout = wait_timeout
        self.room_empty_timeout = room_empty_timeout
        self.insecure = insecure
        default_storage(storage)  # validate now: InvalidRequestError naming storage.<provider>.<field>
        default_storage(backup_storage, "backup_storage")
        self._storage = storage
        self._backup = backup_storage
        self.limits = limits
        self._egresses: dict[str, Recorder | pe.EgressInfo] = {}
        self._listeners: list[Listener] = []
        self._watchers: set[asyncio.Task[None]] = set()
        self.list_page_size = LIST_PAGE_SIZE
        keys = {self.api_key: self._secret} if self.api_key and self._secret else {}
        self._webhooks = EgressWebhooks(
            webhooks or (), {**keys, **(webhook_keys or {})}, self.api_key, enabled=webhooks is not None
        )
        self.listen(self._webhooks.on_info)

    async def __aenter__(self) -> EgressService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- starts --------------------------------------------------------------------------

    @_start_doc
    async def start_participant_egress(
        self,
        start: pe.ParticipantEgressRequest,
        *,
        room: rtc.Room | None = None,
        egress_id: str | None = None,
    ) -> pe.EgressInfo:
        """Record one participant's camera/microphone (or screen share)."""
        return await self._start(start, room, egress_id)

    @_start_doc
    async def start_track_composite_egress(
        self,
        start: pe.TrackCompositeEgressRequest,
        *,
        room: rtc.Room | None = None,
        egress_id: str | None = None,
    ) -> pe.EgressInfo:
        """Record one audio and one video track together."""
        return await self._start(start, room, egress_id)

    @_start_doc
    async def start_track_egress(
        self, start: pe.TrackEgressRequest, *, room: rtc.Room | None = None, egress_id: str | None = None
    ) -> pe.EgressInfo:
        """Record a single track to a file (or its PCM to a WebSocket): written as its sender
        encoded it (PCM: its Opus decoded), unless ``room`` is given or on Python 3.10 (then
        re-encoded through the SDK)."""
        return await self._start(start, room, egress_id)

    @_start_doc
    async def start_room_composite_egress(
        self,
        start: pe.RoomCompositeEgressRequest,
        *,
        room: rtc.Room | None = None,
        egress_id: str | None = None,
        selection: Selection | None = None,
        speaker_tracks: bool = False,
    ) -> pe.EgressInfo:
        """Record the whole room in one picture (native grid / speaker layouts) and one mix, or
        through a web template in Chromium when ``custom_base_url`` is set."""
        return await self._start(start, room, egress_id, selection, speaker_tracks)

    @_start_doc
    async def start_web_egress(
        self, start: pe.WebEgressRequest, *, egress_id: str | None = None
    ) -> pe.EgressInfo:
        """Record a web page (picture and sound) rendered by Chromium."""
        return await self._start(start, None, egress_id)

    @_start_doc
    async def start_egress(
        self,
        start: pe.StartEgressRequest,
        *,
        room: rtc.Room | None = None,
        egress_id: str | None = None,
        selection: Selection | None = None,
        speaker_tracks: bool = False,
    ) -> pe.EgressInfo:
        """LiveKit's unified request: a ``template`` (room composite), ``web`` or ``media``
        source (one video and routed audio) to a list of ``outputs``. ``preset: PASSTHROUGH``
        with a media source of one track (``video_track_id``, or one audio route by
        ``track_id``) is that track's egress, written as sent; see :mod:`pyegress.config.unified`."""
        return await self._start(start, room, egress_id, selection, speaker_tracks)

    async def update_layout(self, update: pe.UpdateLayoutRequest) -> pe.EgressInfo:
        """Switch a live room composite to another layout (from the next frame on).

        Args:
            update: ``egress_id`` and the new ``layout``.

        Returns:
            The egress's info.

        Raises:
            EgressNotFoundError: no egress has this id.
            InvalidRequestError: it is over, or not a room composite.
        """
        entry = self._egresses.get(update.egress_id)
        if entry is None:
            raise EgressNotFoundError(f"egress_id: egress {update.egress_id!r} not found")
        if not isinstance(entry, Recorder) or not is_active(entry.info.status):
            raise InvalidRequestError("egress_id", f"{update.egress_id} has already ended")
        recorder = entry
        if not isinstance(recorder, (RoomCompositeRecorder, TemplateRecorder)):
            raise InvalidRequestError("egress_id", f"{update.egress_id} is not a room composite egress")
        info = snapshot(recorder.set_layout(update.layout))
        recorder.note("layout_changed", layout=update.layout)
        return info

    async def pause_egress(self, egress_id: str, *, fill: PauseFill = "cut") -> pe.EgressInfo:
        """Stop recording the room until :meth:`resume_egress`. Files and HLS leave the paused
        span out (``fill="cut"``: the timeline goes on seamlessly, HLS marks the cut with a
        discontinuity) or show a slate (``"black"``, or ``"still"``: the last frame; silence);
        RTMP keeps sending the slate. The manifest lists the pauses (:mod:`pyegress.pauses`).

        Args:
            egress_id: the egress to pause (pausing a paused one changes nothing).
            fill: ``"cut"``, ``"black"`` or ``"still"``.

        Returns:
            The egress's info.

        Raises:
            EgressNotFoundError: no egress has this id.
            InvalidRequestError: it is not recording (still starting, or over), or ``fill``
                is unknown.
            NotSupportedError: a passthrough track egress (it cannot be paused yet).
        """
        return self._live(egress_id).pause(fill)

    async def resume_egress(self, egress_id: str) -> pe.EgressInfo:
        """Record the room again after :meth:`pause_egress` (a cut continues the timeline).

        Args:
            egress_id: the paused egress (resuming one that is not paused changes nothing).

        Returns:
            The egress's info.

        Raises:
            EgressNotFoundError: no egress has this id.
            InvalidRequestError: it is not recording (still starting, or over).
            NotSupportedError: a passthrough track egress.
        """
        return self._live(egress_id).resume()

    async def mark(self, egress_id: str, label: str, data: object = None) -> None:
        """Put an application marker in the events sidecar at the recording's current media time.

        Args:
            egress_id: the recording egress.
            label: what the marker is (``"chapter"``, ``"question"``, ...).
            data: anything JSON-serializable, kept with the marker.

        Raises:
            EgressNotFoundError: no egress has this id.
            InvalidRequestError: it is not recording, the service has no ``events`` sidecar
                (naming ``sidecars``), or ``data`` is not JSON-serializable.
        """
        self._live(egress_id).mark(label, data)

    def _live(self, egress_id: str) -> Recorder:
        entry = self._egresses.get(egress_id)
        if entry is None:
            raise EgressNotFoundError(f"egress_id: egress {egress_id!r} not found")
        if not isinstance(entry, Recorder):
            raise InvalidRequestError("egress_id", f"egress {egress_id} is not active")
        return entry

    async def update_selection(self, egress_id: str, selection: Selection) -> pe.EgressInfo:
        """Change who a live room composite records, from the next frame on: excluded
        participants leave the picture (the layout re-flows) and the mix; for a unified
        request's ``media`` source, the mix.

        Args:
            egress_id: a native room composite or a unified request's ``media`` egress.
            selection: the rules from now on (:class:`~pyegress.Selection`).

        Returns:
            The egress's info.

        Raises:
            EgressNotFoundError: no egress has this id.
            InvalidRequestError: it is over, or of another request type.
        """
        entry = self._egresses.get(egress_id)
        if entry is None:
            raise EgressNotFoundError(f"egress_id: egress {egress_id!r} not found")
        if not isinstance(entry, Recorder) or not is_active(entry.info.status):
            raise InvalidRequestError("egress_id", f"{egress_id} has already ended")
        if not isinstance(entry, (RoomCompositeRecorder, MediaRecorder)):
            raise InvalidRequestError(
                "egress_id", f"{egress_id} is not a native room composite or media egress"
            )
        return snapshot(entry.set_selection(selection))

    async def update_stream(self, update: pe.UpdateStreamRequest) -> pe.EgressInfo:
        """Add and remove RTMP(S) URLs of an active egress; the other URLs are not disturbed.

        ``remove_output_urls`` may name a URL in clear or as ``EgressInfo`` shows it (redacted),
        or the id of a destination added with ``add_destinations``.

        Args:
            update: ``egress_id``, the URLs to add and to remove.

        Returns:
            The egress's info with its ``stream_results``.

        Raises:
            EgressNotFoundError: no egress has this id.
            InvalidRequestError: a bad URL (the field named), the egress is not active or has
                no stream output.
        """
        add = [
            StreamURL(check_stream_url(u, f"add_output_urls[{i}]"))
            for i, u in enumerate(update.add_output_urls)
        ]
        add += [
            StreamURL(check_stream_url(d.url, f"add_destinations[{i}].url"), d.id)
            for i, d in enumerate(update.add_destinations)
        ]
        entry = self._egresses.get(update.egress_id)
        if entry is None:
            raise EgressNotFoundError(f"egress_id: egress {update.egress_id!r} not found")
        if not isinstance(entry, Recorder):
            raise InvalidRequestError("egress_id", f"egress {update.egress_id} is not active")
        return await entry.update_stream(add, list(update.remove_output_urls))

    async def _start(
        self,
        req: Request,
        room: rtc.Room | None,
        egress_id: str | None,
        selection: Selection | None = None,
        speaker_tracks: bool = False,
    ) -> pe.EgressInfo:
        hooks = self._webhooks.defaults
        try:
            hooks = self._webhooks.targets(req)
            config = build_config(req, output_dir=self.output_dir, default=self._storage, backup=self._backup)
        except NotSupportedError:
            raise
        except EgressError as e:  # a bad request: listed as FAILED, naming the field
            info = new_info(req, egress_id)
            set_status(info, pe.EGRESS_FAILED, str(e), e.code)
            self._egresses[info.egress_id] = info
            self._tell(info)
            self._webhooks.ended(snapshot(info), hooks)
            return snapshot(info)
        options = Options(
            url=self.url,
            api_key=self.api_key,
            api_secret=self._secret,
            room=room,
            wait_timeout=self.wait_timeout,
            empty_timeout=self.room_empty_timeout,
            egress_id=egress_id,
            max_retries=self.max_retries,
            reconnect_timeout=self.reconnect_timeout,
            insecure=self.insecure,
            limits=self.limits,
            sidecars=self.sidecars,
            selection=selection,
            speaker_tracks=speaker_tracks,
            receive_path=self.receive_path,
        )
        if speaker_tracks and not _native_composite(config):
            raise InvalidRequestError("speaker_tracks", "only a room composite with a native layout takes it")
        if selection is not None and not (_native_composite(config) or config.kind is Kind.MEDIA):
            raise InvalidRequestError("selection", "only a native room composite or a media source takes it")
        recorder = recorder_for(config, options)
        self._egresses[recorder.egress_id] = recorder
        recorder.listen(self._tell)
        info = await recorder.start()
        self._webhooks.follow(info, hooks)
        watcher = asyncio.get_running_loop().create_task(self._let_go_when_done(recorder))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return info

    def _tell(self, info: pe.EgressInfo) -> None:
        for listener in list(self._listeners):
            listener(snapshot(info))

    async def _let_go_when_done(self, recorder: Recorder) -> None:
        """Once an egress is over keep only its final info: its pipeline, encoders, outputs
        and room go with the recorder."""
        async for _ in recorder.updates():
            pass
        if self._egresses.get(recorder.egress_id) is recorder:
            self._egresses[recorder.egress_id] = snapshot(recorder.info)
        self._webhooks.ended(snapshot(recorder.info))

    # --- following egresses ---------------------------------------------------------------

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with a snapshot at every change of any egress of this service
        (started from now on, and those running).

        Args:
            listener: called with an ``EgressInfo`` on the event loop; it must not block.

        Returns:
            A function that stops the calls.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def updates(self, egress_id: str) -> AsyncIterator[pe.EgressInfo]:
        """The egress's current info, then each change, until it is over.

        Args:
            egress_id: the egress to follow.

        Returns:
            An async iterator of ``EgressInfo`` snapshots.

        Raises:
            EgressNotFoundError: no egress has this id.
        """
        entry = self._egresses.get(egress_id)
        if entry is None:
            raise EgressNotFoundError(f"egress_id: egress {egress_id!r} not found")
        if isinstance(entry, Recorder):
            async for info in entry.updates():
                yield info
        else:
            yield snapshot(entry)

    # --- queries and stop ----------------------------------------------------------------

    def recorder(self, egress_id: str) -> Recorder:
        """The live recorder of ``egress_id`` (for progress or direct control).

        Args:
            egress_id: a running egress.

        Returns:
            Its :class:`~pyegress.recorders.Recorder`.

        Raises:
            EgressNotFoundError: no running egress has this id (unknown, or over: let go).
        """
        entry = self._egresses.get(egress_id)
        if not isinstance(entry, Recorder):
            raise EgressNotFoundError(f"egress_id: no recorder for {egress_id!r}")
        return entry

    def preview(
        self,
        egress_id: str,
        *,
        interval: float = 0.25,
        width: int = 480,
        view: View = "auto",
        stream: TextIO | None = None,
    ) -> Preview:
        """Show a running egress live until it ends: in Jupyter the latest picture, a level meter
        per audio input, status, elapsed time, size and quality figures (ipywidgets, the
        ``notebook`` extra); elsewhere a text line on ``stream``. Call it with the event loop
        running (a notebook cell, async code); it refreshes in the background.

        Args:
            egress_id: the egress to show.
            interval: seconds between refreshes (the still is taken that often).
            width: the still's width in pixels (its height follows the picture's aspect).
            view: ``"widget"``, ``"text"`` or ``"auto"`` (widgets inside Jupyter).
            stream: where the text view writes (default stdout).

        Returns:
            The running :class:`~pyegress.preview.Preview`; ``await preview.wait()`` waits
            for the egress to end.

        Raises:
            EgressNotFoundError: no running egress has this id (unknown, or already over).
        """
        return self.recorder(egress_id).preview(interval=interval, width=width, view=view, stream=stream)

    def _info(self, egress_id: str) -> pe.EgressInfo:
        entry = self._egresses.get(egress_id)
        if entry is None:
            raise EgressNotFoundError(f"egress_id: egress {egress_id!r} not found")
        return entry.info if isinstance(entry, Recorder) else entry

    async def list_egress(self, list: pe.ListEgressRequest) -> pe.ListEgressResponse:
        """Egresses by id, by room, and/or only the active ones (as the hosted API), in the
        order they started, ``list_page_size`` a page.

        Args:
            list: ``egress_id``, ``room_name``, ``active`` filters and ``page_token``.

        Returns:
            One page of infos; ``next_page_token`` is set while more follow: pass it as
            ``page_token`` for the next page.

        Raises:
            InvalidRequestError: ``page_token`` is not one this service gave.
        """
        ids = builtins.list(self._egresses)  # in start order: a dict keeps it, nothing is removed
        start = 0
        if list.page_token.token:
            start = ids.index(_page_after(list.page_token.token, self._egresses)) + 1
        items: builtins.list[pe.EgressInfo] = []
        for egress_id in ids[start:]:
            info = self._info(egress_id)
            if list.egress_id and info.egress_id != list.egress_id:
                continue
            if list.room_name and info.room_name != list.room_name:
                continue
            if list.active and not is_active(info.status):
                continue
            if len(items) == self.list_page_size:  # one more matches: there is a next page
                token = pm.TokenPagination(token=_token(items[-1].egress_id))
                return pe.ListEgressResponse(items=items, next_page_token=token)
            items.append(snapshot(info))
        return pe.ListEgressResponse(items=items)

    async def stop_egress(self, stop: pe.StopEgressRequest) -> pe.EgressInfo:
        """Stop an egress and return its final info once its files are complete.

        Args:
            stop: the ``egress_id`` to stop.

        Returns:
            The final info (``EGRESS_COMPLETE``, or ``EGRESS_ABORTED`` before it started).

        Raises:
            EgressNotFoundError: no egress has this id.
        """
        entry = self._egresses.get(stop.egress_id)
        if entry is None:
            raise EgressNotFoundError(f"egress_id: egress {stop.egress_id!r} not found")
        if isinstance(entry, Recorder):
            return await entry.stop()
        return snapshot(entry)

    async def wait_egress(self, egress_id: str, timeout: float | None = None) -> pe.EgressInfo:
        """Wait until ``egress_id`` ends by itself (or is stopped) and return its final info.

        Args:
            egress_id: the egress to wait for.
            timeout: seconds to wait at most (None: as long as it takes).

        Returns:
            The final info.

        Raises:
            EgressNotFoundError: no egress has this id.
            TimeoutError: it did not end within ``timeout``.
        """
        entry = self._egresses.get(egress_id)
        if entry is None:
            raise EgressNotFoundError(f"egress_id: egress {egress_id!r} not found")
        if isinstance(entry, Recorder):
            return await entry.wait(timeout)
        return snapshot(entry)

    async def aclose(self) -> None:
        """Stop every active egress, keeping what each recorded, and let their last webhooks go
        out (for up to ``WEBHOOK_GRACE`` seconds)."""
        live = [e for e in self._egresses.values() if isinstance(e, Recorder) and is_active(e.info.status)]
        await asyncio.gather(*(r.stop() for r in live), return_exceptions=True)
        await asyncio.gather(*list(self._watchers), return_exceptions=True)
        await self._webhooks.aclose(WEBHOOK_GRACE)

    def __repr__(self) -> str:
        url = redact_url(self.url)
        return f"EgressService(url={url!r}, api_key={self.api_key!r}, egresses={len(self._egresses)})"
