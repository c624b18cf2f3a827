"""seg_anime_face: the anime face segmenter of `anime_face_segment/UNet.pth` (a MobileNetV2 encoder in
torchvision's layout, `en_block0..4`, and an upsampling decoder `de_block4..0`), seven classes painted in
the extension's palette (background, hair, eye, mouth, face, skin, clothes).

The network sees the padded image with its shortest side at 512 (bicubic, RGB in [0, 1]); the class map is
brought back to the processor resolution (nearest).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from sdwebui.engine.controlnet.preprocessors import mobilenet
from sdwebui.engine.controlnet.preprocessors.imaging import resize_with_pad
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams
from sdwebui.engine.controlnet.preprocessors.weights import image_tensor, network

WEIGHTS = "anime_face_segment/UNet.pth"
PALETTE = np.array(
    [(255, 255, 0), (0, 0, 255), (255, 0, 0), (255, 255, 255), (0, 255, 0), (0, 255, 255), (255, 0, 255)],
    dtype=np.uint8,
)
_GROUPS = ((0, 2), (2, 4), (4, 7), (7, 14), (14, 17))  # MobileNetV2 feature ranges of en_block0..4
_DECODER = ((160, 96), (96 * 2, 32), (32 * 2, 24), (24 * 2, 16))  # de_block4..1: in, out


def _up_block(channels_in: int, channels_out: int) -> nn.Sequential:
    conv = nn.Conv2d(channels_in, channels_out, 3, padding=1)
    return nn.Sequential(
        nn.Upsample(scale_factor=2), conv, nn.InstanceNorm2d(channels_out), nn.LeakyReLU(0.1)
    )


class AnimeFaceUNet(nn.Module):
    def __init__(self):
        super().__init__()
        blocks = mobilenet.features(3, stages=6)
        for index, (start, end) in enumerate(_GROUPS):
            self.add_module(f"en_block{index}", nn.Sequential(*blocks[start:end]))
        for index, (channels_in, channels_out) in zip((4, 3, 2, 1), _DECODER, strict=True):
            self.add_module(f"de_block{index}", _up_block(channels_in, channels_out))
        self.de_block0 = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(16 * 2, len(PALETTE), 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> class logits [B, 7, H, W]."""
        skips = []
        for index in range(5):
            x = getattr(self, f"en_block{index}")(x)
            skips.append(x)
        h = skips[4]
        for index in (4, 3, 2, 1):
            up = getattr(self, f"de_block{index}")(h)
            skip = skips[index - 1]
            h = torch.cat(
                [F.interpolate(up, size=skip.shape[2:], mode="bilinear", align_corners=True), skip], 1
            )
        return self.de_block0(h)


def _build(state: dict[str, torch.Tensor]) -> AnimeFaceUNet:
    return AnimeFaceUNet()


def anime_face_map(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    """uint8 [H, W, 3] -> the segmentation in the palette, uint8 [H, W, 3] at the processor resolution."""
    padded, remove_pad = resize_with_pad(image, params.resolution)
    height, width = padded.shape[:2]
    # torchvision's Resize(512): the shortest side to 512, the other truncated
    size = (int(512 * width / height), 512) if height <= width else (512, int(512 * height / width))
    scaled = np.array(Image.fromarray(padded).resize(size, Image.Resampling.BICUBIC))
    net = network(_build, weights, params.device)
    with torch.no_grad():
        classes = (
            net(image_tensor(scaled, 1 / 255.0, net=net))[0].argmax(dim=0).cpu().numpy().astype(np.uint8)
        )
    classes = cv2.resize(classes, (width, height), interpolation=cv2.INTER_NEAREST)
    return remove_pad(PALETTE[classes])
