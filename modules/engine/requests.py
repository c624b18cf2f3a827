"""Typed, validated generation requests (A1111 field names) and their results.

UI, API and the extension facade all build these; the engine trusts them once `validate()` passed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

MIN_SIZE, MAX_SIZE = 64, 2048
MAX_STEPS = 150
MAX_CFG = 30.0
MAX_BATCH_SIZE = 64
MAX_N_ITER = 1000

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")  # A1111 inpainting_fill 0..3
INPAINT_AREAS = ("Whole picture", "Only masked")  # A1111 inpaint_full_res 0/1
MASK_MODES = ("Inpaint masked", "Inpaint not masked")  # A1111 inpainting_mask_invert 0/1


class RequestError(ValueError):
    """A request field has an invalid value. `field` names it with the API's name."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass
class Txt2ImgRequest:
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = field(default_factory=list)
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str = "Euler a"
    scheduler: str = "Automatic"  # schedule type
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 20
    cfg_scale: float = 7.0
    # None = the model's native resolution (resolved by the engine when the job runs)
    width: int | None = 512
    height: int | None = 512
    eta: float | None = None  # None = sampler default (A1111 eta_ancestral / eta_ddim settings)
    s_noise: float = 1.0
    clip_skip: int = 1
    restore_faces: bool = False
    tiling: bool = False
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    # settings that apply to this job only (A1111 override_settings); never written to shared options
    override_settings: dict[str, Any] = field(default_factory=dict)
    # extra "key: value" pairs for the infotext (extensions add to this)
    extra_generation_params: dict[str, Any] = field(default_factory=dict)

    def with_default_size(self, size: int):
        """This request with an unset width/height filled in (the model's native size)."""
        if self.width is not None and self.height is not None:
            return self
        return dataclasses.replace(self, width=self.width or size, height=self.height or size)

    def validate(self) -> None:
        for name in ("width", "height"):
            if getattr(self, name) is None:
                continue
            _check_int_range(name, getattr(self, name), MIN_SIZE, MAX_SIZE)
            if getattr(self, name) % 8:
                raise RequestError(name, f"must be a multiple of 8, got {getattr(self, name)}")
        _check_int_range("steps", self.steps, 1, MAX_STEPS)
        _check_float_range("cfg_scale", self.cfg_scale, 0.0, MAX_CFG)
        _check_int_range("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_int_range("n_iter", self.n_iter, 1, MAX_N_ITER)
        _check_float_range("subseed_strength", self.subseed_strength, 0.0, 1.0)
        _check_int_range("clip_skip", self.clip_skip, 1, 12)
        if self.eta is not None:
            _check_float_range("eta", self.eta, 0.0, 1.0)
        for name in ("seed", "subseed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value < 2**32:
                raise RequestError(name, f"must be an integer in [-1, 2^32), got {value!r}")
        # sampler/scheduler names are checked against the registry by modules.samplers

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass
class Img2ImgRequest(Txt2ImgRequest):
    init_images: list[Image.Image] = field(default_factory=list)
    resize_mode: int = 0  # index into RESIZE_MODES
    denoising_strength: float = 0.75
    mask: Image.Image | None = None  # white = repaint (before mask_invert)
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    inpainting_fill: int = 1  # index into MASKED_CONTENT, A1111 default "original"
    inpaint_full_res: bool = False  # "Only masked"
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float = 1.0
    inpainting_mask_weight: float = 1.0  # conditioning mask weight for 9-channel models
    # A1111 runs int(strength * steps) steps; True runs exactly `steps` (setting img2img_fix_steps)
    img2img_fix_steps: bool = False
    include_init_images: bool = False

    @property
    def mask_blur(self) -> int:
        return max(self.mask_blur_x, self.mask_blur_y)

    def validate(self) -> None:
        super().validate()
        if not self.init_images:
            raise RequestError("init_images", "at least one init image is required")
        _check_float_range("denoising_strength", self.denoising_strength, 0.0, 1.0)
        _check_int_range("resize_mode", self.resize_mode, 0, len(RESIZE_MODES) - 1)
        _check_int_range("inpainting_fill", self.inpainting_fill, 0, len(MASKED_CONTENT) - 1)
        _check_int_range("inpainting_mask_invert", self.inpainting_mask_invert, 0, 1)
        _check_int_range("mask_blur_x", self.mask_blur_x, 0, 256)
        _check_int_range("mask_blur_y", self.mask_blur_y, 0, 256)
        _check_int_range("inpaint_full_res_padding", self.inpaint_full_res_padding, 0, 1024)
        _check_float_range("inpainting_mask_weight", self.inpainting_mask_weight, 0.0, 1.0)


@dataclass
class GenerationResult:
    """Images of a finished (or interrupted) job, aligned lists."""

    images: list[Image.Image] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    saved_paths: list[str] = field(default_factory=list)
    interrupted: bool = False
    # first-image values in A1111's "info" JSON shape are derived by the API layer
    request: Txt2ImgRequest | None = None


def _check_int_range(name: str, value: Any, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(name, f"must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(name, f"must be between {lo} and {hi}, got {value}")


def _check_float_range(name: str, value: Any, lo: float, hi: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise RequestError(name, f"must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(name, f"must be between {lo:g} and {hi:g}, got {value:g}")
