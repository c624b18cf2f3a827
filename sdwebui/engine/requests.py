"""Typed, validated generation requests (A1111 field names) and their results.

UI, API and the extension facade all build these; the engine trusts them once `validate()` passed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from sdwebui.engine.controlnet.units import ControlNetUnit
from sdwebui.engine.errors import RequestError  # noqa: F401 (re-exported: the request's error)
from sdwebui.engine.hires import HiresFix
from sdwebui.engine.passes import SamplingPass

MIN_SIZE, MAX_SIZE = 64, 2048
MAX_STEPS = 150
MAX_CFG = 30.0
MAX_BATCH_SIZE = 64
MAX_N_ITER = 1000
MIN_SEED_RESIZE = 8  # one latent pixel
MAX_NOISE_MULTIPLIER = 1.5  # A1111's "Noise multiplier for img2img" slider

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")  # A1111 inpainting_fill 0..3
INPAINT_AREAS = ("Whole picture", "Only masked")  # A1111 inpaint_full_res 0/1
MASK_MODES = ("Inpaint masked", "Inpaint not masked")  # A1111 inpainting_mask_invert 0/1


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
    distilled_cfg_scale: float = 3.5  # Forge's "Distilled CFG Scale": Flux dev's guidance embedding
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
    # sampling passes after the request's own, each over the previous one's latents (hires fix, refiner)
    extra_passes: list[SamplingPass] = field(default_factory=list)
    # A1111's Hires. fix (enable_hr and the hr_* fields); None = off. Its pass runs before extra_passes
    hires: HiresFix | None = None
    # sd-webui-controlnet's units (alwayson_scripts.controlnet.args), in the order given; disabled ones kept
    controlnet_units: list[ControlNetUnit] = field(default_factory=list)
    # A1111's SDXL refiner: the checkpoint the last pass switches to, at this share of its schedule
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = 0.8
    # fields the front end did not give (API: absent or null), taken from the model family's defaults
    # (`FamilyDefaults`: Flux schnell 4 steps, Flux dev CFG 1, SD3 28 steps / CFG 4.5) when the job runs
    family_defaults: tuple[str, ...] = ()

    def with_family_defaults(self, defaults: Any):
        """This request with its `family_defaults` fields set from the model family's `FamilyDefaults`."""
        if not self.family_defaults:
            return self
        changes = {name: getattr(defaults, name) for name in self.family_defaults}
        changes = {name: value for name, value in changes.items() if value is not None}
        return dataclasses.replace(self, **changes, family_defaults=())

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
        _check_float_range("distilled_cfg_scale", self.distilled_cfg_scale, 0.0, MAX_CFG)
        _check_int_range("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_int_range("n_iter", self.n_iter, 1, MAX_N_ITER)
        _check_float_range("subseed_strength", self.subseed_strength, 0.0, 1.0)
        _check_int_range("clip_skip", self.clip_skip, 1, 12)
        for name in ("seed_resize_from_w", "seed_resize_from_h"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value > 0:  # <= 0: no seed resize
                _check_int_range(name, value, MIN_SEED_RESIZE, MAX_SIZE)
        if self.eta is not None:
            _check_float_range("eta", self.eta, 0.0, 1.0)
        for name in ("seed", "subseed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value < 2**32:
                raise RequestError(name, f"must be an integer in [-1, 2^32), got {value!r}")
        for index, sampling_pass in enumerate(self.extra_passes):
            for name, reason in sampling_pass.problems():
                raise RequestError(f"extra_passes[{index}].{name}", reason)
        if self.hires is not None:
            for name, reason in self.hires.problems(self.width, self.height):
                raise RequestError(name, reason)
        if self.refiner_checkpoint is not None:
            if not isinstance(self.refiner_checkpoint, str) or not self.refiner_checkpoint:
                raise RequestError(
                    "refiner_checkpoint", f"must be a checkpoint's name, got {self.refiner_checkpoint!r}"
                )
            _check_float_range("refiner_switch_at", self.refiner_switch_at, 0.0, 1.0)
        # sampler/scheduler names are checked against the registry by sdwebui.engine.samplers

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
        if self.hires is not None:
            raise RequestError("enable_hr", "hires. fix is a txt2img feature; img2img has no second pass")
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
        _check_float_range(
            "initial_noise_multiplier", self.initial_noise_multiplier, 0.0, MAX_NOISE_MULTIPLIER
        )


TokenCounter = Callable[[str, int, bool], int]  # (text, steps, is_positive) -> tokens


@dataclass(frozen=True)
class JobLimits:
    """What one job may cost, checked before it is queued (settings `limit_*`, sdwebui.config.options)."""

    prompt_chars: int = 20_000
    prompt_tokens: int = 1_500
    images: int = 256  # n_iter * batch_size
    steps: int = MAX_STEPS
    image_pixels: int = MAX_SIZE * MAX_SIZE  # width * height, and every other size of the request
    job_pixels: int = 256 * 512 * 512  # width * height * images

    @classmethod
    def from_settings(cls, values: dict[str, Any]) -> JobLimits:
        defaults = cls()
        return cls(
            **{
                name: int(values.get(f"limit_{name}", getattr(defaults, name)))
                for name in (f.name for f in dataclasses.fields(cls))
            }
        )

    def check(self, request: Txt2ImgRequest, count_tokens: TokenCounter | None = None) -> None:
        """RequestError naming the first field over a limit. `count_tokens` (e.g. `clip_token_counter`)
        runs only on prompts within the character limit, so a huge prompt costs nothing to refuse."""
        for name in ("prompt", "negative_prompt"):
            text = getattr(request, name)
            if len(text) > self.prompt_chars:
                raise RequestError(
                    name,
                    f"{len(text)} characters exceed the limit of {self.prompt_chars} (limit_prompt_chars)",
                )
            tokens = count_tokens(text, request.steps, name == "prompt") if count_tokens and text else 0
            if tokens > self.prompt_tokens:
                raise RequestError(
                    name, f"{tokens} tokens exceed the limit of {self.prompt_tokens} (limit_prompt_tokens)"
                )
        if request.steps > self.steps:
            raise RequestError("steps", f"{request.steps} exceeds the limit of {self.steps} (limit_steps)")
        hires = request.hires
        if hires is not None and hires.hr_second_pass_steps > self.steps:
            raise RequestError(
                "hr_second_pass_steps",
                f"{hires.hr_second_pass_steps} exceeds the limit of {self.steps} (limit_steps)",
            )
        for index, sampling_pass in enumerate(request.extra_passes):
            if sampling_pass.steps > self.steps:
                raise RequestError(
                    f"extra_passes[{index}].steps",
                    f"{sampling_pass.steps} exceeds the limit of {self.steps} (limit_steps)",
                )
        images = request.n_iter * request.batch_size
        if images > self.images:
            raise RequestError(
                "n_iter",
                f"n_iter * batch_size = {images} images exceed the limit of {self.images} (limit_images)",
            )
        self._check_sizes(request, images)

    def _check_sizes(self, request: Txt2ImgRequest, images: int) -> None:
        sizes = [("width", request.width, request.height)]  # an unset size is checked when the job runs
        sizes.append(("seed_resize_from_w", request.seed_resize_from_w, request.seed_resize_from_h))
        for index, sampling_pass in enumerate(request.extra_passes):
            sizes.append((f"extra_passes[{index}].width", sampling_pass.width, sampling_pass.height))
        if request.hires is not None and request.width and request.height:
            final = request.hires.size(request.width, request.height).final
            sizes.append((request.hires.size_field, *final))
        for name, width, height in sizes:
            if width is None or height is None or width <= 0 or height <= 0:
                continue
            if width * height > self.image_pixels:
                raise RequestError(
                    name,
                    f"{width}x{height} = {width * height} pixels exceed the limit of {self.image_pixels} "
                    "(limit_image_pixels)",
                )
        if request.width is not None and request.height is not None:
            total = request.width * request.height * images
            if total > self.job_pixels:
                raise RequestError(
                    "batch_size",
                    f"{images} images of {request.width}x{request.height} = {total} pixels exceed the limit "
                    f"of {self.job_pixels} per job (limit_job_pixels)",
                )


@dataclass
class GeneratedImage:
    """One image of a job and what made it."""

    image: Image.Image
    seed: int
    subseed: int
    prompt: str
    negative_prompt: str
    infotext: str = ""
    saved_path: str | None = None  # where the engine saved it; None when not saved


@dataclass
class GenerationResult:
    """Images of a finished (or interrupted) job, one record each, in the job's order."""

    images: list[GeneratedImage] = field(default_factory=list)
    interrupted: bool = False
    # first-image values in A1111's "info" JSON shape are derived by sdwebui.engine.info_json
    request: Txt2ImgRequest | None = None
    job_timestamp: str = ""  # when the job started, A1111's YYYYmmddHHMMSS job_timestamp
    peak_memory: dict[str, int] = field(default_factory=dict)  # sdwebui.engine.memory.stats.PeakMemory
    memory_mode: str | None = None  # the memory plan the job ran with
    # images the job shows after its own (A1111's extra result images): ControlNet's detected maps
    extra_images: list[Image.Image] = field(default_factory=list)

    # read-only views under the old parallel lists' names, for code written against them
    @property
    def pil_images(self) -> list[Image.Image]:
        return [item.image for item in self.images]

    @property
    def seeds(self) -> list[int]:
        return [item.seed for item in self.images]

    @property
    def subseeds(self) -> list[int]:
        return [item.subseed for item in self.images]

    @property
    def prompts(self) -> list[str]:
        return [item.prompt for item in self.images]

    @property
    def negative_prompts(self) -> list[str]:
        return [item.negative_prompt for item in self.images]

    @property
    def infotexts(self) -> list[str]:
        return [item.infotext for item in self.images]

    @property
    def saved_paths(self) -> list[str]:
        """Paths of the images that were saved (unsaved images have none)."""
        return [item.saved_path for item in self.images if item.saved_path is not None]


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
