"""A1111's `modules.masking` for extensions: crop-region math and "fill" over the engine's masking code.

Masks are white (non-zero) where to repaint, as a PIL image or a 2-D numpy array (A1111 accepts both).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from sdwebui.engine import masking as _engine

fill = _engine.fill  # (image, mask) -> RGB image with the masked area filled from its surroundings


def _as_image(mask: Any) -> Image.Image:
    if isinstance(mask, Image.Image):
        return mask.convert("L")
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must be 2-D (height, width), got shape {array.shape}")
    return Image.fromarray((array != 0).astype(np.uint8) * 255, mode="L")


def get_crop_region(mask: Any, pad: int = 0) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) around the mask's non-zero pixels grown by `pad`, clipped to the image (x2/y2
    exclusive). An empty mask gives A1111's inverted box (x1 > x2), which callers treat as "nothing"."""
    image = _as_image(mask)
    box = _engine.crop_region(image, int(pad))
    if box is not None:
        return box
    width, height = image.size
    return max(width - pad, 0), max(height - pad, 0), min(pad, width), min(pad, height)


def get_crop_region_v2(mask: Any, pad: int = 0) -> tuple[int, int, int, int] | None:
    """As `get_crop_region`, but None for an empty mask (A1111 1.9+)."""
    return _engine.crop_region(_as_image(mask), int(pad))


def expand_crop_region(
    crop_region: tuple[int, int, int, int],
    processing_width: int,
    processing_height: int,
    image_width: int,
    image_height: int,
) -> tuple[int, int, int, int]:
    """Grow `crop_region` to the aspect ratio of the processing size, staying inside the image."""
    return _engine.expand_to_aspect(
        tuple(int(v) for v in crop_region), processing_width, processing_height, image_width, image_height
    )
