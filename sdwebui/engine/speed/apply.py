"""The speed settings applied to the job's U-Net for the job's duration (undone exactly afterwards), and the
infotext keys that say how the job's weights were held."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from sdwebui.engine.memory.plan import SMALL_FAMILIES
from sdwebui.engine.speed.fp8 import fp8_storage
from sdwebui.engine.speed.settings import SpeedSettings
from sdwebui.models.model import LoadedModel


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
def applied(model: LoadedModel, speed: SpeedSettings) -> Iterator[dict[str, str]]:
    """Yields the infotext parameters: "FP8 weight" (A1111's key) and "Precision" (bf16 compute)."""
    params: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if wants_fp8(model, speed):
            stack.enter_context(fp8_storage(model.unet, model.dtype))
            params["FP8 weight"] = "Enable"
        if speed.channels_last:
            stack.enter_context(channels_last(model.unet))
        if model.dtype == torch.bfloat16:
            params["Precision"] = "bf16"
        yield params
