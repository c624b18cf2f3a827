"""A1111's Hires. fix for txt2img: the request's `HiresFix` record, its size rules, the second sampling pass
it adds, how the first pass's latents come to the hires size (latent interpolation or an image upscaler
and a VAE round trip) and its infotext keys.

Size rules as A1111's `StableDiffusionProcessingTxt2Img.init`: without hr_resize_x/y the first pass size
times hr_scale; with one of them 0 the other keeps the aspect ratio; with both, the image is upscaled to
cover them and the latents are centre-cropped to them. Sizes round down to the latent grid (8 pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from PIL import Image

from sdwebui.engine import upscaling
from sdwebui.engine.errors import RequestError
from sdwebui.engine.passes import SamplingPass

if TYPE_CHECKING:  # requests holds a HiresFix: a runtime import would be a cycle
    from sdwebui.engine.requests import Txt2ImgRequest

# A1111's shared.latent_upscale_modes: name -> (torch interpolate mode, antialias)
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
MIN_SCALE, MAX_SCALE = 1.0, 8.0
MAX_SIDE = 2048
GRID = 8  # pixels per latent pixel


def upscaler_names(models: upscaling.ModelUpscalers | None = None) -> list[str]:
    """Every name `hr_upscaler` accepts: the latent modes, then the image upscalers (the usable model files
    of `models` included)."""
    return [*LATENT_MODES, *upscaling.upscaler_names(models)]


def check_upscaler(hires: HiresFix | None, models: upscaling.ModelUpscalers | None) -> None:
    """RequestError naming `hr_upscaler` when it is none of the names this app offers (the request alone
    cannot tell: the model files are the app's)."""
    if hires is not None and hires.hr_upscaler not in (names := upscaler_names(models)):
        raise RequestError("hr_upscaler", f"unknown upscaler {hires.hr_upscaler!r}; choose one of {names}")


def is_latent(upscaler: str) -> bool:
    return upscaler in LATENT_MODES


@dataclass(frozen=True)
class HiresSize:
    upscale_to: tuple[int, int]  # (width, height) the first pass is upscaled to
    final: tuple[int, int]  # (width, height) after the centre crop, the second pass's size


@dataclass(frozen=True)
class HiresFix:
    """A1111's hires fields of a txt2img request (the request's `hires`; None = Hires. fix off)."""

    hr_scale: float = 2.0
    hr_resize_x: int = 0  # 0 with hr_resize_y 0: use hr_scale
    hr_resize_y: int = 0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0  # 0: the first pass's steps
    denoising_strength: float = 0.7
    hr_sampler_name: str | None = None  # None: the first pass's sampler
    hr_scheduler: str | None = None  # None: the first pass's schedule type
    hr_prompt: str | None = None  # None / "": the prompt
    hr_negative_prompt: str | None = None
    hr_cfg: float | None = None  # None: the first pass's CFG scale
    hr_checkpoint_name: str | None = None  # None: the first pass's checkpoint

    @property
    def uses_resize(self) -> bool:
        return bool(self.hr_resize_x or self.hr_resize_y)

    @property
    def size_field(self) -> str:
        """The field a hires size error names: the resize field given, else hr_scale."""
        if not self.uses_resize:
            return "hr_scale"
        return "hr_resize_x" if self.hr_resize_x else "hr_resize_y"

    def size(self, width: int, height: int) -> HiresSize:
        """The hires size of a `width`x`height` first pass (A1111's hr_upscale_to_x/y and truncate_x/y)."""
        if not self.uses_resize:
            upscale_to = (int(width * self.hr_scale), int(height * self.hr_scale))
            return HiresSize(upscale_to, _grid(upscale_to))
        rx, ry = self.hr_resize_x, self.hr_resize_y
        if ry == 0:
            upscale_to = (rx, rx * height // width)
        elif rx == 0:
            upscale_to = (ry * width // height, ry)
        elif width / height < rx / ry:
            upscale_to = (rx, rx * height // width)
        else:
            upscale_to = (ry * width // height, ry)
        target = (rx or upscale_to[0], ry or upscale_to[1])
        lw, lh = upscale_to[0] // GRID, upscale_to[1] // GRID
        truncate = ((upscale_to[0] - target[0]) // GRID, (upscale_to[1] - target[1]) // GRID)
        return HiresSize(upscale_to, ((lw - truncate[0]) * GRID, (lh - truncate[1]) * GRID))

    def problems(self, width: int | None, height: int | None) -> list[tuple[str, str]]:
        """(field, reason) for every invalid field; the size is checked once the first pass size is known."""
        found = []
        scale = self.hr_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            found.append(("hr_scale", f"must be a number, got {scale!r}"))
        elif not self.uses_resize and not MIN_SCALE <= scale <= MAX_SCALE:
            found.append(("hr_scale", f"must be between {MIN_SCALE:g} and {MAX_SCALE:g}, got {scale:g}"))
        for name in ("hr_resize_x", "hr_resize_y"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIDE:
                found.append((name, f"must be 0 or a size up to {MAX_SIDE}, got {value!r}"))
        if not isinstance(self.hr_upscaler, str) or not self.hr_upscaler:  # the name: check_upscaler
            found.append(("hr_upscaler", f"must be an upscaler's name, got {self.hr_upscaler!r}"))
        steps = self.hr_second_pass_steps
        if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= 150:
            found.append(("hr_second_pass_steps", f"must be between 0 and 150, got {steps!r}"))
        strength = self.denoising_strength
        if not isinstance(strength, (int, float)) or not math.isfinite(strength) or not 0 <= strength <= 1:
            found.append(("denoising_strength", f"must be a number between 0 and 1, got {strength!r}"))
        if self.hr_cfg is not None and not (isinstance(self.hr_cfg, (int, float)) and 0 <= self.hr_cfg <= 30):
            found.append(("hr_cfg", f"must be a number between 0 and 30, got {self.hr_cfg!r}"))
        if not found and width and height:
            found += self._size_problems(width, height)
        return found

    def _size_problems(self, width: int, height: int) -> list[tuple[str, str]]:
        field_name = self.size_field
        final = self.size(width, height).final
        if not all(64 <= side <= MAX_SIDE for side in final):
            return [(field_name, f"the hires size {final[0]}x{final[1]} must be within 64..{MAX_SIDE}")]
        return []


@dataclass(frozen=True)
class FirstPass:
    """What the second pass takes over from the first (the request's resolved values)."""

    width: int
    height: int
    steps: int
    sampler_name: str
    scheduler: str
    cfg_scale: float


def first_pass(request: Txt2ImgRequest) -> FirstPass:
    """The first pass's values of a (resolved) txt2img request."""
    return FirstPass(
        request.width,
        request.height,
        request.steps,
        request.sampler_name,
        request.scheduler,
        request.cfg_scale,
    )


def second_pass(hires: HiresFix, first: FirstPass) -> SamplingPass:
    """The hires pass: at the hires size, with its own sampler, steps, CFG and prompts."""
    size = hires.size(first.width, first.height)
    return SamplingPass(
        width=size.final[0],
        height=size.final[1],
        steps=hires.hr_second_pass_steps or first.steps,
        sampler_name=hires.hr_sampler_name or first.sampler_name,
        scheduler=hires.hr_scheduler or first.scheduler,
        cfg_scale=first.cfg_scale if hires.hr_cfg is None else hires.hr_cfg,
        denoising_strength=hires.denoising_strength,
        upscaler=hires.hr_upscaler,
        upscale_to=size.upscale_to,
        prompt=hires.hr_prompt or None,
        negative_prompt=hires.hr_negative_prompt or None,
        name="hires",
        checkpoint=hires.hr_checkpoint_name or None,
    )


def infotext_params(
    hires: HiresFix, first: FirstPass, prompt: str, negative_prompt: str, checkpoint: str | None = None
) -> dict:
    """A1111's hires keys, each only where A1111 writes it (a sampler/prompt only when it differs);
    `checkpoint`: the hires checkpoint's short title ("name [hash]")."""
    sampler = hires.hr_sampler_name
    scheduler = hires.hr_scheduler
    return {
        "Denoising strength": _number(hires.denoising_strength),
        "Hires upscale": None if hires.uses_resize else _number(hires.hr_scale),
        "Hires resize": f"{hires.hr_resize_x}x{hires.hr_resize_y}" if hires.uses_resize else None,
        "Hires steps": hires.hr_second_pass_steps or None,
        "Hires upscaler": hires.hr_upscaler,
        "Hires prompt": hires.hr_prompt if hires.hr_prompt and hires.hr_prompt != prompt else None,
        "Hires negative prompt": hires.hr_negative_prompt
        if hires.hr_negative_prompt and hires.hr_negative_prompt != negative_prompt
        else None,
        "Hires sampler": sampler if sampler and sampler != first.sampler_name else None,
        "Hires schedule type": scheduler if scheduler and scheduler != first.scheduler else None,
        "Hires CFG Scale": _number(hires.hr_cfg)
        if hires.hr_cfg is not None and hires.hr_cfg != first.cfg_scale
        else None,
        "Hires checkpoint": checkpoint if hires.hr_checkpoint_name else None,
    }


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _grid(size: tuple[int, int]) -> tuple[int, int]:
    return (size[0] // GRID * GRID, size[1] // GRID * GRID)


# -- the upscale between the passes ------------------------------------------------------------------------
def upscale_latents(latents: torch.Tensor, sampling_pass: SamplingPass, factor: int) -> torch.Tensor:
    """A latent mode: interpolate to the upscale-to size, then the centre crop to the pass's size."""
    mode, antialias = LATENT_MODES.get(sampling_pass.upscaler, LATENT_MODES["Latent"])
    width, height = sampling_pass.upscale_to or (sampling_pass.width, sampling_pass.height)
    size = (height // factor, width // factor)
    if tuple(latents.shape[2:]) != size:
        latents = torch.nn.functional.interpolate(latents, size=size, mode=mode, antialias=antialias)
    return crop_latents(latents, sampling_pass.height // factor, sampling_pass.width // factor)


def crop_latents(latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A1111's truncate_x/y: the centre of the latents, the extra row/column taken from the start first."""
    ty, tx = latents.shape[2] - height, latents.shape[3] - width
    return latents[
        :, :, ty // 2 : latents.shape[2] - (ty + 1) // 2, tx // 2 : latents.shape[3] - (tx + 1) // 2
    ]


def upscale_images(
    images: list[Image.Image],
    sampling_pass: SamplingPass,
    factor: int,
    models: upscaling.ModelUpscalers | None = None,
) -> list[Image.Image]:
    """An image upscaler (upscaling.upscale; `models`: the upscaler files), then A1111's Lanczos fit to the
    exact size and the crop."""
    width, height = sampling_pass.upscale_to or (sampling_pass.width, sampling_pass.height)
    out = []
    for image in images:
        upscaled = upscaling.upscale(
            image, (width, height), sampling_pass.upscaler, models, field_name="hr_upscaler"
        )
        if upscaled.size != (width, height):  # "None", or a model's fixed factor: A1111's resize_image
            upscaled = upscaled.resize((width, height), resample=Image.Resampling.LANCZOS)
        out.append(_crop_image(upscaled, sampling_pass.width, sampling_pass.height, factor))
    return out


def _crop_image(image: Image.Image, width: int, height: int, factor: int) -> Image.Image:
    """The pixels `crop_latents` keeps, on the latent grid."""
    lw, lh = image.width // factor, image.height // factor
    tx, ty = lw - width // factor, lh - height // factor
    left, top = tx // 2 * factor, ty // 2 * factor
    return image.crop((left, top, left + width, top + height))
