"""The libsrt binding (:mod:`pyegress.compat.libsrt`) is the library it was written for: the
version is 1.5 and every option number it sets reads back as what it means."""

from __future__ import annotations

import pytest

from pyegress.compat import libsrt
from pyegress.config.srt import parse_srt_url


def test_the_installed_libsrt_is_the_one_written_for() -> None:
    lib = libsrt.load()  # SrtUnavailable (libsrt missing or another major.minor) fails here
    assert lib.version[:2] == libsrt.WRITTEN_FOR, lib.version


def test_option_numbers_mean_what_the_binding_says() -> None:
    """Each option set, read back through its own number or a sibling's: a renumbered enum in
    another libsrt would read back something else (or be refused)."""
    sock = libsrt.Caller(libsrt.load())
    try:
        sock.set_int(libsrt.SRTO_TRANSTYPE, libsrt.SRTT_LIVE)
        assert sock.get_int(libsrt.SRTO_PAYLOADSIZE) == libsrt.PAYLOAD  # live mode's default
        sock.set_int(libsrt.SRTO_PAYLOADSIZE, 1128)
        assert sock.get_int(libsrt.SRTO_PAYLOADSIZE) == 1128
        sock.set_int(libsrt.SRTO_LATENCY, 345)  # sets both of these
        assert sock.get_int(libsrt.SRTO_RCVLATENCY) == 345
        assert sock.get_int(libsrt.SRTO_PEERLATENCY) == 345
        sock.set_bytes(libsrt.SRTO_STREAMID, b"#!::r=live/x")
        assert sock.get_bytes(libsrt.SRTO_STREAMID) == b"#!::r=live/x"
        sock.set_int(libsrt.SRTO_PBKEYLEN, 32)
        assert sock.get_int(libsrt.SRTO_PBKEYLEN) == 32
        sock.set_int(libsrt.SRTO_PEERIDLETIMEO, 4321)
        assert sock.get_int(libsrt.SRTO_PEERIDLETIMEO) == 4321
        sock.set_int(libsrt.SRTO_SNDTIMEO, 200)
        assert sock.get_int(libsrt.SRTO_SNDTIMEO) == 200
        sock.set_int(libsrt.SRTO_CONNTIMEO, 2500)
        assert sock.get_int(libsrt.SRTO_CONNTIMEO) == 2500
        sock.set_int(libsrt.SRTO_RCVSYN, 0)
        assert sock.get_int(libsrt.SRTO_RCVSYN) == 0
        assert sock.get_int(libsrt.SRTO_SNDDATA) == 0
        with pytest.raises(OSError):  # too short: libsrt refuses it
            sock.set_bytes(libsrt.SRTO_PASSPHRASE, b"short")
        sock.set_bytes(libsrt.SRTO_PASSPHRASE, b"long-enough-pass")
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("srt://h:9000?mode=listener", "'mode'"),
        ("srt://h:9000?passphrase=short", "'passphrase'"),
        ("srt://h:9000?pbkeylen=20", "'pbkeylen'"),
        ("srt://h:9000?latency=-5", "'latency'"),
        ("srt://h:9000?streamid=" + "x" * 513, "'streamid'"),
        ("srt://h:9000?maxbw=100", "'maxbw'"),
        ("srt://h:9000?latency=1&latency=2", "'latency'"),
        ("srt://h?latency=1", "port"),
    ],
)
def test_bad_srt_params_are_named(url: str, named: str) -> None:
    with pytest.raises(ValueError, match=named) as err:
        parse_srt_url(url)
    assert "short" not in str(err.value)


def test_srt_params_are_read() -> None:
    p = parse_srt_url("srt://h:9000?passphrase=pass-phrase-1&pbkeylen=24&streamid=s1&latency=200&mode=caller")
    assert (p.host, p.port, p.passphrase, p.pbkeylen, p.streamid, p.latency) == (
        "h",
        9000,
        "pass-phrase-1",
        24,
        "s1",
        200,
    )
    assert "pass-phrase-1" not in repr(p) and "s1" not in repr(p)
