"""tile_colorfix(+sharp) and inpaint_only: a unit's correction of the U-Net's predicted x0 after every call,
and inpaint_only's final blend of the decoded image, as sd-webui-controlnet does them.

- colorfix: x0 keeps its high frequencies and takes the low ones (box blur of `threshold_a` latent pixels,
  doubled in the hires pass) of the encoded unit image; +sharp blurs the uncond rows' x0 by `threshold_b` %;
- inpaint_only: x0 inside the mask (max-pooled to latent size), the encoded unit image outside;
- both then mix with the plain output by the unit's weight (clamped to [0, 1]);
- inpaint_only's decoded images keep the unit image outside the dilated, blurred mask (`inpaint_only_image`).
The unit image is encoded with the checkpoint's VAE once per size (a hires pass has its own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from sdwebui.engine.addons import UNetCall
from sdwebui.engine.controlnet import hint as hints
from sdwebui.engine.controlnet.preprocessors.colorfix import colorfix_x0
from sdwebui.engine.controlnet.preprocessors.inpaint import inpaint_only_image, inpaint_only_x0
from sdwebui.engine.controlnet.units import ResizeMode

COLORFIX, INPAINT_ONLY = "colorfix", "inpaint_only"
Encode = Callable[[torch.Tensor], torch.Tensor]  # pixels in [-1, 1] [B, 3, H, W] -> scaled latents


def fix_kind(module: str) -> str | None:
    """Which x0 fix a module name asks for (the extension matches substrings: aliases and +sharp too)."""
    if "colorfix" in module:
        return COLORFIX
    if "inpaint_only" in module:
        return INPAINT_ONLY
    return None


@dataclass
class X0Fix:
    """One unit's x0 correction; `maps` are its detected maps (RGBA with the mask for inpaint_only)."""

    kind: str
    maps: list[Image.Image]
    resize_mode: ResizeMode
    weight: float
    encode: Encode
    variation: float = 8.0  # colorfix: threshold_a, the blur radius in latent pixels
    sharpness: float | None = None  # +sharp: threshold_b
    blur_sigma: int = 7  # inpaint_only's final blend (control_net_inpaint_blur_sigma)
    _latents: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)
    _masks: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def fitted(self, width: int, height: int) -> list[np.ndarray]:
        return [hints.fit_map(m, width, height, self.resize_mode) for m in self.maps]

    def origin(self, width: int, height: int) -> torch.Tensor:
        """[maps, C, h, w]: the unit images encoded at the generation size (RGB of the map, mask ignored)."""
        if (width, height) not in self._latents:
            pixels = torch.stack(
                [torch.from_numpy(np.array(f[:, :, :3])).permute(2, 0, 1) for f in self.fitted(width, height)]
            )
            self._latents[(width, height)] = self.encode(pixels.float() / 127.5 - 1.0)
        return self._latents[(width, height)]

    def mask(self, width: int, height: int) -> torch.Tensor:
        """[maps, 1, H, W] in {0, 1}: the inpaint mask at image size (1 = repaint)."""
        if (width, height) not in self._masks:
            alpha = [
                f[:, :, 3] if f.shape[2] == 4 else np.full(f.shape[:2], 255)
                for f in self.fitted(width, height)
            ]
            self._masks[(width, height)] = torch.from_numpy((np.stack(alpha) > 127).astype(np.float32))[
                :, None
            ]
        return self._masks[(width, height)]

    def apply(self, call: UNetCall, output: torch.Tensor, scale: int, hires_pass: bool) -> torch.Tensor:
        """The corrected U-Net output of `call` (rows pick their image's map, `image_index % maps`)."""
        prediction = call.prediction
        if prediction is None or self.weight <= 0:
            return output
        height, width = output.shape[-2] * scale, output.shape[-1] * scale
        pick = [row.image_index % len(self.maps) for row in call.rows]
        xt = call.x[:, : output.shape[1]].float()
        x0_pred = prediction.to_x0(xt, output.float())
        origin = self.origin(width, height)[pick].to(x0_pred)
        if self.kind == COLORFIX:
            radius = self.variation * (2 if hires_pass else 1)
            uncond = torch.tensor([row.uncond for row in call.rows])
            x0 = colorfix_x0(x0_pred, origin, radius, self.sharpness, uncond)
        else:
            x0 = inpaint_only_x0(x0_pred, origin, self.mask(width, height)[pick])
        w = min(1.0, self.weight)
        return (prediction.from_x0(xt, x0) * w + output.float() * (1 - w)).to(output.dtype)

    def final_image(self, image: Image.Image, index: int) -> Image.Image:
        """inpaint_only: image `index` of the job with the unit image outside the mask."""
        if self.kind != INPAINT_ONLY:
            return image
        fitted = self.fitted(image.width, image.height)[index % len(self.maps)]
        if fitted.shape[2] != 4:
            return image
        return inpaint_only_image(image, Image.fromarray(fitted, mode="RGBA"), self.blur_sigma)
