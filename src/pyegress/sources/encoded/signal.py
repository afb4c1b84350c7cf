"""LiveKit's signaling over the ``/rtc`` websocket: protobuf ``SignalRequest`` out,
``SignalResponse`` in, a ping every ``ping_interval`` and a lost connection noticed after
``ping_timeout`` without an answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import urlencode

import aiohttp
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from ...errors import RoomConnectionLostError, SourceError

log = logging.getLogger("pyegress.source.signal")

#: The signaling protocol spoken: 16 (moving between nodes; not 17's packet trailers).
PROTOCOL = 16


def rtc_url(url: str, token: str) -> str:
    """The ``/rtc`` websocket URL of a LiveKit URL (ws, wss, http or https)."""
    base = url.rstrip("/")
    for plain, ws in (("http://", "ws://"), ("https://", "wss://")):
        if base.startswith(plain):
            base = ws + base[len(plain) :]
    query = {"access_token": token, "auto_subscribe": "0", "sdk": "python", "protocol": str(PROTOCOL),
             "adaptive_stream": "0", "version": "pyegress"}  # fmt: skip
    return f"{base}/rtc?{urlencode(query)}"


class SignalClient:
    """One signaling connection. ``on_message`` gets every response after the join."""

    def __init__(
        self, on_message: Callable[[pr.SignalResponse], None], on_lost: Callable[[str], None]
    ) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pong = time.monotonic()
        self.closed = False

    async def join(self, url: str, token: str, timeout: float = 10.0) -> pr.JoinResponse:
        """Open the websocket and wait for the server's ``JoinResponse``."""
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                rtc_url(url, token), timeout=aiohttp.ClientWSTimeout(ws_close=2.0), max_msg_size=0
            )
            ws = self._ws
            first = await asyncio.wait_for(ws.receive(), timeout)
        except aiohttp.WSServerHandshakeError as e:
            await self.close()
            raise SourceError(f"room_name: the server refused the recorder's join: {e.status} {e.message}",
                              code=e.status) from e  # fmt: skip
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            await self.close()
            raise RoomConnectionLostError(f"url: cannot open LiveKit's signaling at {url}: {e!r}") from e
        if first.type != aiohttp.WSMsgType.BINARY:
            await self.close()
            raise SourceError(f"room_name: unexpected first signaling message {first.type!r}")
        res = pr.SignalResponse.FromString(first.data)
        if res.WhichOneof("message") != "join":
            await self.close()
            raise SourceError(f"room_name: the server answered the join with {res.WhichOneof('message')}")
        join = res.join
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._read(), name="pyegress-signal-read"))
        interval, timeout_s = join.ping_interval or 5, join.ping_timeout or 15
        self._tasks.append(loop.create_task(self._ping(interval, timeout_s), name="pyegress-signal-ping"))
        return join

    def send(self, request: pr.SignalRequest) -> None:
        """Send one request (dropped once closed: the connection is gone anyway)."""
        if self._ws is None or self._ws.closed or self.closed:
            return
        data = request.SerializeToString()
        task = asyncio.get_running_loop().create_task(self._ws.send_bytes(data))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _read(self) -> None:
        assert self._ws is not None
        why = "the server closed the signaling connection"
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    res = pr.SignalResponse.FromString(msg.data)
                    if res.WhichOneof("message") in ("pong", "pong_resp"):
                        self._pong = time.monotonic()
                    try:
                        self._on_message(res)
                    except Exception:
                        log.exception("signal message %s", res.WhichOneof("message"))
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    why = f"signaling error: {self._ws.exception()!r}"
                    break
        except Exception as e:
            why = f"signaling error: {e!r}"
        if not self.closed:
            self._on_lost(why)

    async def _ping(self, interval: float, timeout: float) -> None:
        self._pong = time.monotonic()
        while not self.closed:
            now_ms = int(time.time() * 1000)
            self.send(pr.SignalRequest(ping=now_ms))
            self.send(pr.SignalRequest(ping_req=pr.Ping(timestamp=now_ms)))
            await asyncio.sleep(interval)
            if time.monotonic() - self._pong > timeout and not self.closed:
                self._on_lost(f"no pong from the server for {timeout:g} s")
                return

    async def close(self, leave: bool = False) -> None:
        """Leave (when asked) and close the websocket."""
        if leave and self._ws is not None and not self._ws.closed:
            req = pr.SignalRequest(leave=pr.LeaveRequest(reason=pm.DisconnectReason.CLIENT_INITIATED))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.send_bytes(req.SerializeToString()), 1.0)
        self.closed = True
        for t in self._tasks:
            t.cancel()
        self._tasks.clear()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2.0)
        if self._session is not None:
            await self._session.close()
