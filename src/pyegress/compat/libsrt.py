"""libsrt through ctypes: an SRT caller socket that sends live-mode messages.

Upstream gap: PyAV's wheels are built without libsrt, so FFmpeg inside this process cannot open
``srt://``; and running an external sender would put the URL (passphrase, stream id) on a
command line, readable by every user in ``ps``. Debian's ``libsrt1.5-gnutls`` (or
``-openssl``) is loaded here instead (``scripts/install-srt.sh``) and only the few calls a
caller needs are declared.

Pinned to libsrt :data:`WRITTEN_FOR` (major.minor): the option numbers below are those of its
``srt.h`` (``SRT_SOCKOPT``, ``SRT_SOCKSTATUS``, ``SRT_ERRNO``); :func:`load` refuses another
major.minor with an error saying so, and ``tests/test_libsrt.py`` reads the options back to
prove the numbers still mean what they say.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import threading
import time
from collections.abc import Callable

#: The libsrt major.minor these declarations were written for (Debian 12: 1.5.1).
WRITTEN_FOR = (1, 5)
#: Sonames tried in turn: Debian's two flavours, then an upstream build.
LIBRARIES = ("libsrt-gnutls.so.1.5", "libsrt-openssl.so.1.5", "libsrt.so.1.5")

# SRT_SOCKOPT (srt.h of 1.5)
SRTO_RCVSYN = 2
SRTO_SNDTIMEO = 13
SRTO_SNDDATA = 19
SRTO_LATENCY = 23
SRTO_PASSPHRASE = 26
SRTO_PBKEYLEN = 27
SRTO_CONNTIMEO = 36
SRTO_RCVLATENCY = 43
SRTO_PEERLATENCY = 44
SRTO_STREAMID = 46
SRTO_PAYLOADSIZE = 49
SRTO_TRANSTYPE = 50
SRTO_PEERIDLETIMEO = 55
SRTT_LIVE = 0
# SRT_SOCKSTATUS
SRTS_CONNECTING, SRTS_CONNECTED = 4, 5
# SRT_ERRNO
SRT_EASYNCSND, SRT_ETIMEOUT = 6001, 6003
# syslog levels for srt_setloglevel
LOG_CRIT = 2

#: Seven MPEG-TS packets: the payload of one live-mode message (SRT_LIVE_DEF_PLSIZE).
PAYLOAD = 7 * 188


class SrtUnavailable(OSError):
    """libsrt is missing or not the version this module was written for."""


class LibSrt:
    """The loaded library with the signatures this module calls."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        c_int, c_void_p = ctypes.c_int, ctypes.c_void_p
        lib.srt_getversion.restype = ctypes.c_uint32
        lib.srt_getversion.argtypes = []
        lib.srt_startup.argtypes = []
        lib.srt_create_socket.argtypes = []
        lib.srt_setsockflag.argtypes = [c_int, c_int, c_void_p, c_int]
        lib.srt_getsockflag.argtypes = [c_int, c_int, c_void_p, ctypes.POINTER(c_int)]
        lib.srt_connect.argtypes = [c_int, ctypes.c_char_p, c_int]
        lib.srt_send.argtypes = [c_int, ctypes.c_char_p, c_int]
        lib.srt_close.argtypes = [c_int]
        lib.srt_getsockstate.argtypes = [c_int]
        lib.srt_getlasterror.argtypes = [ctypes.POINTER(c_int)]
        lib.srt_getlasterror_str.restype = ctypes.c_char_p
        lib.srt_getlasterror_str.argtypes = []
        lib.srt_getrejectreason.argtypes = [c_int]
        lib.srt_rejectreason_str.restype = ctypes.c_char_p
        lib.srt_rejectreason_str.argtypes = [c_int]
        lib.srt_setloglevel.argtypes = [c_int]
        lib.srt_setloglevel.restype = None

    @property
    def version(self) -> tuple[int, int, int]:
        v = int(self.lib.srt_getversion())
        return v >> 16, (v >> 8) & 0xFF, v & 0xFF

    def last_error(self) -> tuple[int, str]:
        code = int(self.lib.srt_getlasterror(None))
        text = self.lib.srt_getlasterror_str()
        return code, (text or b"").decode(errors="replace")

    def reject_reason(self, sock: int) -> str:
        text = self.lib.srt_rejectreason_str(self.lib.srt_getrejectreason(sock))
        return (text or b"").decode(errors="replace")


_lock = threading.Lock()
_loaded: LibSrt | None = None


def load() -> LibSrt:
    """The started library (once per process), or :class:`SrtUnavailable` saying why not."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        errors = []
        for name in LIBRARIES:
            try:
                lib = LibSrt(ctypes.CDLL(name))
                break
            except (OSError, AttributeError) as e:
                errors.append(str(e))
        else:
            raise SrtUnavailable(
                "srt:// needs libsrt 1.5 (Debian's libsrt1.5-gnutls, scripts/install-srt.sh): "
                + "; ".join(errors)
            )
        if lib.version[:2] != WRITTEN_FOR:
            have = ".".join(map(str, lib.version))
            raise SrtUnavailable(f"libsrt {have} is installed; compat/libsrt.py was written for 1.5.x")
        if lib.lib.srt_startup() < 0:
            raise SrtUnavailable(f"srt_startup failed: {lib.last_error()[1]}")
        lib.lib.srt_setloglevel(LOG_CRIT)  # its errors reach the caller as exceptions instead
        _loaded = lib
        return lib


def _sockaddr(host: str, port: int) -> bytes:
    """A ``struct sockaddr_in`` / ``sockaddr_in6`` for ``host`` (resolved) and ``port``."""
    family, _, _, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
    packed = socket.inet_pton(family, str(addr[0]))
    if family == socket.AF_INET:
        return struct.pack("=H", family) + struct.pack("!H", port) + packed + bytes(8)
    scope = int(addr[3]) if len(addr) > 3 else 0
    return struct.pack("=H", family) + struct.pack("!HI", port, 0) + packed + struct.pack("=I", scope)


class Caller:
    """One SRT socket in caller mode, live transmission type.

    Every wait (connect, a full send buffer, the drain before closing) is bounded and polls
    ``aborted`` so another thread can end it at once.
    """

    def __init__(self, lib: LibSrt) -> None:
        self.lib = lib
        self.sock = int(lib.lib.srt_create_socket())
        if self.sock < 0:
            raise OSError(f"cannot create an SRT socket: {lib.last_error()[1]}")

    # options -------------------------------------------------------------------------------
    def set_int(self, opt: int, value: int) -> None:
        v = ctypes.c_int(value)
        self._check(self.lib.lib.srt_setsockflag(self.sock, opt, ctypes.byref(v), ctypes.sizeof(v)), opt)

    def set_bytes(self, opt: int, value: bytes) -> None:
        buf = ctypes.create_string_buffer(value, len(value))
        self._check(self.lib.lib.srt_setsockflag(self.sock, opt, buf, len(value)), opt)

    def get_int(self, opt: int) -> int:
        v, size = ctypes.c_int(0), ctypes.c_int(ctypes.sizeof(ctypes.c_int))
        self._check(self.lib.lib.srt_getsockflag(self.sock, opt, ctypes.byref(v), ctypes.byref(size)), opt)
        return v.value

    def get_bytes(self, opt: int) -> bytes:
        buf, size = ctypes.create_string_buffer(1024), ctypes.c_int(1024)
        self._check(self.lib.lib.srt_getsockflag(self.sock, opt, buf, ctypes.byref(size)), opt)
        return buf.raw[: size.value]

    def _check(self, rc: int, opt: int) -> None:
        if rc < 0:
            raise OSError(f"SRT option {opt}: {self.lib.last_error()[1]}")

    # the connection ------------------------------------------------------------------------
    def connect(self, host: str, port: int, *, timeout: float, aborted: Callable[[], bool]) -> None:
        """Connect (non-blocking, polled); a refusal raises with libsrt's reason for it."""
        self.set_int(SRTO_CONNTIMEO, max(1, int(timeout * 1000)))
        self.set_int(SRTO_RCVSYN, 0)  # connect returns at once; the state is polled below
        addr = _sockaddr(host, port)
        if self.lib.lib.srt_connect(self.sock, addr, len(addr)) < 0:
            raise OSError(f"cannot connect: {self.lib.last_error()[1]}")
        deadline = time.monotonic() + timeout + 1.0
        while True:
            state = int(self.lib.lib.srt_getsockstate(self.sock))
            if state == SRTS_CONNECTED:
                return
            if state != SRTS_CONNECTING:
                raise OSError(f"SRT connection failed: {self.lib.reject_reason(self.sock)}")
            if aborted():
                raise OSError("aborted while connecting")
            if time.monotonic() > deadline:
                raise OSError("SRT connection failed: Connection timeout")
            time.sleep(0.01)

    def send(self, data: bytes, *, timeout: float, aborted: Callable[[], bool]) -> None:
        """Send one message (at most :data:`PAYLOAD` bytes), waiting (bounded) for buffer room."""
        deadline = time.monotonic() + timeout
        while self.lib.lib.srt_send(self.sock, data, len(data)) < 0:
            code, text = self.lib.last_error()
            if code not in (SRT_EASYNCSND, SRT_ETIMEOUT):
                raise OSError(f"SRT send failed: {text}")
            if aborted() or time.monotonic() > deadline:
                raise OSError("SRT send stalled")

    def drain(self, *, timeout: float, aborted: Callable[[], bool]) -> None:
        """Wait (bounded) until the receiver acknowledged everything sent and played it out:
        a receiver drops what its latency buffer still holds when the sender closes."""
        deadline = time.monotonic() + timeout
        try:
            while self.get_int(SRTO_SNDDATA) > 0:
                if aborted() or time.monotonic() > deadline:
                    return
                time.sleep(0.01)
            hold = time.monotonic() + self.get_int(SRTO_PEERLATENCY) / 1000 + 0.05
        except OSError:
            return  # the connection is gone: nothing more will be delivered
        while not aborted() and time.monotonic() < min(hold, deadline):
            time.sleep(0.01)

    def close(self) -> None:
        if self.sock >= 0:
            self.lib.lib.srt_close(self.sock)
            self.sock = -1
