"""Live previews of the sampler's latents, by A1111's `show_progress_type` methods.

- "Approx cheap": a per-model linear map latent -> RGB. The SD1/SD2 and SDXL VAEs have published
  coefficients (A1111 `sd_vae_approx.cheap_approximation`, first posted on the Hugging Face forum thread
  "Decoding latents to RGB without upscaling"). Any other VAE (the embedded default model's own small
  one) gets its map fitted from that VAE when first needed: least squares of its decoded colours on the
  latents it encodes colour patches to. The SD map on the default model gave wrong colours.
- "Full": the VAE decodes the latents (slow, exact).
- "TAESD": madebyollin's tiny decoder (sdwebui.models.taesd), offered when A1111's decoder file is in
  models/VAE-approx (taesd_decoder / taesdxl_decoder, .pth or .safetensors).
- "Approx NN" needs A1111's VAE-approx weights and network; this build has none, so it is not offered.

The latents are the sampler's (already multiplied by the VAE scaling factor); the maps give RGB in [-1, 1].
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdwebui.models.model import ModelFamily
from sdwebui.models.taesd import TaesdDecoders, TaesdError, any_decoder

METHOD_FULL = "Full"
METHOD_CHEAP = "Approx cheap"
METHOD_TAESD = "TAESD"
PREVIEW_METHODS = (METHOD_FULL, METHOD_CHEAP)  # the choices of `show_progress_type` (TAESD: see below)
UNAVAILABLE_METHODS = {
    "Approx NN": "needs A1111's VAE-approx weights (models/VAE-approx/model.pt) and its decoder network",
    METHOD_TAESD: "needs the TAESD decoder weights (models/VAE-approx/taesd_decoder.pth) and a TAESD decoder",
}

# rows: latent channels, columns: R, G, B
SD_COEFFS = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
SDXL_COEFFS = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)
_SDXL_FAMILIES = {ModelFamily.SDXL, ModelFamily.SDXL_INPAINT, ModelFamily.SDXL_REFINER}
# the published maps hold for the VAEs they were measured on: 4 latent channels, these widths
_STANDARD_VAE_WIDTHS = (128, 256, 512, 512)


@dataclass(frozen=True)
class LatentRgbMap:
    """rgb = latents . weights + bias, per latent pixel; RGB in [-1, 1]."""

    weights: tuple[tuple[float, float, float], ...]  # one row per latent channel
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source: str = "published"

    def apply(self, latents: torch.Tensor) -> torch.Tensor:
        """[C, H, W] -> [3, H, W] in [0, 1]."""
        weights = torch.tensor(self.weights, dtype=torch.float32)
        bias = torch.tensor(self.bias, dtype=torch.float32)[:, None, None]
        rgb = torch.einsum("lhw,lr->rhw", latents, weights) + bias
        return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


def published_map(family: ModelFamily | str) -> LatentRgbMap:
    try:
        family = ModelFamily(family)
    except ValueError:
        valid = ", ".join(f.value for f in ModelFamily)
        raise ValueError(f"unknown model family {family!r} for preview; valid: {valid}") from None
    return LatentRgbMap(SDXL_COEFFS if family in _SDXL_FAMILIES else SD_COEFFS)


def _as_chw(latents: torch.Tensor) -> torch.Tensor:
    if latents.dim() == 4 and latents.shape[0] == 1:
        latents = latents[0]
    if latents.dim() != 3:
        raise ValueError(f"latent preview expects [C, H, W] latents, got shape {tuple(latents.shape)}")
    return torch.nan_to_num(latents.detach().float().cpu())


def latent_to_rgb(
    latents: torch.Tensor, family: ModelFamily | str, rgb_map: LatentRgbMap | None = None
) -> torch.Tensor:
    """[C, H, W] latents -> [3, H, W] RGB in [0, 1]. Without a map of their size, the first channels."""
    x = _as_chw(latents)
    rgb_map = rgb_map or (published_map(family) if x.shape[0] == 4 else None)
    if rgb_map is not None and len(rgb_map.weights) == x.shape[0]:
        return rgb_map.apply(x)
    rgb = x[:3] if x.shape[0] >= 3 else x[:1].expand(3, -1, -1)
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


def latent_preview(
    latents: torch.Tensor,
    family: ModelFamily | str,
    size: tuple[int, int] | None = None,
    rgb_map: LatentRgbMap | None = None,
) -> Image.Image:
    """RGB preview image at latent resolution (or resized to `size` = (width, height))."""
    rgb = latent_to_rgb(latents, family, rgb_map)
    array = (rgb.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    image = Image.fromarray(array, "RGB")
    if size is not None and size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image


def _patch_images(count: int, side: int, blocks: int, seed: int = 0) -> torch.Tensor:
    """[count, 3, side, side] in [-1, 1]: flat colour blocks (random colours, greys, the primaries)."""
    generator = torch.Generator().manual_seed(seed)
    colours = torch.rand(count, 3, blocks, blocks, generator=generator) * 2 - 1
    colours[0] = torch.linspace(-1, 1, blocks * blocks).view(1, blocks, blocks).expand(3, -1, -1)
    return torch.nn.functional.interpolate(colours, size=(side, side), mode="nearest")


@torch.no_grad()
def fit_latent_rgb(
    encode: Callable[[torch.Tensor], torch.Tensor],
    decode: Callable[[torch.Tensor], torch.Tensor],
    scale_factor: int,
    images: int = 16,
    latent_side: int = 8,
) -> LatentRgbMap:
    """Least squares of the VAE's decoded colours (averaged over each latent pixel's area, in [-1, 1])
    on the latents it encodes colour patches to. `encode`: pixels [-1, 1] -> scaled latents; `decode`:
    scaled latents -> pixels [0, 1]."""
    pixels = _patch_images(images, latent_side * scale_factor, blocks=latent_side // 2)
    latents = encode(pixels).float().cpu()
    decoded = decode(latents).float().cpu() * 2 - 1
    target = torch.nn.functional.avg_pool2d(decoded, scale_factor)
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).double()
    y = target.permute(0, 2, 3, 1).reshape(-1, 3).double()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution
    weights = tuple(tuple(float(v) for v in row) for row in solution[:-1])
    bias = tuple(float(v) for v in solution[-1])
    return LatentRgbMap(weights, bias, source="fitted from the model's VAE")


def has_published_map(model) -> bool:
    config = model.vae.config
    return config.latent_channels == 4 and tuple(config.block_out_channels) == _STANDARD_VAE_WIDTHS


def offered_methods(models_dir: Path) -> tuple[str, ...]:
    """The `show_progress_type` choices: TAESD too when a TAESD decoder file is installed."""
    return (*PREVIEW_METHODS, METHOD_TAESD) if any_decoder(models_dir) else PREVIEW_METHODS


class LivePreviewer:
    """The app's live-preview function: (model, step info) -> image by the `show_progress_type` setting.

    Fitted maps are kept per VAE object (weakly: a switched-away model's entry goes with it).
    `models_dir`: where models/VAE-approx is looked for TAESD (None: TAESD is not available).
    """

    def __init__(self, method: Callable[[], str] = lambda: METHOD_CHEAP, models_dir: Path | None = None):
        self._method = method
        self._taesd = TaesdDecoders(models_dir) if models_dir is not None else None
        self._maps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def rgb_map(self, model) -> LatentRgbMap:
        if has_published_map(model):
            return published_map(model.family)
        with self._lock:
            found = self._maps.get(model.vae)
            if found is None:
                from sdwebui.engine import vae

                found = fit_latent_rgb(
                    lambda pixels: vae.encode(model, pixels),
                    lambda latents: vae.decode(model, latents),
                    model.vae_scale_factor,
                )
                self._maps[model.vae] = found
            return found

    def __call__(self, model, info) -> Image.Image | None:
        if info.latents is None:
            return None
        latents = info.latents[:1]
        method = self._method()
        if method == METHOD_FULL:
            from sdwebui.engine import vae

            return vae.pixels_to_pil(vae.decode(model, latents))[0]
        if method == METHOD_TAESD and self._taesd is not None:
            return self._taesd_preview(model, latents)
        if method != METHOD_CHEAP:
            reason = UNAVAILABLE_METHODS.get(method, "unknown method")
            raise ValueError(f"show_progress_type {method!r} is not available: {reason}")
        return latent_preview(latents[0], model.family, rgb_map=self.rgb_map(model))

    def _taesd_preview(self, model, latents: torch.Tensor) -> Image.Image:
        from sdwebui.engine import vae

        try:
            return vae.pixels_to_pil(self._taesd.decode(model.family, latents))[0]
        except TaesdError as error:
            raise ValueError(f"show_progress_type {METHOD_TAESD!r} is not available: {error}") from None
