"""softedge_pidinet: the Pixel Difference Network (Su et al., 2021) of lllyasviel/Annotators'
`pidinet/table5_pidinet.pth` — the "carv4" layout, 60 channels, dilation modules of 24, spatial attention.

Pixel difference convolutions are plain convolutions with a kernel built from the learned 3x3 one:
central ("cd": the kernel minus its sum at the centre), angular ("ad": each tap minus its clockwise
neighbour), radial ("rd": a 5x5 kernel, outer ring minus inner ring), or vanilla ("cv"); the layer order
of carv4 repeats cd, ad, rd, cv. Input BGR in [0, 1]; the map is the fused side output through a sigmoid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sdwebui.engine.controlnet.preprocessors import edges
from sdwebui.engine.controlnet.preprocessors.imaging import resize_with_pad
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams
from sdwebui.engine.controlnet.preprocessors.weights import image_tensor, network

WEIGHTS = "pidinet/table5_pidinet.pth"
CARV4 = ("cd", "ad", "rd", "cv") * 4
_CLOCKWISE = [3, 0, 1, 6, 4, 2, 7, 8, 5]  # for each 3x3 tap, its neighbour one step clockwise
_RING_OUT = [0, 2, 4, 10, 14, 20, 22, 24]  # 5x5 taps the 8 outer values go to (radial)
_RING_IN = [6, 7, 8, 11, 13, 16, 17, 18]  # and their negatives


class PixelDifferenceConv(nn.Module):
    """A 3x3 convolution (no bias) whose effective kernel is the pixel difference of `kind`."""

    def __init__(self, kind: str, channels_in: int, channels_out: int, groups: int = 1):
        super().__init__()
        self.kind, self.groups = kind, groups
        self.weight = nn.Parameter(torch.empty(channels_out, channels_in // groups, 3, 3))

    def kernel(self) -> torch.Tensor:
        w = self.weight
        if self.kind == "cd":
            return w - F.pad(w.sum(dim=(2, 3), keepdim=True), (1, 1, 1, 1))
        if self.kind == "ad":
            flat = w.flatten(2)
            return (flat - flat[:, :, _CLOCKWISE]).view_as(w)
        if self.kind == "rd":
            ring = w.new_zeros(w.shape[0], w.shape[1], 25)
            ring[:, :, _RING_OUT] = w.flatten(2)[:, :, 1:]
            ring[:, :, _RING_IN] = -w.flatten(2)[:, :, 1:]
            return ring.view(w.shape[0], w.shape[1], 5, 5)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel()
        return F.conv2d(x, kernel, padding=kernel.shape[-1] // 2, groups=self.groups)


class PDCBlock(nn.Module):
    """Depthwise pixel difference conv, ReLU, 1x1 conv, residual (pooled and projected when striding)."""

    def __init__(self, kind: str, channels_in: int, channels_out: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Conv2d(channels_in, channels_out, 1)
        self.conv1 = PixelDifferenceConv(kind, channels_in, channels_in, groups=channels_in)
        self.conv2 = nn.Conv2d(channels_in, channels_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, 2, 2)
        y = self.conv2(F.relu(self.conv1(x)))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class DilationModule(nn.Module):
    """CDCM: 1x1 conv, then four dilated 3x3 convs (5, 7, 9, 11) summed."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 1)
        for index, dilation in enumerate((5, 7, 9, 11), start=1):
            conv = nn.Conv2d(channels_out, channels_out, 3, dilation=dilation, padding=dilation, bias=False)
            self.add_module(f"conv2_{index}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return sum(getattr(self, f"conv2_{i}")(x) for i in range(1, 5))


class SpatialAttention(nn.Module):
    """CSAM: x times a sigmoid attention map from a 1x1 (4 channels) then 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class MapReduce(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """Four stages (C, 2C, 4C, 4C channels; 3, 4, 4, 4 blocks), a side output per stage, a 1x1 fusion."""

    def __init__(self, width: int = 60, dilation: int = 24, kinds: tuple[str, ...] = CARV4):
        super().__init__()
        self.init_block = PixelDifferenceConv(kinds[0], 3, width)
        planes = (width, width * 2, width * 4, width * 4)
        layer = 1
        for stage, blocks in enumerate((3, 4, 4, 4), start=1):
            for index in range(1, blocks + 1):
                channels_in = planes[max(stage - 2, 0)] if stage > 1 and index == 1 else planes[stage - 1]
                stride = 2 if stage > 1 and index == 1 else 1
                block = PDCBlock(kinds[layer], channels_in, planes[stage - 1], stride)
                self.add_module(f"block{stage}_{index}", block)
                layer += 1
        self.stages = [(stage, blocks) for stage, blocks in enumerate((3, 4, 4, 4), start=1)]
        self.dilations = nn.ModuleList(DilationModule(p, dilation) for p in planes)
        self.attentions = nn.ModuleList(SpatialAttention(dilation) for _ in planes)
        self.conv_reduces = nn.ModuleList(MapReduce(dilation) for _ in planes)
        self.classifier = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] BGR in [0, 1] -> the fused edge probability [B, 1, H, W]."""
        size = x.shape[-2:]
        h = self.init_block(x)
        sides = []
        for i, (stage, blocks) in enumerate(self.stages):
            for index in range(1, blocks + 1):
                h = getattr(self, f"block{stage}_{index}")(h)
            side = self.conv_reduces[i](self.attentions[i](self.dilations[i](h)))
            sides.append(F.interpolate(side, size, mode="bilinear", align_corners=False))
        return torch.sigmoid(self.classifier(torch.cat(sides, dim=1)))


def _build(state: dict[str, torch.Tensor]) -> PiDiNet:
    return PiDiNet(state["init_block.weight"].shape[0], state["dilations.0.conv1.weight"].shape[0])


def _edge(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    padded, remove_pad = resize_with_pad(image, params.resolution)
    net = network(_build, weights, params.device)
    with torch.no_grad():
        edge = net(image_tensor(padded[:, :, ::-1], 1 / 255.0, net=net))[0, 0].cpu().numpy()
    return remove_pad(edge)


MODULES = edges.SoftEdge(_edge)  # pidinet, pidinet_safe and the scribble from the same file
