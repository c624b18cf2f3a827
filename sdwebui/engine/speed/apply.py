"""The speed settings applied to the job's U-Net for the job's duration (undone exactly afterwards), and the
infotext keys that say how the job's weights were held."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from sdwebui.engine.memory.plan import SMALL_FAMILIES
from sdwebui.engine.speed.compiled import compiled_frames, set_compiled
from sdwebui.engine.speed.fp8 import fp8_storage
from sdwebui.engine.speed.settings import SpeedSettings
from sdwebui.engine.speed.step_cache import step_cache
from sdwebui.models.model import LoadedModel

log = logging.getLogger(__name__)


def wants_fp8(model: LoadedModel, speed: SpeedSettings) -> bool:
    if speed.fp8_storage == "Enable for SDXL":
        return model.family not in SMALL_FAMILIES
    return speed.fp8_storage == "Enable"


@contextlib.contextmanager
def channels_last(module: torch.nn.Module) -> Iterator[None]:
    module.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        module.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """torch.backends.cudnn.benchmark on for the job (a process-wide switch: restored after it)."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@contextlib.contextmanager
def applied(model: LoadedModel, speed: SpeedSettings, hires: bool = False) -> Iterator[dict[str, Any]]:
    """Yields the infotext parameters: "FP8 weight" (A1111's key), "Precision" (bf16 compute) and A1111's
    "Token merging ratio" / "Token merging ratio hr"."""
    params: dict[str, Any] = {}
    set_compiled(model.unet, speed.compile, speed.compile_backend)
    frames = compiled_frames() if speed.compile else 0
    if speed.token_merging_ratio > 0:
        params["Token merging ratio"] = speed.token_merging_ratio
    if hires and speed.token_merging_ratio_hr > 0:
        params["Token merging ratio hr"] = speed.token_merging_ratio_hr
    with contextlib.ExitStack() as stack:
        if wants_fp8(model, speed):
            stack.enter_context(fp8_storage(model.unet, model.dtype))
            params["FP8 weight"] = "Enable"
        if speed.cudnn_benchmark:
            stack.enter_context(cudnn_benchmark())
        if speed.channels_last:
            stack.enter_context(channels_last(model.unet))
        denoiser = getattr(model, "transformer", None) or model.unet  # a DiT family's transformer, if any
        if stack.enter_context(step_cache(denoiser, speed.step_cache_threshold)):
            params["First block cache"] = speed.step_cache_threshold
        if model.dtype == torch.bfloat16:
            params["Precision"] = "bf16"
        yield params
    if speed.compile and compiled_frames() > frames:
        log.info("torch.compile: %d graph(s) compiled in this job", compiled_frames() - frames)
