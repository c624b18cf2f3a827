"""softedge_hed: lllyasviel's Apache-2 HED network (`ControlNetHED_Apache2`, lllyasviel/Annotators'
`ControlNetHED.pth`), its architecture and key layout (`norm`, `block{1..5}.convs.{i}`, `block{i}.projection`).

The map: each block's 1-channel projection resized to the image, averaged, through a sigmoid, as 0..255.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from sdwebui.engine.controlnet.preprocessors import edges
from sdwebui.engine.controlnet.preprocessors.imaging import resize_with_pad
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams
from sdwebui.engine.controlnet.preprocessors.weights import image_tensor, network

WEIGHTS = "hed/ControlNetHED.pth"


class DoubleConvBlock(nn.Module):
    def __init__(self, input_channel: int, output_channel: int, layer_number: int):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(input_channel, output_channel, 3, padding=1))
        for _ in range(1, layer_number):
            self.convs.append(nn.Conv2d(output_channel, output_channel, 3, padding=1))
        self.projection = nn.Conv2d(output_channel, 1, kernel_size=1, padding=0)

    def forward(self, x: torch.Tensor, down_sampling: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        h = nn.functional.max_pool2d(x, kernel_size=(2, 2), stride=(2, 2)) if down_sampling else x
        for conv in self.convs:
            h = nn.functional.relu(conv(h))
        return h, self.projection(h)


class ControlNetHED(nn.Module):
    """ControlNetHED_Apache2: five VGG-like stages, a side projection after each."""

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.block1 = DoubleConvBlock(3, 64, 2)
        self.block2 = DoubleConvBlock(64, 128, 2)
        self.block3 = DoubleConvBlock(128, 256, 3)
        self.block4 = DoubleConvBlock(256, 512, 3)
        self.block5 = DoubleConvBlock(512, 512, 3)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, p1 = self.block1(x - self.norm)
        h, p2 = self.block2(h, down_sampling=True)
        h, p3 = self.block3(h, down_sampling=True)
        h, p4 = self.block4(h, down_sampling=True)
        _, p5 = self.block5(h, down_sampling=True)
        return [p1, p2, p3, p4, p5]


def _build(state: dict[str, torch.Tensor]) -> ControlNetHED:
    return ControlNetHED()


def _edge(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    """Edge probabilities in [0, 1], [H, W] at the processor resolution."""
    net = network(_build, weights, params.device)
    padded, remove_pad = resize_with_pad(image, params.resolution)  # the extension's input size
    height, width = padded.shape[:2]
    with torch.no_grad():
        sides = [p[0, 0].cpu().numpy().astype(np.float32) for p in net(image_tensor(padded, net=net))]
    sides = [cv2.resize(e, (width, height), interpolation=cv2.INTER_LINEAR) for e in sides]
    return remove_pad(1 / (1 + np.exp(-np.mean(np.stack(sides, axis=2), axis=2))))


MODULES = edges.SoftEdge(_edge)  # hed, hed_safe and the scribble from the same file
