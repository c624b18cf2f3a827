"""normal_bae: Bae et al.'s surface-normal network with uncertainty (ScanNet weights, `normal_bae/scannet.pt`):
an EfficientNet-B5 encoder (`encoder.original_model.*`) and the decoder (`decoder.conv2`, `up1..4`, the
per-pixel MLP heads `out_conv_res4/2/1`) in its test mode (every pixel refined, no sampling).

Input RGB in [0, 1], ImageNet-normalised, at the padded processor resolution; the map is the finest normal
estimate's (x, y, z) from [-1, 1] to 0..255, as the extension shows it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sdwebui.engine.controlnet.preprocessors import efficientnet
from sdwebui.engine.controlnet.preprocessors.imaging import resize_with_pad
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams
from sdwebui.engine.controlnet.preprocessors.weights import image_tensor, network

WEIGHTS = "normal_bae/scannet.pt"
_ENCODER = "encoder.original_model."
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class UpSample(nn.Module):
    """Bilinear up to the skip's size, concatenated with it, two 3x3 conv + BN + leaky ReLU."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self._net = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.BatchNorm2d(channels_out), nn.LeakyReLU(),
            nn.Conv2d(channels_out, channels_out, 3, padding=1), nn.BatchNorm2d(channels_out), nn.LeakyReLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=True)
        return self._net(torch.cat([up, skip], dim=1))


def _head(channels_in: int, hidden: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv1d(channels_in, hidden, 1), nn.ReLU()]
    layers += [nn.Conv1d(hidden, hidden, 1), nn.ReLU(), nn.Conv1d(hidden, hidden, 1), nn.ReLU()]
    return nn.Sequential(*layers, nn.Conv1d(hidden, 4, 1))


def normalize(out: torch.Tensor) -> torch.Tensor:
    """(x, y, z, kappa): the normal made unit length, the concentration kappa kept positive."""
    normal, kappa = out[:, :3], out[:, 3:]
    normal = normal / (normal.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    return torch.cat([normal, F.elu(kappa) + 1.01], dim=1)


class Decoder(nn.Module):
    def __init__(self, skips: tuple[int, int, int, int], width: int, hidden: int = 128):
        super().__init__()
        self.conv2 = nn.Conv2d(width, width, 1)
        w = [width // 2, width // 4, width // 8, width // 16]
        self.up1 = UpSample(width + skips[3], w[0])
        self.up2 = UpSample(w[0] + skips[2], w[1])
        self.up3 = UpSample(w[1] + skips[1], w[2])
        self.up4 = UpSample(w[2] + skips[0], w[3])
        self.out_conv_res8 = nn.Conv2d(w[1], 4, 3, padding=1)
        self.out_conv_res4 = _head(w[1] + 4, hidden)
        self.out_conv_res2 = _head(w[2] + 4, hidden)
        self.out_conv_res1 = _head(w[3] + 4, hidden)

    @staticmethod
    def _refine(features: torch.Tensor, coarse: torch.Tensor, head: nn.Sequential) -> torch.Tensor:
        """Each pixel at twice the resolution: the MLP of its features and the upsampled coarse estimate."""
        up = [
            F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True) for t in (features, coarse)
        ]
        joined = torch.cat(up, dim=1)
        b, c, h, w = joined.shape
        return normalize(head(joined.view(b, c, -1))).view(b, 4, h, w)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Encoder outputs (stem, stages 0..6, head) -> the full-resolution (x, y, z, kappa)."""
        block0, block1, block2, block4, top = features[1], features[2], features[3], features[5], features[8]
        d1 = self.up1(self.conv2(top), block4)
        d2 = self.up2(d1, block2)
        d3 = self.up3(d2, block1)
        d4 = self.up4(d3, block0)
        out = normalize(self.out_conv_res8(d2))
        out = self._refine(d2, out, self.out_conv_res4)
        out = self._refine(d3, out, self.out_conv_res2)
        return self._refine(d4, out, self.out_conv_res1)


class NormalBae(nn.Module):
    def __init__(self, stem: int, stages: list[list[efficientnet.BlockSpec]], head: int, hidden: int = 128):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.original_model = efficientnet.EfficientNet(stem, stages, head)
        skips = tuple(stages[i][-1].channels_out for i in (0, 1, 2, 4))
        self.decoder = Decoder(skips, head, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.original_model(x))


def _build(state: dict[str, torch.Tensor]) -> NormalBae:
    stages = efficientnet.specs_from_state(state, _ENCODER + "blocks.")
    stem = state[_ENCODER + "conv_stem.weight"].shape[0]
    head = state[_ENCODER + "conv_head.weight"].shape[0]
    return NormalBae(stem, stages, head, state["decoder.out_conv_res4.0.weight"].shape[0])


def normal_bae_map(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    """uint8 [H, W, 3] -> the normal map, uint8 [H, W, 3] at the processor resolution."""
    padded, remove_pad = resize_with_pad(image, params.resolution)
    net = network(_build, weights, params.device)
    with torch.no_grad():
        x = image_tensor(padded, 1 / 255.0, net=net)
        normal = net((x - _MEAN.to(x)) / _STD.to(x))[0, :3].cpu()
    rgb = ((normal + 1) * 0.5).clamp(0, 1).permute(1, 2, 0).numpy()
    return remove_pad((rgb * 255.0).clip(0, 255).astype(np.uint8))
