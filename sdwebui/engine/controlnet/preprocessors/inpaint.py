"""inpaint / inpaint_only: the mask contract between the preprocessor and the engine.

The preprocessor's map is RGBA: RGB the unit image, alpha the mask (255: repaint). The engine then
- gives an inpaint ControlNet `inpaint_hint(map)`: RGB in [0, 1] with masked pixels at -1 (what the
  v1.1 inpaint model was trained on);
- for `inpaint_only`, after decoding, keeps the unit image outside the (dilated, blurred) mask:
  `inpaint_only_blend(decoded, map)` (the extension also blends x0 in latent space each step:
  `inpaint_only_x0`).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image


def with_mask(rgb: np.ndarray, mask: np.ndarray) -> Image.Image:
    """The RGBA map: `mask` (uint8 [H, W], resized to the image) as alpha, thresholded at 128."""
    if mask.shape[:2] != rgb.shape[:2]:
        mask = cv2.resize(mask, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    alpha = np.where(mask > 127, 255, 0).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")


def _rgb_and_mask(inpaint_map: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    array = np.asarray(inpaint_map.convert("RGBA"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    return tensor[:3], (tensor[3:4] > 0.5).float()


def inpaint_hint(inpaint_map: Image.Image) -> torch.Tensor:
    """[3, H, W] hint: the image in [0, 1], -1 where the mask is set."""
    rgb, mask = _rgb_and_mask(inpaint_map)
    return torch.where(mask > 0.5, torch.full_like(rgb, -1.0), rgb)


def blend_mask(inpaint_map: Image.Image, sigma: int = 7) -> torch.Tensor:
    """[1, H, W] soft mask for the final blend: dilated then box-blurred by `sigma` pixels (the extension's 7)."""
    mask = np.asarray(inpaint_map.convert("RGBA"))[:, :, 3].astype(np.float32) / 255.0
    if sigma > 0:
        mask = cv2.dilate(mask, np.ones((sigma, sigma), dtype=np.uint8))
        mask = cv2.blur(mask, (sigma, sigma))
    return torch.from_numpy(np.ascontiguousarray(mask))[None]


def inpaint_only_blend(decoded: torch.Tensor, inpaint_map: Image.Image, sigma: int = 7) -> torch.Tensor:
    """decoded [3, H, W] in [0, 1] (the map's size) -> masked part generated, the rest the unit image."""
    rgb, _ = _rgb_and_mask(inpaint_map)
    soft = blend_mask(inpaint_map, sigma).to(decoded)
    return (soft * decoded.clamp(0, 1) + (1 - soft) * rgb.to(decoded)).clamp(0, 1)


def inpaint_only_x0(x0_pred: torch.Tensor, x0_origin: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """Per-step latent blend: predicted x0 inside the mask, the encoded unit image outside.

    pixel_mask [B, 1, H, W] at image size; reduced to latent size as the extension does (max-pool 10, stride 8).
    """
    mask = torch.nn.functional.max_pool2d(pixel_mask.to(x0_pred), (10, 10), stride=(8, 8), padding=1)
    if mask.shape[-2:] != x0_pred.shape[-2:]:
        mask = torch.nn.functional.interpolate(mask, size=x0_pred.shape[-2:], mode="nearest")
    return x0_pred * mask + x0_origin.to(x0_pred) * (1 - mask)


def inpaint_only_image(generated: Image.Image, inpaint_map: Image.Image, sigma: int = 7) -> Image.Image:
    """The final image of an inpaint_only unit (for the engine's postprocess_image): the generated pixels
    inside the (dilated, blurred) mask, the unit image outside. `inpaint_map` is the map fitted to the
    generation size (its resize mode applied); a map of another size is resized to the image."""
    if inpaint_map.size != generated.size:
        inpaint_map = inpaint_map.convert("RGBA").resize(generated.size, Image.Resampling.NEAREST)
    pixels = torch.from_numpy(np.asarray(generated.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    blended = inpaint_only_blend(pixels, inpaint_map, sigma)
    array = (blended.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array)
