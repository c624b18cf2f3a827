"""Image array helpers with the extension's resize contract (shortest side to the processor resolution)."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """RGB uint8 [H, W, 3]; transparent pixels composed over white (the extension's HWC3 of RGBA)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        return (rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def to_image(array: np.ndarray) -> Image.Image:
    """A PIL image of a uint8 map; a single channel map becomes RGB (what ControlNets take)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array.astype(np.uint8)))


def resize_with_pad(
    rgb: np.ndarray, resolution: int
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Shortest side scaled to `resolution` (cubic up, area down), edge-padded to a multiple of 64.

    Returns the padded image and the function that crops a map of it back to the scaled size.
    """
    height, width = rgb.shape[:2]
    scale = float(resolution) / float(min(height, width))
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    target_h, target_w = int(round(height * scale)), int(round(width * scale))
    resized = cv2.resize(rgb, (target_w, target_h), interpolation=interpolation)
    pad_h, pad_w = -target_h % 64, -target_w % 64
    padded = np.pad(resized, [[0, pad_h], [0, pad_w], [0, 0]], mode="edge")

    def remove_pad(result: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(result[:target_h, :target_w])

    return np.ascontiguousarray(padded), remove_pad


def resize_shortest_side(rgb: np.ndarray, size: int) -> np.ndarray:
    """Shortest side to `size` with area interpolation (the color grid's resize)."""
    height, width = rgb.shape[:2]
    if height < width:
        new_h, new_w = size, int(round(width / height * size))
    else:
        new_h, new_w = int(round(height / width * size)), size
    return cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
