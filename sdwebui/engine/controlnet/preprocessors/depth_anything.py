"""depth_anything / depth_anything_v2: Depth Anything (ViT-L/14 in the published
`depth_anything/depth_anything_vitl14.pth` and `depth_anything_v2/depth_anything_v2_vitl.safetensors`) with
the extension's pre- and post-processing: the padded image at the processor resolution is scaled so
both sides are at least 518 px and multiples of 14 (cubic), ImageNet-normalised — in the channel order the
extension feeds (its RGB image through cv2's BGR2RGB, so BGR) — and the depth, resized back, is spread
over 0..255 (near is bright).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from sdwebui.engine.controlnet.preprocessors import vit_dpt
from sdwebui.engine.controlnet.preprocessors.imaging import resize_with_pad
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams
from sdwebui.engine.controlnet.preprocessors.weights import device_of, network

WEIGHTS = "depth_anything/depth_anything_vitl14.pth"
WEIGHTS_V2 = "depth_anything_v2/depth_anything_v2_vitl.safetensors"
_SIDE = 518
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _side(length: int, scale: float) -> int:
    """scale * length to a multiple of 14 (nearest, but not under 518)."""
    size = int(np.round(scale * length / vit_dpt.PATCH) * vit_dpt.PATCH)
    return size if size >= _SIDE else int(np.ceil(scale * length / vit_dpt.PATCH) * vit_dpt.PATCH)


def network_input(rgb: np.ndarray) -> torch.Tensor:
    height, width = rgb.shape[:2]
    scale = max(_SIDE / height, _SIDE / width)
    size = (_side(width, scale), _side(height, scale))
    bgr = rgb[:, :, ::-1].astype(np.float32) / 255.0
    x = (cv2.resize(bgr, size, interpolation=cv2.INTER_CUBIC) - _MEAN) / _STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def depth_anything_map(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    """uint8 [H, W, 3] -> the depth map, uint8 [H, W] at the processor resolution."""
    return _depth(image, params, network(vit_dpt.build, weights, params.device))


def depth_anything_v2_map(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    """The same with the v2 network (its head reads other blocks)."""
    return _depth(image, params, network(vit_dpt.build_v2, weights, params.device))


def _depth(image: np.ndarray, params: PreprocessParams, net: vit_dpt.DepthAnything) -> np.ndarray:
    padded, remove_pad = resize_with_pad(image, params.resolution)
    with torch.no_grad():
        depth = net(network_input(padded).to(device_of(net))).cpu()
    depth = F.interpolate(depth[None], padded.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    spread = (depth - depth.min()) / max(float(depth.max() - depth.min()), 1e-8) * 255.0
    return remove_pad(spread.numpy().astype(np.uint8))
