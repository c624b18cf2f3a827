"""lineart (realistic / coarse) and lineart_anime: lllyasviel/Annotators' line generators, their
architectures and key layouts, with the extension's pre- and post-processing.

- lineart / lineart_coarse (`lineart/sk_model.pth`, `lineart/sk_model2.pth`): a residual image-to-image
  generator (`model0` 7x7 stem, `model1` two stride-2 convs, `model2` residual blocks, `model3` two
  transposed convs, `model4` 7x7 to one channel + sigmoid), instance norms without affine weights;
  input in [0, 1], the map 255 - line * 255 (white lines on black).
- lineart_anime (`lineart_anime/netG.pth`): the pix2pix U-Net with 8 levels (`model.model.1.model.3...`
  nested skip blocks), input in [-1, 1] at a multiple of 256, output tanh * 127.5 + 127.5, inverted.
Widths are read from the file (64 in the published weights).
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from sdwebui.engine.controlnet.preprocessors.imaging import resize_with_pad
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams
from sdwebui.engine.controlnet.preprocessors.weights import image_tensor, network

REALISTIC, COARSE, ANIME = "lineart/sk_model.pth", "lineart/sk_model2.pth", "lineart_anime/netG.pth"


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _down_up(width: int, up: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for level in range(2):
        channels = width * 2 ** (2 - level) if up else width * 2**level
        out = channels // 2 if up else channels * 2
        conv = (
            nn.ConvTranspose2d(channels, out, 3, stride=2, padding=1, output_padding=1)
            if up
            else nn.Conv2d(channels, out, 3, stride=2, padding=1)
        )
        layers += [conv, nn.InstanceNorm2d(out), nn.ReLU(inplace=True)]
    return layers


class LineGenerator(nn.Module):
    """The sketch generator of sk_model(2).pth: RGB -> one channel in [0, 1]."""

    def __init__(self, width: int = 64, residual_blocks: int = 3):
        super().__init__()
        self.model0 = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, width, 7), nn.InstanceNorm2d(width), nn.ReLU(inplace=True)
        )
        self.model1 = nn.Sequential(*_down_up(width, up=False))
        self.model2 = nn.Sequential(*(ResidualBlock(width * 4) for _ in range(residual_blocks)))
        self.model3 = nn.Sequential(*_down_up(width, up=True))
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(width, 1, 7), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))


def _line_generator(state: dict[str, torch.Tensor]) -> LineGenerator:
    blocks = {key.split(".")[1] for key in state if key.startswith("model2.")}
    return LineGenerator(state["model0.1.weight"].shape[0], len(blocks))


class SkipBlock(nn.Module):
    """One level of the pix2pix U-Net: down, the inner levels, up, concatenated with its input."""

    def __init__(
        self, outer: int, inner: int, sub: SkipBlock | None = None, input_channels: int | None = None
    ):
        super().__init__()
        self.outermost = input_channels is not None
        norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
        down = nn.Conv2d(input_channels or outer, inner, 4, stride=2, padding=1)
        if self.outermost:
            layers = [down, sub, nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1), nn.Tanh()]
        elif sub is None:  # innermost
            up = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=True)
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, norm(outer)]
        else:
            up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=True)
            layers = [nn.LeakyReLU(0.2, True), down, norm(inner), sub, nn.ReLU(True), up, norm(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class AnimeLineGenerator(nn.Module):
    """netG.pth: the 8-level U-Net generator (innermost three levels at 8x the width)."""

    def __init__(self, width: int = 64, levels: int = 8):
        super().__init__()
        block = SkipBlock(width * 8, width * 8)
        for _ in range(levels - 5):
            block = SkipBlock(width * 8, width * 8, block)
        for factor in (4, 2, 1):
            block = SkipBlock(width * factor, width * factor * 2, block)
        self.model = SkipBlock(1, width, block, input_channels=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _anime_generator(state: dict[str, torch.Tensor]) -> AnimeLineGenerator:
    return AnimeLineGenerator(state["model.model.0.weight"].shape[0])


def _lines(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    padded, remove_pad = resize_with_pad(image, params.resolution)
    net = network(_line_generator, weights, params.device)
    with torch.no_grad():
        line = net(image_tensor(padded, 1 / 255.0, net=net))[0, 0].cpu().numpy()
    return remove_pad(255 - (line * 255.0).clip(0, 255).astype(np.uint8))


def lineart_map(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    """lineart_realistic (sk_model.pth) and lineart_coarse (sk_model2.pth): uint8 [H, W] at the
    processor resolution, white lines on black."""
    return _lines(image, params, weights)


def lineart_anime_map(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    """lineart_anime (netG.pth): uint8 [H, W] at the processor resolution, white lines on black."""
    padded, remove_pad = resize_with_pad(image, params.resolution)
    height, width = padded.shape[:2]
    size = (256 * int(np.ceil(width / 256.0)), 256 * int(np.ceil(height / 256.0)))
    net = network(_anime_generator, weights, params.device)
    with torch.no_grad():
        x = image_tensor(cv2.resize(padded, size, interpolation=cv2.INTER_CUBIC), 1 / 127.5, -1.0, net)
        line = net(x)[0, 0].cpu().numpy() * 127.5 + 127.5
    line = cv2.resize(line, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    return remove_pad(255 - line)
