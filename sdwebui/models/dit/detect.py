"""Which DiT family a file is, from its keys (as diffusers' `infer_diffusers_model_type` decides them).

Flux: BFL's `double_blocks.*.img_attn.norm.key_norm.scale`; dev carries the guidance embedder
(`guidance_in`), schnell does not. SD3/3.5: MMDiT's `joint_blocks.*.context_block.adaLN_modulation`.
Keys may sit under an all-in-one file's prefix (`model.diffusion_model.`) or none (transformer-only files).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sdwebui.models.model import ModelFamily

FLUX_KEY = "double_blocks.0.img_attn.norm.key_norm.scale"
FLUX_GUIDANCE_KEY = "guidance_in.in_layer.weight"
SD3_KEY = "joint_blocks.0.context_block.adaLN_modulation.1.bias"
DIFFUSERS_PIPELINES = {"FluxPipeline": "flux", "StableDiffusion3Pipeline": "sd3"}


@dataclass(frozen=True)
class DitDetection:
    family: ModelFamily
    reason: str


def _has(keys: Iterable[str], suffix: str) -> bool:
    return any(k == suffix or k.endswith("." + suffix) for k in keys)


def detect_dit(keys: Iterable[str]) -> DitDetection | None:
    """The DiT family of a single file's keys; None for anything else (a U-Net checkpoint)."""
    keys = list(keys)
    if _has(keys, FLUX_KEY):
        if _has(keys, FLUX_GUIDANCE_KEY):
            return DitDetection(ModelFamily.FLUX_DEV, "BFL Flux keys with a guidance embedder (dev)")
        return DitDetection(ModelFamily.FLUX_SCHNELL, "BFL Flux keys without guidance embedder (schnell)")
    if _has(keys, SD3_KEY):
        return DitDetection(ModelFamily.SD3, "MMDiT joint blocks (SD 3 / 3.5)")
    return None
