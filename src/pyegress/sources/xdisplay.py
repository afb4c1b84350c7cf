"""The page's X display (Xvfb) paced at the output's frame rate, and its paints as they happen.

Chromium on X11 draws at the refresh rate XRandR reports for the display (its
``XrandrIntervalOnlyVSyncProvider``); Xvfb's only mode has no dot clock, so Chromium falls back
to 60 Hz. A 30 fps recording of a 60 Hz page grabbed at its own phase shows some pictures
twice and never others (the grab and the paints beat; under load a paint comes late and lands
on either side of a grab). :class:`PagedDisplay` gives the display a mode whose refresh rate is
the output's, so Chromium paints once per output frame (and half as often as at 60 Hz), and
reports each paint through the DAMAGE extension, so that the grab reads each painted picture
once, whole, stamped with when it was painted.

A mode made through RandR belongs to the connection that made it: the display's connection
stays open as long as the page.
"""

from __future__ import annotations

import select
import time

from Xlib import X
from Xlib.display import Display
from Xlib.ext import damage, randr

__all__ = ["PagedDisplay", "server_time"]

#: The rest of a paint (Chromium puts each damaged rectangle separately) comes within this
#: many seconds of its first rectangle; the picture is read once it is quiet that long ...
PAINT_QUIET = 0.002
#: ... but no later than this share of an output period after the paint began (a late paint
#: followed at once by the next one must stay two pictures).
PAINT_SPAN = 0.25
#: A paint is dated by the X server's own timestamp (Xvfb's clock is the monotonic clock in
#: milliseconds, modulo 2**32), not by when this thread got to its event: on a busy machine
#: that is tens of milliseconds later, and the paint would take the slot of a later refresh.
#: A timestamp older than this (seconds) is not of that clock: the event's reading is used.
STAMP_AGE = 1.0


def server_time(stamp: int, now: float) -> float:
    """The monotonic time of X server timestamp ``stamp`` read at monotonic ``now`` (``now``
    itself when the server's clock is not the monotonic clock)."""
    age = ((int(now * 1000) - stamp) & 0xFFFFFFFF) / 1000
    return now - age if age <= STAMP_AGE else now


class PagedDisplay:
    """A connection to an X display (``:N``) that sets its refresh rate and watches its paints.

    Not thread-safe: after :meth:`set_rate`, one thread (the grab) calls :meth:`next_paint`;
    :meth:`close` once that thread is done.
    """

    def __init__(self, name: str) -> None:
        self._display = Display(name)
        self._root = self._display.screen().root
        self._damage: int | None = None
        self._damage_event = -1  # the event code of DamageNotify on this server

    def set_rate(self, fps: int) -> None:
        """Make the screen's mode (its current size) refresh ``fps`` times a second."""
        d, root = self._display, self._root
        if not d.has_extension("RANDR"):
            raise OSError("the X server has no RANDR extension")
        randr.query_version(d)  # a client says which version it speaks before using RandR 1.2
        geometry = root.get_geometry()
        width, height = int(geometry.width), int(geometry.height)
        resources = randr.get_screen_resources_current(root)
        if not resources.outputs or not resources.crtcs:
            raise OSError("the X server reports no output to set a mode on")
        name = f"{width}x{height}@{fps}"
        # RandR_ModeInfo's fields in order: id, size, dot clock (Hz: the refresh rate is
        # dot_clock / (h_total * v_total)), h sync start, end, total, skew, v sync start, end,
        # total, name length, flags
        h, v = (width, width, width, 0), (height, height, height)
        info = (0, width, height, width * height * fps, *h, *v, len(name), 0)
        mode = randr.create_mode(root, info, name).mode
        output, crtc = resources.outputs[0], resources.crtcs[0]
        randr.add_output_mode(d, output, mode)
        done = randr.set_crtc_config(
            d, crtc, resources.config_timestamp, 0, 0, mode, randr.Rotate_0, [output]
        )
        if done.status != randr.SetConfigSuccess:
            raise OSError(f"the X server refused the {name} mode (status {done.status})")

    def next_paint(self, period: float, timeout: float) -> float | None:
        """Wait up to ``timeout`` s for the screen to change; once the paint is done (quiet
        for :data:`PAINT_QUIET`, or ``PAINT_SPAN`` output periods on), return the monotonic
        time it began. None if nothing was painted."""
        d = self._display
        if self._damage is None:
            ext = d.query_extension(damage.extname)
            if ext is None:
                raise OSError("the X server has no DAMAGE extension")
            d.damage_query_version()
            self._damage_event = int(ext.first_event) + damage.DamageNotifyCode
            self._damage = int(self._root.damage_create(damage.DamageReportRawRectangles))
            d.flush()
        began = self._wait_damage(timeout)
        if began is None:
            return None
        end = began + PAINT_SPAN * period
        while True:
            now = time.monotonic()
            if now >= end or self._wait_damage(min(PAINT_QUIET, end - now)) is None:
                break
        d.damage_subtract(self._damage, X.NONE, X.NONE)
        d.flush()
        return began

    def _wait_damage(self, timeout: float) -> float | None:
        """The time of the next damage event, by the server's clock (others in the queue are
        taken with it)."""
        d = self._display
        deadline = time.monotonic() + timeout
        while True:
            while d.pending_events():
                event = d.next_event()
                if event.type == self._damage_event:
                    while d.pending_events():  # the rest of a batch belongs to this paint
                        d.next_event()
                    return server_time(int(event.timestamp), time.monotonic())
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            select.select([d.fileno()], [], [], left)

    def close(self) -> None:
        """Close the connection (the mode it made goes with it)."""
        self._display.close()
