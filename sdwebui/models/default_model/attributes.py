"""Read a scene's attributes back from pixels: background colour, shape colour, position, kind, size.

Works on single-shape images such as the default model draws. Every pixel is assigned its nearest
palette colour; the background is the commonest colour along the border, the shape is the largest
group of pixels of another colour. Kind comes from how much of its bounding box the shape fills
(square ~1.0, circle ~0.79, triangle ~0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from sdwebui.models.default_model.dataset import COLOURS, IMAGE_SIZE, PALETTE, SIZES

_PALETTE_RGB = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
MIN_SHAPE_PIXELS = 12  # at 64x64; fewer than this means "no shape"


@dataclass(frozen=True)
class Attributes:
    background: str
    colour: str | None  # None when no shape was found
    position: str | None
    shape: str | None
    size: str | None
    shape_pixels: int


def palette_indices(image: Image.Image) -> np.ndarray:
    """HxW array of indices into COLOURS (nearest colour in RGB)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    distances = ((rgb[:, :, None, :] - _PALETTE_RGB[None, None]) ** 2).sum(-1)
    return distances.argmin(-1)


def colour_fraction(image: Image.Image, colour: str, mask: np.ndarray | None = None) -> float:
    """Fraction of pixels (within ``mask`` if given) whose nearest palette colour is ``colour``."""
    hits = palette_indices(image) == COLOURS.index(colour)
    if mask is not None:
        hits = hits[mask]
    return float(hits.mean()) if hits.size else 0.0


def _kind(fill_ratio: float) -> str:
    if fill_ratio > 0.9:
        return "square"
    if fill_ratio > 0.67:
        return "circle"
    return "triangle"


def _position(center_x: float, width: int) -> str:
    if center_x < width / 3:
        return "left"
    if center_x > 2 * width / 3:
        return "right"
    return "center"


def read_attributes(image: Image.Image) -> Attributes:
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    idx = palette_indices(image)
    border = np.concatenate([idx[0], idx[-1], idx[:, 0], idx[:, -1]])
    background = int(np.bincount(border, minlength=len(COLOURS)).argmax())
    counts = np.bincount(idx.ravel(), minlength=len(COLOURS))
    counts[background] = 0
    colour = int(counts.argmax())
    mask = idx == colour
    shape_pixels = int(mask.sum())
    if shape_pixels < MIN_SHAPE_PIXELS:
        return Attributes(COLOURS[background], None, None, None, None, shape_pixels)
    # Anti-aliased edges blend into neighbouring colours: measure geometry on "not background".
    body = idx != background
    ys, xs = np.nonzero(mask)
    # Ignore isolated speckles: keep rows/columns holding at least 2 shape pixels.
    cols = np.nonzero(mask.sum(0) >= 2)[0]
    rows = np.nonzero(mask.sum(1) >= 2)[0]
    if cols.size == 0 or rows.size == 0:
        return Attributes(COLOURS[background], None, None, None, None, shape_pixels)
    x0, x1, y0, y1 = cols.min(), cols.max(), rows.min(), rows.max()
    box = body[y0 : y1 + 1, x0 : x1 + 1]
    fill = float(box.mean())
    side = max(x1 - x0 + 1, y1 - y0 + 1)
    size = "large" if side >= (SIZES["small"] + SIZES["large"]) / 2 else "small"
    return Attributes(
        background=COLOURS[background],
        colour=COLOURS[colour],
        position=_position(float(xs.mean()), idx.shape[1]),
        shape=_kind(fill),
        size=size,
        shape_pixels=shape_pixels,
    )
