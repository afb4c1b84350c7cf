"""Python's full garbage collections kept short while a page's display is grabbed.

A full collection scans every object the collector tracks while holding the GIL: in a process
with Chromium's driver, the SDK and an application's own objects, that is 65-71 ms (measured
in the test process), during which the grab thread cannot read the paint it was told of. By the
time it does, Chromium has painted the next picture over it: one source frame is lost and the
next shown twice, in every tile at once (seen at about 5 s into each 8 s recording logged).
:func:`hold` freezes the objects there are (``gc.freeze``): full collections then scan only
the objects made since, and none took over 5 ms while a page was captured. Collecting first
would itself hold the GIL (94-241 ms measured, as the capture starts). :func:`release`
unfreezes once no capture holds it: garbage older than the captures waits for them to end. A
process that froze objects of its own (a server forking workers) is left as it is.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["hold", "release"]

_lock = threading.Lock()
_holders = 0
_froze = False  # whether the freeze in place is this module's


def hold() -> None:
    """A capture starts: freeze the objects there are (the first holder)."""
    global _holders, _froze
    with _lock:
        if _holders == 0:
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
        _holders += 1


def release() -> None:
    """A capture ended: unfreeze when it was the last holder."""
    global _holders, _froze
    with _lock:
        _holders = max(0, _holders - 1)
        if _holders == 0 and _froze:
            gc.unfreeze()
            _froze = False
