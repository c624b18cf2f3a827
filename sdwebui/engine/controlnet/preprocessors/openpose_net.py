"""The OpenPose body network (CMU, Cao et al. 2017) of lllyasviel/Annotators' `openpose/body_pose_model.pth`:
a VGG-19 front (conv1_1 .. conv4_4_CPM), then six stages of two branches each — part affinity fields
(38 maps, `*_L1`) and part heat maps (19 maps, `*_L2`) — every later stage reading the previous stage's
maps with the front's features. Layer names are the file's keys (`conv1_1.weight`, `Mconv7_stage6_L2.bias`).
Widths scale with the file (64 at conv1_1 in the published weights).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

PAFS, HEATMAPS = 38, 19


def _front(w: int) -> list[tuple[str, int, int, int]]:
    """(name, in, out, kernel) of the VGG front; "pool" entries are 2x2 max pools."""
    return [
        ("conv1_1", 3, w, 3), ("conv1_2", w, w, 3), ("pool", 0, 0, 0),
        ("conv2_1", w, 2 * w, 3), ("conv2_2", 2 * w, 2 * w, 3), ("pool", 0, 0, 0),
        ("conv3_1", 2 * w, 4 * w, 3), ("conv3_2", 4 * w, 4 * w, 3), ("conv3_3", 4 * w, 4 * w, 3),
        ("conv3_4", 4 * w, 4 * w, 3), ("pool", 0, 0, 0),
        ("conv4_1", 4 * w, 8 * w, 3), ("conv4_2", 8 * w, 8 * w, 3),
        ("conv4_3_CPM", 8 * w, 4 * w, 3), ("conv4_4_CPM", 4 * w, 2 * w, 3),
    ]  # fmt: skip


def _stage(stage: int, branch: int, features: int, outputs: int) -> list[tuple[str, int, int, int]]:
    if stage == 1:
        names = [f"conv5_{i}_CPM_L{branch}" for i in range(1, 6)]
        shapes = [(features, features, 3)] * 3 + [(features, 4 * features, 1), (4 * features, outputs, 1)]
    else:
        names = [f"Mconv{i}_stage{stage}_L{branch}" for i in range(1, 8)]
        inputs = PAFS + HEATMAPS + features
        shapes = [(inputs, features, 7)] + [(features, features, 7)] * 4
        shapes += [(features, features, 1), (features, outputs, 1)]
    return [(name, *shape) for name, shape in zip(names, shapes, strict=True)]


class OpenPoseBody(nn.Module):
    """BGR / 256 - 0.5 [B, 3, H, W] -> (PAFs [B, 38, H/8, W/8], heat maps [B, 19, H/8, W/8])."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.front = _front(width)
        self.stages = [
            [_stage(s, b, 2 * width, (PAFS, HEATMAPS)[b - 1]) for b in (1, 2)] for s in range(1, 7)
        ]
        for name, channels_in, channels_out, kernel in self.front + [
            layer for s in self.stages for b in s for layer in b
        ]:
            if name != "pool":
                self.add_module(name, nn.Conv2d(channels_in, channels_out, kernel, padding=kernel // 2))

    def _run(self, layers: list[tuple[str, int, int, int]], x: torch.Tensor, last_relu: bool) -> torch.Tensor:
        for index, (name, *_shape) in enumerate(layers):
            if name == "pool":
                x = F.max_pool2d(x, 2, 2)
                continue
            x = getattr(self, name)(x)
            if index < len(layers) - 1 or last_relu:
                x = F.relu(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self._run(self.front, x, last_relu=True)
        h = features
        for number, (pafs, heat) in enumerate(self.stages, start=1):
            # the published network keeps a ReLU after its very last heat-map layer (the original quirk)
            paf_out = self._run(pafs, h, last_relu=False)
            heat_out = self._run(heat, h, last_relu=number == 6)
            h = torch.cat([paf_out, heat_out, features], dim=1)
        return paf_out, heat_out


def build(state: dict[str, torch.Tensor]) -> OpenPoseBody:
    return OpenPoseBody(state["conv1_1.weight"].shape[0])
