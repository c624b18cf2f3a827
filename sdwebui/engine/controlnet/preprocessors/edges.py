"""The extension's variants of a soft-edge map (HED, PiDiNet): "safe" quantisation and scribbles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams

Probabilities = Callable[[np.ndarray, PreprocessParams, Path], np.ndarray]  # [H, W] in [0, 1]

_LINES = [
    np.array(rows, dtype=np.uint8)
    for rows in (
        [[0, 0, 0], [1, 1, 1], [0, 0, 0]],
        [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[0, 0, 1], [0, 1, 0], [1, 0, 0]],
    )
]


def to_uint8(edge: np.ndarray) -> np.ndarray:
    return (edge * 255.0).clip(0, 255).astype(np.uint8)


def safe(edge: np.ndarray, steps: int = 2) -> np.ndarray:
    """Edge probabilities in [0, 1] quantised to `steps` + 1 levels (the "safe" modules: fewer faint edges)."""
    return (edge.astype(np.float32) * (steps + 1)).astype(np.int32).astype(np.float32) / steps


def thin(edges: np.ndarray, threshold: int = 127, sigma: float = 3.0) -> np.ndarray:
    """Non-maximum suppression along the four line directions of the blurred map, then thresholded."""
    x = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), sigma)
    kept = np.zeros_like(x)
    for kernel in _LINES:
        np.putmask(kept, cv2.dilate(x, kernel=kernel) == x, x)
    return np.where(kept > threshold, 255, 0).astype(np.uint8)


def scribble(edges: np.ndarray) -> np.ndarray:
    """uint8 soft edges -> bold binary scribble lines (thinned, blurred by 3, every pixel above 4 set)."""
    blurred = cv2.GaussianBlur(thin(edges), (0, 0), 3.0)
    return np.where(blurred > 4, 255, 0).astype(np.uint8)


@dataclass(frozen=True)
class SoftEdge:
    """The three modules of one edge network: soft edges, "safe" soft edges, scribble."""

    probabilities: Probabilities

    def soft(self, image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
        return to_uint8(self.probabilities(image, params, weights))

    def safe(self, image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
        return to_uint8(safe(self.probabilities(image, params, weights)))

    def scribble(self, image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
        return scribble(self.soft(image, params, weights))

    def sketch(self, image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
        """The T2I-Adapter sketch: the edges above one half, white on black."""
        return np.where(self.probabilities(image, params, weights) > 0.5, 255, 0).astype(np.uint8)
