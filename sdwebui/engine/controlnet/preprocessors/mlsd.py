"""mlsd: M-LSD line segment detection (NAVER, Apache-2) with lllyasviel's `mlsd/mlsd_large_512_fp32.pth`,
its architecture and key layout: a truncated MobileNetV2 (`backbone.features.0..13`, 4 input channels,
TFLite-style padding of the stride-2 convolutions) and the decoder blocks `block15..block23`.

The network sees the padded image (RGB and a channel of ones, in [-1, 1]) and gives at half resolution a
centre heat map and per-pixel start/end displacements; local maxima (3x3) over the value threshold whose
segment is longer than the distance threshold are drawn as 1 px white lines on black.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sdwebui.engine.controlnet.preprocessors import mobilenet
from sdwebui.engine.controlnet.preprocessors.imaging import resize_with_pad
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams
from sdwebui.engine.controlnet.preprocessors.weights import device_of, network

WEIGHTS = "mlsd/mlsd_large_512_fp32.pth"
_TAPS = (1, 3, 6, 10, 13)  # the feature indexes the decoder reads
_TOP_K = 200


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*mobilenet.features(4, stages=5, tflite=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, feature in enumerate(self.features):
            x = feature(x)
            if index in _TAPS:
                taps.append(x)
        return taps


def _conv_bn_relu(channels_in: int, channels_out: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    conv = nn.Conv2d(channels_in, channels_out, kernel, padding=padding, dilation=dilation)
    return nn.Sequential(conv, nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True))


class Merge(nn.Module):
    """BlockTypeA: 1x1 of the skip feature, 1x1 (and 2x up) of the deeper one, concatenated."""

    def __init__(self, skip: int, deep: int, upscale: bool = True):
        super().__init__()
        self.conv1 = _conv_bn_relu(deep, 64, 1)
        self.conv2 = _conv_bn_relu(skip, 64, 1)
        self.upscale = upscale

    def forward(self, skip: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        deep = self.conv1(deep)
        if self.upscale:
            deep = F.interpolate(deep, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.cat((self.conv2(skip), deep), dim=1)


class Refine(nn.Module):
    """BlockTypeB: a residual 3x3, then a 3x3 to 64 channels."""

    def __init__(self):
        super().__init__()
        self.conv1 = _conv_bn_relu(128, 128, 3)
        self.conv2 = _conv_bn_relu(128, 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x) + x)


class Head(nn.Module):
    """BlockTypeC: dilated 3x3, 3x3, 1x1 to 16 maps."""

    def __init__(self):
        super().__init__()
        self.conv1 = _conv_bn_relu(64, 64, 3, dilation=5)
        self.conv2 = _conv_bn_relu(64, 64, 3)
        self.conv3 = nn.Conv2d(64, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class MLSDLarge(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.block15, self.block16 = Merge(64, 96, upscale=False), Refine()
        self.block17, self.block18 = Merge(32, 64), Refine()
        self.block19, self.block20 = Merge(24, 64), Refine()
        self.block21, self.block22 = Merge(16, 64), Refine()
        self.block23 = Head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[1, 4, H, W] -> [1, 9, H/2, W/2]: centre logits, then start (x, y) and end (x, y) displacements."""
        c1, c2, c3, c4, c5 = self.backbone(x)
        x = self.block16(self.block15(c4, c5))
        x = self.block18(self.block17(c3, x))
        x = self.block20(self.block19(c2, x))
        x = self.block22(self.block21(c1, x))
        return self.block23(x)[:, 7:]


def _build(state: dict[str, torch.Tensor]) -> MLSDLarge:
    return MLSDLarge()


def _segments(output: torch.Tensor, score_threshold: float, distance_threshold: float) -> np.ndarray:
    """[N, 4] segments (x0, y0, x1, y1) in the output's pixels."""
    heat = torch.sigmoid(output[:, 0])
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).float()
    width = heat.shape[-1]
    scores, indices = torch.topk(peaks.flatten(), min(_TOP_K, peaks.numel()))
    ys, xs = (indices // width).numpy(), (indices % width).numpy()
    displacement = output[0, 1:5].permute(1, 2, 0).numpy()[ys, xs]  # [K, 4]
    length = np.linalg.norm(displacement[:, :2] - displacement[:, 2:], axis=1)
    keep = (scores.numpy() > score_threshold) & (length > distance_threshold)
    centre = np.stack([xs, ys, xs, ys], axis=1).astype(np.float32)
    return (centre + displacement)[keep]


def mlsd_map(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    """uint8 [H, W, 3] -> the line map, uint8 [H, W] at the processor resolution (threshold_a: value
    threshold, threshold_b: distance threshold, as the extension's sliders)."""
    padded, remove_pad = resize_with_pad(image, params.resolution)
    net = network(_build, weights, params.device)
    ones = np.ones(padded.shape[:2] + (1,), dtype=np.float32)  # scaled with the image, as in training
    x = np.concatenate([padded.astype(np.float32), ones], axis=2) / 127.5 - 1.0
    with torch.no_grad():
        output = net(
            torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].to(device_of(net))
        ).cpu()
    lines = np.zeros(padded.shape[:2], dtype=np.uint8)
    for x0, y0, x1, y1 in _segments(output, params.threshold_a, params.threshold_b) * 2:  # half resolution
        cv2.line(lines, (int(x0), int(y0)), (int(x1), int(y1)), 255, 1)
    return remove_pad(lines)
