"""A unit's detected map at a pass's size, as the extension sizes it, and as the control model's input tensor.

Resize modes: Just Resize (stretch), Crop and Resize (cover, centre crop), Resize and Fill (fit, pad with the
median colour of the map's border). Maps with few colours (segmentation, binary edges) are resized with
nearest neighbour, shrinking with area averaging, enlarging with bicubic; binary maps are thresholded again
(Otsu) so edges stay edges. Pixel perfect: the preprocessor resolution that maps the image 1:1 onto the target.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image

from sdwebui.engine.controlnet.units import ResizeMode


def pixel_perfect_resolution(image: Image.Image, width: int, height: int, mode: ResizeMode) -> int:
    """The extension's estimate: the short side scaled by the factor the resize mode applies."""
    k0, k1 = height / image.height, width / image.width
    k = min(k0, k1) if mode == ResizeMode.RESIZE_AND_FILL else max(k0, k1)
    return int(np.round(k * min(image.width, image.height)))


def _resize_array(x: np.ndarray, width: int, height: int) -> np.ndarray:
    if x.shape[0] == height and x.shape[1] == width:
        return x
    colours = len(np.unique(x.reshape(-1, x.shape[2]), axis=0))
    smaller = width * height < x.shape[0] * x.shape[1]
    binary = colours == 2 and x.min() < 16 and x.max() > 240
    if 2 < colours < 200:
        interpolation = cv2.INTER_NEAREST
    elif smaller:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_CUBIC
    y = cv2.resize(x, (width, height), interpolation=interpolation)
    if y.ndim == 2:
        y = y[:, :, None]
    if binary:
        grey = np.mean(y.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
        _, grey = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        y = np.stack([grey] * x.shape[2], axis=2)
    return y


def fit_map(detected: Image.Image, width: int, height: int, mode: ResizeMode) -> np.ndarray:
    """The map as uint8 [height, width, C] (C = 3, or 4 with an inpaint mask as alpha)."""
    x = np.asarray(detected.convert("RGBA" if detected.mode == "RGBA" else "RGB"), dtype=np.uint8)
    if mode == ResizeMode.JUST_RESIZE:
        return _resize_array(x, width, height)
    old_h, old_w = x.shape[:2]
    k0, k1 = height / old_h, width / old_w
    if mode == ResizeMode.RESIZE_AND_FILL:
        k = min(k0, k1)
        borders = np.concatenate([x[0, :, :], x[-1, :, :], x[:, 0, :], x[:, -1, :]], axis=0)
        colour = np.median(borders, axis=0).astype(np.uint8)
        if len(colour) == 4:
            colour[3] = 255  # the padding is to be inpainted
        canvas = np.tile(colour[None, None], (height, width, 1))
        y = _resize_array(x, max(1, round(old_w * k)), max(1, round(old_h * k)))
        top, left = max(0, (height - y.shape[0]) // 2), max(0, (width - y.shape[1]) // 2)
        canvas[top : top + y.shape[0], left : left + y.shape[1]] = y[:height, :width]
        return canvas
    k = max(k0, k1)
    y = _resize_array(x, max(width, round(old_w * k)), max(height, round(old_h * k)))
    top, left = max(0, (y.shape[0] - height) // 2), max(0, (y.shape[1] - width) // 2)
    return np.ascontiguousarray(y[top : top + height, left : left + width])


def to_tensor(fitted: np.ndarray) -> torch.Tensor:
    """[H, W, C] uint8 -> [C', H, W] float in [0, 1]; an RGBA inpaint map becomes the ControlNet inpaint input
    (masked pixels -1, as the extension's inpaint protocol)."""
    t = torch.from_numpy(np.array(fitted, dtype=np.uint8)).float().div(255.0).permute(2, 0, 1)
    if t.shape[0] == 4:
        colour, mask = t[:3], (t[3:4] > 0.5).float()
        t = colour * (1 - mask) - mask
    return t


def region_mask(mask: Image.Image, width: int, height: int) -> torch.Tensor:
    """An effective-region mask as [1, 1, H, W] in [0, 1] (white = where the unit acts)."""
    grey = mask.convert("L").resize((width, height), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)[None, None]
