"""Preprocessors that run no model: numpy / OpenCV maps with the extension's semantics (RGB uint8 in and out)."""

from __future__ import annotations

import cv2
import numpy as np

from sdwebui.engine.controlnet.preprocessors.imaging import resize_shortest_side, resize_with_pad
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams


def identity(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    return rgb


def invert(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """For a white-background drawing with black lines: the lines become white on black (what ControlNets take)."""
    return 255 - rgb


def canny(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    padded, remove_pad = resize_with_pad(rgb, params.resolution)
    edges = cv2.Canny(padded, int(params.threshold_a), int(params.threshold_b))
    return remove_pad(edges)


def threshold(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """White where every channel is above the threshold."""
    padded, remove_pad = resize_with_pad(rgb, params.resolution)
    result = np.zeros(padded.shape[:2], dtype=np.uint8)
    result[np.min(padded, axis=2) > params.threshold_a] = 255
    return remove_pad(result)


def blur_gaussian(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    padded, remove_pad = resize_with_pad(rgb, params.resolution)
    return cv2.GaussianBlur(remove_pad(padded), (0, 0), float(params.threshold_a))


def tile_resample(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Down-sampled by threshold_a (the tile model then adds the detail back); rates under 1.1 keep the image."""
    rate = float(params.threshold_a)
    if rate < 1.1:
        return rgb
    height, width = rgb.shape[:2]
    size = (max(1, int(width / rate)), max(1, int(height / rate)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def scribble_xdog(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Difference of Gaussians (sigma 0.5 and 5) thresholded into white strokes on black."""
    padded, remove_pad = resize_with_pad(rgb, params.resolution)
    fine = cv2.GaussianBlur(padded.astype(np.float32), (0, 0), 0.5)
    coarse = cv2.GaussianBlur(padded.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255).astype(np.uint8)
    result = np.zeros(padded.shape[:2], dtype=np.uint8)
    result[2 * (255 - dog.astype(np.int32)) > params.threshold_a] = 255
    return remove_pad(result)


def _noise_disk(height: int, width: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid (one value per `cell` pixels) cubic-upsampled."""
    noise = rng.uniform(0.0, 1.0, size=(height // cell + 2, width // cell + 2))
    noise = cv2.resize(noise, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)
    noise = noise[cell : cell + height, cell : cell + width]
    noise = noise - noise.min()
    return noise / max(float(noise.max()), 1e-8)


def shuffle(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """The image's content moved by a smooth random flow (the content-shuffle ControlNet's input)."""
    padded, remove_pad = resize_with_pad(rgb, params.resolution)
    image = remove_pad(padded)
    height, width = image.shape[:2]
    rng = np.random.default_rng(params.seed)
    flow_x = _noise_disk(height, width, 256, rng) * float(width - 1)
    flow_y = _noise_disk(height, width, 256, rng) * float(height - 1)
    return cv2.remap(image, flow_x.astype(np.float32), flow_y.astype(np.float32), cv2.INTER_LINEAR)


def color_grid(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """A 64x coarser colour grid (the T2I colour adapter's input), cubic down then nearest up."""
    image = resize_shortest_side(rgb, params.resolution)
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // 64), max(1, height // 64)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
