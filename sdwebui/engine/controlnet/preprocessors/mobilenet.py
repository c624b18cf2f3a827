"""MobileNetV2 feature blocks (Sandler et al.) in torchvision's key layout (`features.i.conv.j`), shared by
M-LSD (4 input channels, TFLite's right/bottom padding of stride-2 convolutions) and the anime face
segmenter (torchvision's symmetric padding)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# (expansion, channels, repeats, first stride) per stage, as in the paper
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class ConvBNReLU6(nn.Sequential):
    """conv, BN, ReLU6. With `tflite`, stride 2 pads right and bottom by one instead of all round."""

    def __init__(
        self,
        channels_in: int,
        channels_out: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        tflite=False,
    ):
        self.right_pad = tflite and stride == 2
        padding = 0 if self.right_pad else (kernel - 1) // 2
        conv = nn.Conv2d(channels_in, channels_out, kernel, stride, padding, groups=groups, bias=False)
        super().__init__(conv, nn.BatchNorm2d(channels_out), nn.ReLU6(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (0, 1, 0, 1)) if self.right_pad else x)


class InvertedResidual(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int, expand: int, tflite: bool = False):
        super().__init__()
        hidden = channels_in * expand
        self.residual = stride == 1 and channels_in == channels_out
        layers: list[nn.Module] = [ConvBNReLU6(channels_in, hidden, kernel=1)] if expand != 1 else []
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden, tflite=tflite),
            nn.Conv2d(hidden, channels_out, 1, bias=False),
            nn.BatchNorm2d(channels_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def features(channels_in: int, stages: int, tflite: bool = False) -> list[nn.Module]:
    """The stem and the inverted residual blocks of the first `stages` stages (features 0, 1, ...)."""
    blocks: list[nn.Module] = [ConvBNReLU6(channels_in, 32, stride=2, tflite=tflite)]
    channels = 32
    for expand, out, repeat, stride in STAGES[:stages]:
        for i in range(repeat):
            blocks.append(InvertedResidual(channels, out, stride if i == 0 else 1, expand, tflite))
            channels = out
    return blocks
