"""SRT transport for stream outputs: MPEG-TS muxed by PyAV, sent from this process by libsrt.

PyAV's wheels have no libsrt, so the sink muxes MPEG-TS into this file object, which cuts it
into live-mode messages of seven TS packets and sends them through Debian's libsrt
(:mod:`pyegress.compat.libsrt`). Nothing runs beside this process: the URL, its passphrase and
stream id never appear on a command line. A refused or dropped connection raises from the next
write, and the stream sink reconnects with backoff as for RTMP.

URL parameters follow LiveKit's (GStreamer's ``srtsink``), checked with the request
(:mod:`pyegress.config.srt`): ``latency`` in milliseconds, ``passphrase``, ``pbkeylen``,
``streamid``; caller mode.
"""

from __future__ import annotations

import io
import threading

from ..compat import libsrt
from ..config.srt import parse_srt_url

#: Seven TS packets: what one SRT live-mode message carries.
PAYLOAD = libsrt.PAYLOAD


class SrtSender(io.RawIOBase):
    """A writable file whose bytes (MPEG-TS) go to ``url`` over SRT; connects when made.

    ``abort`` (set from another thread) ends any wait (connect, a full send buffer, the final
    drain) at once; :meth:`close` first lets the listener receive and play out what was sent.
    """

    def __init__(self, url: str, *, rw_timeout: float, abort: threading.Event) -> None:
        super().__init__()
        params = parse_srt_url(url)
        self._timeout = rw_timeout
        self._abort = abort
        self._pending = bytearray()
        self._sock = libsrt.Caller(libsrt.load())
        try:
            s = self._sock
            s.set_int(libsrt.SRTO_TRANSTYPE, libsrt.SRTT_LIVE)
            s.set_int(libsrt.SRTO_PAYLOADSIZE, PAYLOAD)
            s.set_int(libsrt.SRTO_PEERIDLETIMEO, max(1000, int(rw_timeout * 1000)))
            s.set_int(libsrt.SRTO_SNDTIMEO, 200)  # a blocked send wakes to look at ``abort``
            if params.latency is not None:
                s.set_int(libsrt.SRTO_LATENCY, params.latency)
            if params.passphrase:
                s.set_bytes(libsrt.SRTO_PASSPHRASE, params.passphrase.encode())
                if params.pbkeylen:
                    s.set_int(libsrt.SRTO_PBKEYLEN, params.pbkeylen)
            if params.streamid:
                s.set_bytes(libsrt.SRTO_STREAMID, params.streamid.encode())
            s.connect(params.host, params.port, timeout=rw_timeout, aborted=abort.is_set)
        except BaseException:
            self._sock.close()
            raise

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed SRT sender")
        self._pending += data
        whole = len(self._pending) - len(self._pending) % PAYLOAD
        for i in range(0, whole, PAYLOAD):
            self._send(bytes(self._pending[i : i + PAYLOAD]))
        del self._pending[:whole]
        return len(data)

    def _send(self, message: bytes) -> None:
        self._sock.send(message, timeout=self._timeout, aborted=self._abort.is_set)

    def close(self) -> None:
        """Send the rest, let the listener play it out (bounded), then close the connection."""
        if self.closed:
            return
        try:
            if self._pending and not self._abort.is_set():
                self._send(bytes(self._pending))
            self._sock.drain(timeout=self._timeout, aborted=self._abort.is_set)
        finally:
            self._pending.clear()
            self._sock.close()
            super().close()
