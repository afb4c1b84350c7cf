"""FFmpeg's AVIO through ctypes: output URLs with a timeout and an abort.

Upstream gap: PyAV opens an output URL (``av.open("rtmp://...", "w")``) with a bare
``avio_open``, no options and no interrupt callback (its ``timeout`` covers inputs only), so a
stalled server hangs the writing thread for good and nothing can cancel it. Here the URL is
opened with ``avio_open2`` of the PyAV wheel's own libavformat (``rw_timeout`` and an interrupt
callback) and PyAV muxes into the resulting file object.

Written for and checked with the versions in :data:`WRITTEN_FOR` (its tests pass on each: the
PyAV of Python 3.10, 3.11 and 3.13 as pip resolves them today). Another version is tried
anyway, after one warning, behind
the same safety checks as always: the libavformat found must be the one PyAV runs (same
major.minor), and the ``write_flag`` of an opened context must read 1 (the struct head below
is laid out as FFmpeg has it). When the library cannot be used, :func:`get_avio` says so once
and returns None; callers then open the URL through PyAV, without a timeout.
"""

from __future__ import annotations

import ctypes
import glob
import io
import logging
import os
import threading
from typing import Any

import av

log = logging.getLogger("pyegress.compat.avio")

#: PyAV versions and the major.minor of their libavformat this binding was checked with.
WRITTEN_FOR: tuple[tuple[str, tuple[int, int]], ...] = (
    ("17.1.0", (62, 12)),
    ("18.1.0", (62, 12)),
    ("19.0.2", (63, 1)),
)

_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _IntCB(ctypes.Structure):
    """AVIOInterruptCB."""

    _fields_ = [("callback", _CB), ("opaque", ctypes.c_void_p)]


class _AVIOContext(ctypes.Structure):
    """The public head of FFmpeg's AVIOContext, up to ``write_flag`` (stable since FFmpeg 4)."""

    _fields_ = [
        ("av_class", ctypes.c_void_p),
        ("buffer", ctypes.c_void_p),
        ("buffer_size", ctypes.c_int),
        ("buf_ptr", ctypes.c_void_p),
        ("buf_end", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("read_packet", ctypes.c_void_p),
        ("write_packet", ctypes.c_void_p),
        ("seek", ctypes.c_void_p),
        ("pos", ctypes.c_int64),
        ("eof_reached", ctypes.c_int),
        ("error", ctypes.c_int),
        ("write_flag", ctypes.c_int),
    ]


_AVIO_FLAG_WRITE = 2


def installed() -> tuple[str, tuple[int, int]]:
    """The installed PyAV version and the major.minor of the libavformat it runs."""
    major, minor = av.library_versions["libavformat"][:2]
    return str(av.__version__), (int(major), int(minor))


def version_drift() -> str:
    """Empty when the installed PyAV / libavformat are :data:`WRITTEN_FOR`, else what differs."""
    have = installed()
    if have in WRITTEN_FOR:
        return ""
    checked = " or ".join(f"PyAV {v} with libavformat {f[0]}.{f[1]}" for v, f in WRITTEN_FOR)
    return (
        f"PyAV {have[0]} with libavformat {have[1][0]}.{have[1][1]} is installed; compat/avio.py was "
        f"written for {checked}"
    )


def wheel_lib_dirs() -> list[str]:
    """Where PyAV wheels keep their FFmpeg libraries (Linux, macOS)."""
    base = os.path.dirname(av.__file__)
    return [os.path.join(base, os.pardir, "av.libs"), os.path.join(base, ".dylibs")]


class Avio:
    """libavformat / libavutil of the PyAV wheel, with the signatures this module calls."""

    def __init__(self, fmt: ctypes.CDLL, util: ctypes.CDLL) -> None:
        self.fmt, self.util = fmt, util
        pp = ctypes.POINTER(ctypes.POINTER(_AVIOContext))
        fmt.avio_open2.argtypes = [pp, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_IntCB), ctypes.c_void_p]
        fmt.avio_write.argtypes = [ctypes.POINTER(_AVIOContext), ctypes.c_char_p, ctypes.c_int]
        fmt.avio_flush.argtypes = [ctypes.POINTER(_AVIOContext)]
        fmt.avio_closep.argtypes = [pp]
        util.av_dict_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        util.av_dict_free.argtypes = [ctypes.c_void_p]
        util.av_strerror.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]

    def strerror(self, code: int) -> str:
        buf = ctypes.create_string_buffer(128)
        self.util.av_strerror(code, buf, len(buf))
        return buf.value.decode(errors="replace")

    @classmethod
    def load(cls, dirs: list[str]) -> Avio | None:
        """The libraries in ``dirs`` if they are the ones PyAV runs, else None."""
        expected = tuple(av.library_versions["libavformat"][:2])
        for d in dirs:
            fmt_paths = glob.glob(os.path.join(d, "libavformat*"))
            util_paths = glob.glob(os.path.join(d, "libavutil*"))
            if not fmt_paths or not util_paths:
                continue
            try:
                fmt, util = ctypes.CDLL(fmt_paths[0]), ctypes.CDLL(util_paths[0])
                fmt.avformat_version.restype = ctypes.c_uint
                version = fmt.avformat_version()
                if (version >> 16, (version >> 8) & 0xFF) != expected:
                    continue
                return cls(fmt, util)
            except (OSError, AttributeError):
                continue
        return None


_lock = threading.Lock()
_loaded: list[Avio | None] = []  # empty until the first get_avio


def get_avio() -> Avio | None:
    """The binding, loaded on first use; warns once if the versions drifted or it is unusable."""
    with _lock:
        if not _loaded:
            drift = version_drift()
            if drift:
                log.warning("%s: trying its ctypes binding anyway (re-check that module)", drift)
            api = Avio.load(wheel_lib_dirs())
            if api is None:
                log.warning("libavformat not reachable with ctypes: stream connections have no timeout")
            _loaded.append(api)
        return _loaded[0]


class AvioWriter(io.RawIOBase):
    """A write-only file object over an FFmpeg URL (``rtmp://``...), with timeout and abort.

    Every network wait gives up after ``rw_timeout`` seconds, or as soon as ``abort`` is set.
    """

    def __init__(self, api: Avio, url: str, *, rw_timeout: float, abort: threading.Event) -> None:
        super().__init__()
        self._api = api
        self._abort = abort
        self._cb = _CB(lambda _opaque: 1 if abort.is_set() else 0)  # kept alive with self
        self._icb = _IntCB(self._cb, None)
        self._pb = ctypes.POINTER(_AVIOContext)()
        opts = ctypes.c_void_p()
        api.util.av_dict_set(ctypes.byref(opts), b"rw_timeout", str(int(rw_timeout * 1e6)).encode(), 0)
        try:
            ret = api.fmt.avio_open2(
                ctypes.byref(self._pb),
                url.encode(),
                _AVIO_FLAG_WRITE,
                ctypes.byref(self._icb),
                ctypes.byref(opts),
            )
        finally:
            api.util.av_dict_free(ctypes.byref(opts))
        if ret < 0:
            self._pb = ctypes.POINTER(_AVIOContext)()
            raise ConnectionError(f"cannot connect: {self._why(ret)}")
        if self._pb.contents.write_flag != 1:  # the struct layout is not what we think: stop here
            api.fmt.avio_closep(ctypes.byref(self._pb))
            raise RuntimeError("unexpected AVIOContext layout (re-check pyegress.compat.avio)")

    def _why(self, code: int) -> str:
        return "aborted" if self._abort.is_set() else self._api.strerror(code)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if not self._pb:
            raise ConnectionError("connection closed")
        raw = bytes(data)
        self._api.fmt.avio_write(self._pb, raw, len(raw))
        self._api.fmt.avio_flush(self._pb)
        err = self._pb.contents.error
        if err < 0:
            raise ConnectionError(f"send failed: {self._why(err)}")
        return len(raw)

    def close(self) -> None:
        if self._pb:
            self._api.fmt.avio_closep(ctypes.byref(self._pb))
        super().close()
