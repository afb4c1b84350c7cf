"""SRT transport for stream outputs: MPEG-TS piped into an ``ffmpeg`` process that sends it.

PyAV's wheels are built without libsrt, so the FFmpeg inside this process cannot open
``srt://``. Debian's ``ffmpeg`` (``scripts/install-srt.sh``) has it: the sink muxes MPEG-TS as
for any stream and writes it into ``ffmpeg -f mpegts -i pipe:0 -c copy -f mpegts srt://...``,
which only re-muxes (no decode, no encode). A connection that fails or drops ends that
process; the next write raises with its error, and the stream sink reconnects as for RTMP.

URL parameters follow LiveKit's (GStreamer's ``srtsink``): ``latency`` is in milliseconds (FFmpeg
counts microseconds) and ``mode``, ``passphrase``, ``pbkeylen``, ``streamid`` pass through.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import tempfile
import threading
import urllib.parse

from ..errors import OutputError
from ..redaction import redact_url, scrub, url_secrets

#: Seven TS packets: what one SRT live-mode packet carries.
PAYLOAD = 1316


def ffmpeg_url(url: str, *, rw_timeout: float) -> str:
    """``url`` with FFmpeg's names and units, the payload size and a bounded linger set."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    params = {k: v for k, v in query}
    if "latency" in params and params["latency"].isdigit():
        params["latency"] = str(int(params["latency"]) * 1000)  # ms → µs
    params.setdefault("pkt_size", str(PAYLOAD))
    params.setdefault("linger", str(max(1, int(rw_timeout / 2))))  # deliver what is sent before closing
    params.setdefault("connect_timeout", str(int(rw_timeout * 1000)))  # ms
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(params)))


def ffmpeg_binary() -> str:
    """The ``ffmpeg`` that can send SRT (the first on ``PATH``)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise OutputError("srt:// needs the ffmpeg program with SRT support (scripts/install-srt.sh)")
    return exe


class SrtPipe(io.RawIOBase):
    """A writable file that sends what is written to ``url`` through an ``ffmpeg`` process.

    ``abort`` (set from another thread) kills the process, so a write stuck on a stalled
    connection returns at once; :meth:`close` waits (bounded) for FFmpeg to deliver the rest.
    """

    def __init__(self, url: str, *, rw_timeout: float, abort: threading.Event) -> None:
        super().__init__()
        self._url = url
        self._secrets = url_secrets(url)
        self._target = ffmpeg_url(url, rw_timeout=rw_timeout)
        self._timeout = rw_timeout
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - FFmpeg's stderr, closed in close()
        #: True once FFmpeg has connected and sends (its first progress report)
        self.connected = False
        args = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostats", "-progress", "pipe:1"]
        args += ["-analyzeduration", "1000000", "-f", "mpegts", "-i", "pipe:0"]
        args += ["-map", "0", "-c", "copy", "-f", "mpegts", self._target]
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self._watch = threading.Thread(target=self._kill_on, args=(abort,), name="pyegress-srt", daemon=True)
        self._watch.start()
        threading.Thread(target=self._progress, name="pyegress-srt-progress", daemon=True).start()

    def _progress(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith(b"progress="):
                self.connected = True

    def _kill_on(self, abort: threading.Event) -> None:
        while self._proc.poll() is None:
            if abort.wait(0.2):
                self._proc.kill()
                return

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            stdin.flush()
        except (BrokenPipeError, ValueError):
            raise OSError(self.error()) from None
        return len(data)

    def error(self) -> str:
        """Why FFmpeg ended (its last line), without the URL's secrets."""
        try:
            self._proc.wait(self._timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return "the SRT sender did not answer"
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        text = lines[-1] if lines else f"the SRT sender ended (exit code {self._proc.returncode})"
        text = text.replace(self._target, redact_url(self._url)).replace(self._url, redact_url(self._url))
        return scrub(text, self._secrets)

    def close(self) -> None:
        """End of stream: FFmpeg sends what it has (bounded), then exits."""
        if self.closed:
            return
        try:
            if self._proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    self._proc.stdin.close()
            code = self._proc.wait(self._timeout + 2.0)
            if code != 0 and code != -9:
                raise OSError(self.error())
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        finally:
            self._log.close()
            super().close()
