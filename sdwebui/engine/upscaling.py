"""Upscaling an image by a factor or to a size: the plain resamplers (None, Lanczos, Nearest) and upscaler
models (ESRGAN, RealESRGAN, SwinIR, DAT, HAT, ... through spandrel; files in sdwebui.models.upscalers).

A model runs in tiles with overlap (A1111's `ESRGAN_tile` / `ESRGAN_tile_overlap`) so the device holds one tile
at a time, and the job's interrupt is checked between tiles. As in A1111 a model is applied up to three times
until the image is at least the target size, then Lanczos gives the exact size (a 4x model asked for 2x runs
once and is resized down).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdwebui.engine.context import JobContext, StepInfo
from sdwebui.engine.errors import RequestError
from sdwebui.models.upscalers import UpscalerLibrary, UpscalerLoadError

# name -> Pillow resampling filter; "None" keeps the pixels (A1111 lists it first)
_FILTERS: dict[str, Image.Resampling | None] = {
    "None": None,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
UPSCALERS: list[str] = list(_FILTERS)
MAX_UPSCALE_FACTOR = 8.0
MAX_OUTPUT_SIDE = 8192
MODEL_PASSES = 3  # A1111: a model is applied at most three times to reach the target size

TileProgress = Callable[[int, int], None]  # (tiles done, tiles in all)


class UpscaleError(RequestError):
    """Bad upscaler name or size; `field` names the offending parameter."""


@dataclass(frozen=True)
class TileSettings:
    tile: int = 192  # side of a tile in input pixels; 0 = the whole image at once
    overlap: int = 8  # input pixels shared by neighbouring tiles (blended)


@dataclass
class ModelUpscalers:
    """What running upscaler models needs: the files, the device and precision, the tile settings."""

    library: UpscalerLibrary
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    half: bool = False  # fp16 where the architecture supports it (CUDA)
    tiles: TileSettings = field(default_factory=TileSettings)

    def names(self) -> list[str]:
        return [entry.name for entry in self.library.usable()]


def upscaler_names(models: ModelUpscalers | None = None) -> list[str]:
    """Every name `upscale` accepts: the plain resamplers, then the usable model files."""
    return UPSCALERS + (models.names() if models is not None else [])


def target_size(image: Image.Image, scale: float | tuple[int, int]) -> tuple[int, int]:
    """Output (width, height) for a factor or an explicit size."""
    if isinstance(scale, tuple):
        if len(scale) != 2:
            raise UpscaleError("size", f"expected (width, height), got {scale!r}")
        width, height = (int(v) for v in scale)
    else:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise UpscaleError("upscaling_resize", f"must be a number, got {scale!r}")
        if not 0 < scale <= MAX_UPSCALE_FACTOR:
            raise UpscaleError("upscaling_resize", f"must be in (0, {MAX_UPSCALE_FACTOR:g}], got {scale:g}")
        width, height = round(image.width * scale), round(image.height * scale)
    for name, value in (("upscaling_resize_w", width), ("upscaling_resize_h", height)):
        if not 1 <= value <= MAX_OUTPUT_SIDE:
            raise UpscaleError(name, f"must be between 1 and {MAX_OUTPUT_SIDE}, got {value}")
    return width, height


def check_name(name: str, models: ModelUpscalers | None = None, field_name: str = "upscaler_1") -> None:
    """Raise UpscaleError naming `field_name` unless `name` is a plain resampler or a usable model."""
    if name in _FILTERS:
        return
    if models is None:
        raise UpscaleError(field_name, f"unknown upscaler {name!r}; choose one of {UPSCALERS}")
    try:
        models.library.find(name, field_name)
    except UpscalerLoadError as error:
        raise UpscaleError(field_name, f"{error}; choose one of {upscaler_names(models)}") from None


def upscale(
    image: Image.Image,
    scale: float | tuple[int, int],
    upscaler_name: str = "Lanczos",
    models: ModelUpscalers | None = None,
    ctx: JobContext | None = None,
    field_name: str = "upscaler_1",
    on_tile: TileProgress | None = None,
) -> Image.Image:
    """Resize `image` by a factor or to (width, height) with the named upscaler. `models`: the upscaler
    files a model name is looked up in (None: plain resamplers only); `ctx`: interrupt between tiles (tiles
    not run yet keep a bicubic resize, so the result still has the requested size)."""
    check_name(upscaler_name, models, field_name)
    size = target_size(image, scale)
    if upscaler_name in _FILTERS:
        resample = _FILTERS[upscaler_name]
        if resample is None:
            return image.copy()
        return _plain_mode(image).resize(size, resample=resample)
    assert models is not None  # check_name passed for a model name
    return _model_upscale(image, size, upscaler_name, models, ctx, field_name, on_tile)


def _plain_mode(image: Image.Image) -> Image.Image:
    if image.mode not in ("RGB", "RGBA", "L"):
        return image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return image


def _model_upscale(
    image: Image.Image,
    size: tuple[int, int],
    name: str,
    models: ModelUpscalers,
    ctx: JobContext | None,
    field_name: str,
    on_tile: TileProgress | None,
) -> Image.Image:
    try:
        entry = models.library.find(name, field_name)
        model = models.library.load(entry, models.device, models.half)
    except UpscalerLoadError as error:
        raise UpscaleError(field_name, str(error)) from None
    image = _plain_mode(image)
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    current = image.convert("L" if model.input_channels == 1 else "RGB")
    for _ in range(MODEL_PASSES):
        grown = (current.width * model.scale, current.height * model.scale)
        if (current.width >= size[0] and current.height >= size[1]) or max(grown) > MAX_OUTPUT_SIDE:
            break
        current = run_model(model, current, models.tiles, ctx, on_tile)
        if ctx is not None and ctx.interrupted:
            break
    if current.size != size:
        current = current.resize(size, resample=Image.Resampling.LANCZOS)
    if image.mode == "L" and current.mode != "L":
        current = current.convert("L")
    if alpha is not None:  # models see RGB; the alpha channel is resized as a plain image
        current = current.convert("RGB")
        current.putalpha(alpha.resize(size, resample=Image.Resampling.LANCZOS))
    return current


def run_model(
    model,
    image: Image.Image,
    tiles: TileSettings,
    ctx: JobContext | None = None,
    on_tile: TileProgress | None = None,
) -> Image.Image:
    """One application of a spandrel image model: the image at the model's scale."""
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(pixels[..., None] if pixels.ndim == 2 else pixels).permute(2, 0, 1)[None]
    with torch.inference_mode():
        output = tiled_apply(model, tensor, tiles, ctx, on_tile)
    array = (output[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array, mode=image.mode)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: every `tile - overlap` pixels, the last one flush with the end."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    return [*range(0, length - tile, stride), length - tile]


def _ramp(size: int, fade: int, before: bool, after: bool) -> torch.Tensor:
    """Blend weights along one axis of an output tile: rising over `fade` pixels where a neighbour overlaps,
    so tile borders (the least reliable pixels) weigh least; never zero."""
    weights = torch.ones(size)
    if fade > 0:
        rise = torch.arange(1, fade + 1, dtype=torch.float32) / (fade + 1)
        if before:
            weights[:fade] = torch.minimum(weights[:fade], rise)
        if after:
            weights[size - fade :] = torch.minimum(weights[size - fade :], rise.flip(0))
    return weights


def tiled_apply(
    model,
    image: torch.Tensor,
    tiles: TileSettings,
    ctx: JobContext | None = None,
    on_tile: TileProgress | None = None,
) -> torch.Tensor:
    """`model` over a (1, C, H, W) float32 CPU tensor in [0, 1], tile by tile on the model's device; the result
    (1, C, H*s, W*s) is accumulated on the CPU, so the device holds one tile and its output only."""
    import spandrel

    _, channels, height, width = image.shape
    scale = int(model.scale)
    if tiles.tile <= 0 or model.tiling is spandrel.ModelTiling.INTERNAL:
        return _apply(model, image)
    tile_h, tile_w = min(tiles.tile, height), min(tiles.tile, width)
    overlap = max(0, min(tiles.overlap, tile_h - 1, tile_w - 1))
    rows, cols = _starts(height, tile_h, overlap), _starts(width, tile_w, overlap)
    result = torch.zeros(1, channels, height * scale, width * scale)
    weight = torch.zeros(1, 1, height * scale, width * scale)
    done, total = 0, len(rows) * len(cols)
    for y in rows:
        for x in cols:
            if ctx is not None and ctx.interrupted:
                return _fill_missing(image, scale, result, weight)
            out = _apply(model, image[..., y : y + tile_h, x : x + tile_w])
            fade = overlap * scale
            mask = _ramp(tile_h * scale, fade, y > 0, y < rows[-1])[:, None] * _ramp(
                tile_w * scale, fade, x > 0, x < cols[-1]
            )
            region = (..., slice(y * scale, (y + tile_h) * scale), slice(x * scale, (x + tile_w) * scale))
            result[region] += out * mask
            weight[region] += mask
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    return result / weight


def _apply(model, tensor: torch.Tensor) -> torch.Tensor:
    return model(tensor.to(device=model.device, dtype=model.dtype)).to(device="cpu", dtype=torch.float32)


def _fill_missing(
    image: torch.Tensor, scale: int, result: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """An interrupted run: the tiles done, and a bicubic resize where none ran yet."""
    plain = F.interpolate(image, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    covered = weight > 0
    return torch.where(covered, result / weight.clamp_min(1e-8), plain)


# --- Extras: two upscalers blended, resize by a factor or to a size (cropped), as A1111 ---


@dataclass(frozen=True)
class ExtrasPlan:
    """The upscaling an Extras request asks for, checked before anything is queued."""

    upscaler_1: str
    upscaler_2: str
    visibility_2: float
    resize_mode: int  # 0: scale by `factor`; 1: scale to `size` (cropped to it when `crop`)
    factor: float
    size: tuple[int, int]
    crop: bool


def extras_output_size(image: Image.Image, plan: ExtrasPlan) -> tuple[int, int]:
    """What the upscalers produce: by the factor, or (A1111) by the larger ratio of the requested size."""
    if plan.resize_mode == 0:
        return target_size(image, plan.factor)
    ratio = max(plan.size[0] / image.width, plan.size[1] / image.height)
    full = (max(plan.size[0], round(image.width * ratio)), max(plan.size[1], round(image.height * ratio)))
    return full if plan.crop else (round(image.width * ratio), round(image.height * ratio))


def upscale_extras(
    image: Image.Image,
    plan: ExtrasPlan,
    models: ModelUpscalers | None,
    ctx: JobContext | None = None,
    on_tile: TileProgress | None = None,
) -> Image.Image:
    """Upscaler 1, upscaler 2 blended in at its visibility (A1111's Image.blend), then the crop."""
    if plan.upscaler_1 == "None" and (plan.upscaler_2 == "None" or plan.visibility_2 <= 0):
        return image.copy()  # A1111: no upscaler, no upscaling
    size = extras_output_size(image, plan)

    def run(name: str, field_name: str) -> Image.Image:
        if name == "None":
            return image.resize(size, resample=Image.Resampling.LANCZOS)
        return upscale(image, size, name, models, ctx, field_name, on_tile)

    result = run(plan.upscaler_1, "upscaler_1")
    if plan.upscaler_2 != "None" and plan.visibility_2 > 0:
        second = run(plan.upscaler_2, "upscaler_2")
        result = Image.blend(result, second.convert(result.mode), plan.visibility_2)
    if plan.resize_mode == 1 and plan.crop and result.size != plan.size:
        left, top = (result.width - plan.size[0]) // 2, (result.height - plan.size[1]) // 2
        result = result.crop((left, top, left + plan.size[0], top + plan.size[1]))
    return result


def tile_progress(ctx: JobContext, index: int = 0, count: int = 1) -> TileProgress:
    """Tiles done reported as the job's progress (image `index` of `count`), for jobs that only upscale."""
    return lambda done, total: ctx.report(StepInfo(job_no=index, job_count=count, step=done, steps=total))
