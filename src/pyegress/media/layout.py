"""Layout geometry of the native room composite: where each tile goes on the canvas.

Pure functions over rectangles; the compositor draws. Layouts follow LiveKit's default
templates: ``grid`` (balanced grid of everyone, screen shares included), ``speaker`` (the
active speaker or a screen share large, the others in a strip) and ``single-speaker`` (only the
active speaker or the screen share); ``-light`` variants use a white background, and the legacy
``-dark`` names are accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InvalidRequestError

LAYOUTS = ("grid", "speaker", "single-speaker")
DEFAULT_LAYOUT = "speaker"


@dataclass(frozen=True)
class Layout:
    """A parsed layout name."""

    kind: str  # one of LAYOUTS
    light: bool

    @property
    def name(self) -> str:
        return self.kind + ("-light" if self.light else "")


def parse_layout(name: str, field: str = "layout") -> Layout:
    """``grid``, ``speaker-light``, ``single-speaker-dark``, ... (empty: ``speaker``)."""
    raw = (name or DEFAULT_LAYOUT).strip().lower()
    light = raw.endswith("-light")
    base = raw.removesuffix("-light").removesuffix("-dark")
    if base not in LAYOUTS:
        known = ", ".join(f"{k}[-light]" for k in LAYOUTS)
        raise InvalidRequestError(field, f"unknown layout {name!r}; known: {known}")
    return Layout(base, light)


@dataclass(frozen=True)
class Rect:
    """An even-aligned rectangle on the canvas."""

    x: int
    y: int
    w: int
    h: int


def _even(v: float) -> int:
    return max(2, int(v) // 2 * 2)


def grid_shape(n: int, width: int, height: int) -> tuple[int, int]:
    """Columns and rows for ``n`` 16:9 tiles that use the canvas best (balanced, few empty cells).

    Ties go to more columns on a landscape canvas and more rows on a portrait one.
    """
    if n <= 0:
        return 0, 0
    best: tuple[float, int, int] = (-1.0, 1, n)
    order = range(n, 0, -1) if width >= height else range(1, n + 1)
    for cols in order:
        rows = math.ceil(n / cols)
        if (cols - 1) * rows >= n:  # a column fewer would do: not balanced
            continue
        cw, ch = width / cols, height / rows
        tile_area = min(cw, ch * 16 / 9) * min(ch, cw * 9 / 16)
        if tile_area > best[0] + 1e-6:
            best = (tile_area, cols, rows)
    return best[1], best[2]


def grid(n: int, width: int, height: int, gap: int = 8) -> list[Rect]:
    """``n`` equal cells in a balanced grid; a short last row is centred."""
    cols, rows = grid_shape(n, width, height)
    if n == 0:
        return []
    cw, ch = (width - gap * (cols + 1)) / cols, (height - gap * (rows + 1)) / rows
    cells = []
    for i in range(n):
        r, c = divmod(i, cols)
        in_row = min(cols, n - r * cols)
        x0 = (width - in_row * cw - (in_row - 1) * gap) / 2
        cells.append(Rect(_even(x0 + c * (cw + gap)), _even(gap + r * (ch + gap)), _even(cw), _even(ch)))
    return cells


def speaker(n_others: int, width: int, height: int, gap: int = 8) -> tuple[Rect, list[Rect]]:
    """The main area and a strip of ``n_others`` cells (right side, or bottom when portrait)."""
    if n_others == 0:
        return Rect(0, 0, width, height), []
    portrait = height > width
    if portrait:
        strip_h = _even(height / 5)
        main = Rect(0, 0, width, _even(height - strip_h - gap))
        count = n_others
        cw = _even(min((width - gap * (count + 1)) / count, (strip_h - 2 * gap) * 16 / 9))
        ch = _even(min(strip_h - 2 * gap, cw * 9 / 16))
        x0 = (width - count * cw - (count - 1) * gap) / 2
        y = main.h + gap + (strip_h - ch) // 2
        return main, [Rect(_even(x0 + i * (cw + gap)), _even(y), cw, ch) for i in range(count)]
    strip_w = _even(width / 5)
    main = Rect(0, 0, _even(width - strip_w - gap), height)
    ch = _even(min((height - gap * (n_others + 1)) / n_others, (strip_w - 2 * gap) * 9 / 16))
    cw = _even(min(strip_w - 2 * gap, ch * 16 / 9))
    y0 = (height - n_others * ch - (n_others - 1) * gap) / 2
    x = main.w + gap + (strip_w - cw) // 2
    return main, [Rect(_even(x), _even(y0 + i * (ch + gap)), cw, ch) for i in range(n_others)]
