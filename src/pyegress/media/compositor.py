"""The native room composite: participants' frames drawn into one canvas by a layout.

The event loop only takes snapshots (:meth:`Compositor.at` returns a :class:`Scene`: which
frame goes where); the encode thread draws them (:meth:`Scene.render`), with PyAV's swscale for
scaling and numpy slicing for placement — never per-pixel Python. Canvases are kept between
renders (a small ring of frames, handed to the encoder as they are) and only tiles whose frame
changed are redrawn. Labels and placeholders are drawn once with Pillow and cached.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .frames import Planes, fill, frame_planes, paste, planes, reformat, region, solid_canvas, to_av
from .inputs import Picture
from .layout import Layout, Rect, grid, speaker
from .timeline import Ticks, VideoInput

# limited-range BT.601 YUV of the colours we draw
_DARK_BG = (16, 128, 128)  # black
_LIGHT_BG = (235, 128, 128)  # white
_DARK_TILE = (50, 128, 128)  # placeholder tile, dark theme (~RGB 40)
_LIGHT_TILE = (205, 128, 128)  # placeholder tile, light theme (~RGB 220)


@dataclass
class Participant:
    """What the compositor knows of one participant."""

    identity: str
    name: str
    order: int
    camera: VideoInput[Picture] | None = None
    screen: VideoInput[Picture] | None = None
    camera_muted: bool = False
    screen_muted: bool = False


@dataclass(frozen=True)
class Tile:
    """One drawn tile: a frame (or a placeholder) in a rectangle."""

    rect: Rect
    label: str
    frame: object | None  # an SDK VideoFrame or av.VideoFrame; None draws a placeholder
    cover: bool  # crop to fill (cameras) or letterbox (screen shares)
    who: tuple[str, bool] = ("", False)  # (identity, screen share?) whose video this is


class Painter:
    """The canvases kept between renders: per size, a ring of ``RING`` frames (encode thread only).

    A render draws into the next frame of the ring and repaints only the tiles whose frame
    changed since that canvas was last drawn (all of it when the tiles moved, changed labels or
    theme), then hands the encoder that frame itself: no canvas is allocated or copied per
    render. A returned frame stays as it is until ``RING - 1`` more renders of its size: the
    pipeline holds only the latest, and the encoder copies what it encodes.
    """

    RING = 3

    def __init__(self) -> None:
        self._rings: dict[tuple[int, int], list[_Canvas]] = {}
        self._next: dict[tuple[int, int], int] = {}

    def canvas(self, width: int, height: int) -> _Canvas:
        """The next canvas of ``width`` x ``height`` to draw on."""
        size = (width, height)
        ring = self._rings.setdefault(size, [])
        k = self._next.get(size, 0)
        self._next[size] = (k + 1) % self.RING
        if k == len(ring):
            frame = av.VideoFrame(width, height, "yuv420p")
            ring.append(_Canvas(frame, frame_planes(frame)))
        return ring[k]


_UNDRAWN = object()


@dataclass
class _Canvas:
    frame: av.VideoFrame
    planes: Planes
    key: tuple[object, ...] = ()
    drawn: list[object] = field(default_factory=list)  # the frame drawn in each tile


@dataclass
class Scene:
    """A snapshot of the composite at one instant; rendered on the encode thread."""

    width: int
    height: int
    light: bool
    tiles: list[Tile] = field(default_factory=list)
    painter: Painter = field(default_factory=Painter, repr=False)

    def render(self, width: int, height: int) -> av.VideoFrame:
        """Draw the scene at ``width`` x ``height`` (the layout was computed for that size)."""
        state = self.painter.canvas(width, height)
        dst = state.planes
        key = (self.light, tuple((t.rect, t.label, t.cover) for t in self.tiles))
        if key != state.key:
            fill(dst, _LIGHT_BG if self.light else _DARK_BG)
            state.key, state.drawn = key, [_UNDRAWN] * len(self.tiles)
        for i, t in enumerate(self.tiles):
            if state.drawn[i] is t.frame:
                continue  # unchanged since this canvas was last drawn: already on it
            r = t.rect
            if t.frame is None:
                paste(dst, planes(_placeholder(t.label, r.w, r.h, self.light), r.w, r.h), r.x, r.y)
            else:
                draw_frame(dst, t.frame, r, cover=t.cover, light=self.light)
                if t.label:
                    lab, lw, lh = _label(t.label, max(14, min(28, r.h // 12)))
                    if lw <= r.w and lh <= r.h:
                        paste(dst, planes(lab, lw, lh), r.x + 4, r.y + r.h - lh - 4)
            state.drawn[i] = t.frame
        return state.frame


def _source(frame: object) -> av.VideoFrame:
    """A ``yuv420p`` PyAV frame of an SDK or PyAV frame (SDK I420 buffers are wrapped, not copied)."""
    if isinstance(frame, av.VideoFrame):
        return frame if frame.format.name == "yuv420p" else reformat(frame)
    return to_av(frame)  # type: ignore[arg-type]


#: A camera frame at most this much larger than its tile (per side) is cropped to it rather than
#: scaled: a 640x360 camera in a 628x348 grid cell loses 6 pixels at each edge, and the
#: encode thread saves a swscale pass per frame.
CROP_SLACK = 0.07


def draw_frame(dst: Planes, frame: object, rect: Rect, *, cover: bool, light: bool = False) -> None:
    """Draw ``frame`` into ``rect`` of the canvas ``dst``: cropped to fill (cover) or letterboxed.

    One swscale pass to the needed size (none when it already has it, or when a camera frame is
    only slightly larger than the tile: see ``CROP_SLACK``), then numpy copies of the cropped
    plane views straight into the canvas.
    """
    src = _source(frame)
    sw, sh = src.width, src.height
    x, y = rect.x - rect.x % 2, rect.y - rect.y % 2
    w, h = rect.w - rect.w % 2, rect.h - rect.h % 2
    if cover and w <= sw <= w * (1 + CROP_SLACK) and h <= sh <= h * (1 + CROP_SLACK):
        fw, fh = sw, sh  # a few % larger than the tile: its centre is cut out, no scaling
    elif cover:
        scale = max(w / sw, h / sh)
        fw, fh = max(w, math.ceil(sw * scale / 2) * 2), max(h, math.ceil(sh * scale / 2) * 2)
    else:
        scale = min(w / sw, h / sh)
        fw, fh = min(w, max(2, int(sw * scale) // 2 * 2)), min(h, max(2, int(sh * scale) // 2 * 2))
    scaled = frame_planes(src if (fw, fh) == (sw, sh) else reformat(src, fw, fh))
    if cover:  # the centre of the scaled frame fills the rect
        ox, oy = (fw - w) // 4 * 2, (fh - h) // 4 * 2
        paste(dst, region(scaled, ox, oy, w, h), x, y)
    else:  # the whole scaled frame, centred on the background
        fill(dst, _LIGHT_BG if light else _DARK_BG, x, y, w, h)
        paste(dst, scaled, x + (w - fw) // 4 * 2, y + (h - fh) // 4 * 2)


def fit_tile(frame: object, w: int, h: int, *, cover: bool, light: bool = False) -> np.ndarray:
    """A ``yuv420p`` ndarray of ``w`` x ``h``: the frame cropped to fill (cover) or letterboxed."""
    tile = solid_canvas(w, h, _LIGHT_BG if light else _DARK_BG)
    draw_frame(planes(tile, w, h), frame, Rect(0, 0, w, h), cover=cover, light=light)
    return tile


def _rgb_to_yuv420(img: Image.Image) -> np.ndarray:
    frame = av.VideoFrame.from_ndarray(np.asarray(img.convert("RGB")), format="rgb24")
    out: np.ndarray = frame.reformat(format="yuv420p").to_ndarray()
    return out


@lru_cache(maxsize=256)
def _label(text: str, size: int) -> tuple[np.ndarray, int, int]:
    """A name label (white on a dark box), as a ``yuv420p`` ndarray with its even size."""
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    w, h = (right - left + 12 + 1) // 2 * 2, (bottom - top + 8 + 1) // 2 * 2
    img = Image.new("RGB", (w, h), (20, 20, 20))
    ImageDraw.Draw(img).text((6 - left, 4 - top), text, font=font, fill=(255, 255, 255))
    return _rgb_to_yuv420(img), w, h


def initials(name: str) -> str:
    """``"Ada Lovelace"`` → ``"AL"``; ``"bob"`` → ``"B"``."""
    parts = [p for p in name.replace("_", " ").replace("-", " ").split() if p]
    return "".join(p[0] for p in parts[:2]).upper() or "?"


@lru_cache(maxsize=64)
def _placeholder(name: str, w: int, h: int, light: bool) -> np.ndarray:
    """A tile for a participant without video: their initials large, their name below."""
    bg, fg = ((220, 220, 220), (60, 60, 60)) if light else ((40, 40, 40), (230, 230, 230))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    big = ImageFont.load_default(size=max(12, h // 4))
    small = ImageFont.load_default(size=max(10, h // 14))
    for text, font, cy in ((initials(name), big, h * 0.45), (name, small, h * 0.8)):
        left, top, right, bottom = font.getbbox(text)
        draw.text(((w - (right - left)) / 2 - left, cy - (bottom - top) / 2 - top), text, font=font, fill=fg)
    return _rgb_to_yuv420(img)


class Compositor:
    """Holds the room's participants and their video inputs; snapshots scenes by layout.

    Mutated from the event loop (joins, tracks, mutes, speaker); read by ``at`` on the loop too.
    Participants in ``excluded`` get no tile (the layout flows as if they had left); with
    ``hide_without_video`` neither do those who publish no video.
    """

    def __init__(self, width: int, height: int, layout: Layout, *, ticks: Ticks | None = None) -> None:
        self.width, self.height = width, height
        self.ticks = ticks  # each video input is phase-locked to the output's frames
        self.layout = layout
        self.participants: dict[str, Participant] = {}
        self.speaker: str | None = None
        self._joined = 0
        self._lock = threading.Lock()
        self._last: Scene | None = None
        self._painter = Painter()  # the canvas kept between renders (encode thread)
        self._last_key: tuple[object, ...] = ()
        self._skipped_gone = 0  # frames_skipped of inputs no longer here
        self.excluded: set[str] = set()
        self.hide_without_video = False

    @property
    def frames_skipped(self) -> int:
        """Frames of every video input, past and present, that no scene showed."""
        live = (v for p in self.participants.values() for v in (p.camera, p.screen) if v is not None)
        return self._skipped_gone + sum(v.frames_skipped for v in live)

    def _let_go(self, vi: VideoInput[Picture] | None) -> None:
        if vi is not None:
            self._skipped_gone += vi.frames_skipped

    def tile_sizes(self) -> dict[tuple[str, bool], tuple[int, int]]:
        """(width, height) of each video's tile in the latest scene, by (identity, screen share?)."""
        scene = self._last
        return {t.who: (t.rect.w, t.rect.h) for t in scene.tiles} if scene is not None else {}

    def join(self, identity: str, name: str) -> Participant:
        """Add a participant (idempotent); tiles follow join order."""
        p = self.participants.get(identity)
        if p is None:
            p = Participant(identity, name or identity, self._joined)
            self._joined += 1
            self.participants[identity] = p
        elif name:
            p.name = name
        return p

    def leave(self, identity: str) -> None:
        """Remove a participant and their tiles."""
        p = self.participants.pop(identity, None)
        if p is not None:
            self._let_go(p.camera)
            self._let_go(p.screen)
        if self.speaker == identity:
            self.speaker = None

    def video(self, identity: str, *, screen: bool) -> VideoInput[Picture]:
        """A fresh video input for the participant's camera or screen share."""
        p = self.join(identity, "")
        vi: VideoInput[Picture] = VideoInput(self.ticks)
        self._let_go(p.screen if screen else p.camera)
        if screen:
            p.screen, p.screen_muted = vi, False
        else:
            p.camera, p.camera_muted = vi, False
        return vi

    def drop_video(self, identity: str, *, screen: bool) -> None:
        """The camera or screen share was unpublished: back to a placeholder (or no tile)."""
        p = self.participants.get(identity)
        if p is not None:
            self._let_go(p.screen if screen else p.camera)
            if screen:
                p.screen = None
            else:
                p.camera = None

    def set_muted(self, identity: str, *, screen: bool, muted: bool) -> None:
        """A video track was muted or unmuted."""
        p = self.participants.get(identity)
        if p is not None:
            if screen:
                p.screen_muted = muted
            else:
                p.camera_muted = muted

    def at(self, when: float) -> Scene:
        """The scene at monotonic time ``when``; the same object while nothing changed."""
        people = sorted((p for p in self.participants.values() if self._shown(p)), key=lambda p: p.order)
        shares = [(p, p.screen.at(when)) for p in people if p.screen is not None and not p.screen_muted]
        shares = [(p, f) for p, f in shares if f is not None]
        cams = [
            (p, p.camera.at(when) if p.camera is not None and not p.camera_muted else None) for p in people
        ]
        tiles = self._place(shares, cams)
        key = (self.layout, tuple((t.rect, id(t.frame), t.label) for t in tiles))
        if self._last is None or key != self._last_key:
            self._last = Scene(self.width, self.height, self.layout.light, tiles, self._painter)
            self._last_key = key
        return self._last

    def _shown(self, p: Participant) -> bool:
        if p.identity in self.excluded:
            return False
        return not self.hide_without_video or p.camera is not None or p.screen is not None

    def _place(
        self,
        shares: Sequence[tuple[Participant, object]],
        cams: Sequence[tuple[Participant, object | None]],
    ) -> list[Tile]:
        W, H = self.width, self.height
        share_tiles = [(f"{p.name} (screen)", f, False, (p.identity, True)) for p, f in shares]
        cam_tiles = [(p.name, f, True, (p.identity, False)) for p, f in cams]
        if self.layout.kind == "grid":
            items = share_tiles + cam_tiles
            return [
                Tile(r, lab, f, cover, who)
                for r, (lab, f, cover, who) in zip(grid(len(items), W, H), items, strict=True)
            ]
        # speaker / single-speaker: a screen share takes precedence, else the active speaker
        if share_tiles:
            main, rest = share_tiles[-1], cam_tiles + share_tiles[:-1]
        elif cam_tiles:
            ids = [p.identity for p, _ in cams]
            idx = ids.index(self.speaker) if self.speaker in ids else 0
            main, rest = cam_tiles[idx], cam_tiles[:idx] + cam_tiles[idx + 1 :]
        else:
            return []
        if self.layout.kind == "single-speaker":
            rest = []
        main_rect, strip = speaker(len(rest), W, H)
        tiles = [Tile(main_rect, *main)]
        tiles += [Tile(r, lab, f, cover, who) for r, (lab, f, cover, who) in zip(strip, rest, strict=True)]
        return tiles
