"""EfficientNet (Tan & Le) in the TensorFlow-ported form (`tf_` weights: BN eps 1e-3, "same" padding computed
per input for strided convolutions, swish) with the key layout of rwightman's gen-efficientnet
(`conv_stem`, `bn1`, `blocks.i.j.{conv_pw, bn1, conv_dw, bn2, se.conv_reduce, se.conv_expand, conv_pwl, bn3}`,
`conv_head`, `bn2`). The blocks are read from a state dict, so any width and depth (B0..B7) builds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


@dataclass(frozen=True)
class BlockSpec:
    channels_in: int
    channels_out: int
    expanded: int  # channels of the depthwise conv (= channels_in for the first stage's blocks)
    kernel: int
    stride: int
    se_channels: int
    inverted: bool  # False: the first stage's depthwise-separable block (no 1x1 expansion)


class SameConv2d(nn.Conv2d):
    """A conv with TensorFlow's "same" padding: static when stride 1, computed per input when strided."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int = 1, groups: int = 1):
        padding = (kernel - 1) // 2 if stride == 1 else 0
        super().__init__(channels_in, channels_out, kernel, stride, padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            pads = []
            for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv_expand(F.silu(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


class MBConv(nn.Module):
    """Inverted residual (1x1 expand, depthwise, SE, 1x1 project) or, without expansion, depthwise-separable."""

    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.inverted = spec.inverted
        self.residual = spec.stride == 1 and spec.channels_in == spec.channels_out
        if spec.inverted:
            self.conv_pw, self.bn1 = (
                nn.Conv2d(spec.channels_in, spec.expanded, 1, bias=False),
                _bn(spec.expanded),
            )
        dw = SameConv2d(spec.expanded, spec.expanded, spec.kernel, spec.stride, groups=spec.expanded)
        project = nn.Conv2d(spec.expanded, spec.channels_out, 1, bias=False)
        if spec.inverted:
            self.conv_dw, self.bn2 = dw, _bn(spec.expanded)
            self.conv_pwl, self.bn3 = project, _bn(spec.channels_out)
        else:
            self.conv_dw, self.bn1 = dw, _bn(spec.expanded)
            self.conv_pw, self.bn2 = project, _bn(spec.channels_out)
        self.se = SqueezeExcite(spec.expanded, spec.se_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted:
            h = F.silu(self.bn1(self.conv_pw(x)))
            h = self.se(F.silu(self.bn2(self.conv_dw(h))))
            h = self.bn3(self.conv_pwl(h))
        else:
            h = self.se(F.silu(self.bn1(self.conv_dw(x))))
            h = self.bn2(self.conv_pw(h))
        return h + x if self.residual else h


class EfficientNet(nn.Module):
    """forward -> the outputs of the stem (after its activation), of each stage, and of conv_head (pre-BN)."""

    def __init__(self, stem: int, stages: list[list[BlockSpec]], head: int):
        super().__init__()
        self.conv_stem, self.bn1 = SameConv2d(3, stem, 3, stride=2), _bn(stem)
        self.blocks = nn.Sequential(*(nn.Sequential(*(MBConv(s) for s in stage)) for stage in stages))
        self.conv_head, self.bn2 = nn.Conv2d(stages[-1][-1].channels_out, head, 1, bias=False), _bn(head)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = [F.silu(self.bn1(self.conv_stem(x)))]
        for stage in self.blocks:
            outputs.append(stage(outputs[-1]))
        outputs.append(self.conv_head(outputs[-1]))
        return outputs


def specs_from_state(state: dict[str, torch.Tensor], prefix: str) -> list[list[BlockSpec]]:
    """The block specs of the EfficientNet whose tensors are under `prefix` ("...blocks.")."""
    stages: list[list[BlockSpec]] = []
    for i in range(len(STAGE_STRIDES)):
        stage = []
        while f"{prefix}{i}.{len(stage)}.conv_dw.weight" in state:
            key = f"{prefix}{i}.{len(stage)}."
            dw = state[key + "conv_dw.weight"]
            inverted = key + "conv_pwl.weight" in state
            out = state[key + ("conv_pwl.weight" if inverted else "conv_pw.weight")].shape[0]
            channels_in = state[key + "conv_pw.weight"].shape[1] if inverted else dw.shape[0]
            stride = STAGE_STRIDES[i] if not stage else 1
            reduced = state[key + "se.conv_reduce.weight"].shape[0]
            stage.append(BlockSpec(channels_in, out, dw.shape[0], dw.shape[-1], stride, reduced, inverted))
        if stage:
            stages.append(stage)
    return stages
