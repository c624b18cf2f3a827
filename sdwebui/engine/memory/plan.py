"""What a job keeps on the compute device, from the memory mode or (automatic) from an estimate of the job.

The automatic default is Forge's idea: weights + the job's inference memory; keep on the device what fits,
move the rest per stage, stream the U-Net block by block when even it alone does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdwebui.engine.memory.settings import AUTO, GPU, LOWVRAM, MEDVRAM, MEDVRAM_SDXL, MemorySettings
from sdwebui.models.model import LoadedModel, ModelFamily

TEXT, UNET, VAE = "text_encoders", "unet", "vae"
COMPONENTS = (TEXT, UNET, VAE)
SMALL_FAMILIES = (
    ModelFamily.SD1,
    ModelFamily.SD1_INPAINT,
    ModelFamily.SD2,
    ModelFamily.SD2_V,
    ModelFamily.SD2_INPAINT,
)
# rough activation bytes per latent pixel and U-Net row in half precision (SD1.5 512x512, SDPA: ~0.3 GB/row)
UNET_BYTES_PER_LATENT_PIXEL = 40_000
VAE_BYTES_PER_PIXEL = 2_600  # the VAE decoder's peak per output pixel in half precision (one image at a time)
MB = 1024 * 1024


@dataclass(frozen=True)
class JobSize:
    width: int
    height: int
    batch_size: int


@dataclass(frozen=True)
class PlacementPlan:
    """offload: components moved off the device when their stage is over; stream: block-level offload."""

    mode: str
    offload: frozenset[str] = frozenset()
    stream: frozenset[str] = frozenset()
    tile_vae: bool = False
    reason: str = ""

    @property
    def moves_between_stages(self) -> bool:
        return bool(self.offload or self.stream)

    def lower(self) -> PlacementPlan | None:
        """The next lower-memory plan after an out-of-memory error; None when this is already the lowest."""
        if self.mode == LOWVRAM and self.tile_vae:
            return None
        if self.stream and not self.tile_vae:
            return PlacementPlan(self.mode, self.offload, self.stream, True, self.reason + "; VAE tiled")
        return PlacementPlan(LOWVRAM, frozenset(COMPONENTS), frozenset((UNET, TEXT)), True, "out of memory")


def component_bytes(model: LoadedModel) -> dict[str, int]:
    """Bytes of each component's weights (parameters and buffers) as they are stored now."""

    def size(modules: list[torch.nn.Module]) -> int:
        return sum(
            t.numel() * t.element_size()
            for m in modules
            for t in (*m.parameters(), *m.buffers())
            if t.device.type != "meta"
        )

    return {TEXT: size(list(model.text_encoders)), UNET: size([model.unet]), VAE: size([model.vae])}


def inference_bytes(model: LoadedModel, job: JobSize) -> tuple[int, int]:
    """(U-Net activations of one step with CFG, VAE decode of one image), estimated for the job's size."""
    factor = model.vae_scale_factor
    latent_pixels = (job.width // factor) * (job.height // factor)
    half = 2 if model.dtype in (torch.float16, torch.bfloat16) else 4
    unet = 2 * job.batch_size * latent_pixels * UNET_BYTES_PER_LATENT_PIXEL * half // 2
    vae = job.width * job.height * VAE_BYTES_PER_PIXEL * (2 if model.vae_dtype != torch.float32 else 4) // 2
    return unet, vae


def free_device_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA device; None for the CPU (its weights are never offloaded)."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free) + int(torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    return None


def plan_placement(
    model: LoadedModel, settings: MemorySettings, job: JobSize, free_bytes: int | None
) -> PlacementPlan:
    """The plan of `settings.mode`; `free_bytes`: the device's free memory now (None: unknown, the CPU)."""
    large_image = job.width * job.height >= settings.vae_tiling_min_pixels
    tile = settings.vae_tiling == "always" or (settings.vae_tiling == "auto" and large_image)
    everything = frozenset(COMPONENTS)
    if settings.mode == GPU:
        return PlacementPlan(GPU, tile_vae=tile, reason="--always-gpu")
    if settings.mode == MEDVRAM or (settings.mode == MEDVRAM_SDXL and model.family not in SMALL_FAMILIES):
        return PlacementPlan(settings.mode, everything, tile_vae=tile, reason=settings.mode)
    if settings.mode == MEDVRAM_SDXL:
        return PlacementPlan(settings.mode, tile_vae=tile, reason="medvram-sdxl: not an SDXL-or-larger model")
    if settings.mode == LOWVRAM:
        return PlacementPlan(LOWVRAM, everything, frozenset((UNET, TEXT)), tile, "lowvram")
    assert settings.mode == AUTO
    return _automatic(model, settings, job, free_bytes, tile)


def _automatic(
    model: LoadedModel, settings: MemorySettings, job: JobSize, free_bytes: int | None, tile: bool
) -> PlacementPlan:
    cap = settings.gpu_weights_mb * MB if settings.gpu_weights_mb else None
    if free_bytes is None and cap is None:
        return PlacementPlan(AUTO, tile_vae=tile, reason="the device's memory is not limited")
    sizes = component_bytes(model)
    unet_work, vae_work = inference_bytes(model, job)
    resident = sum(s for name, s in sizes.items() if not _on_offload(model, name))
    # what the job may hold: the free memory plus what its components hold already, less the activations
    budget = None if free_bytes is None else free_bytes + resident - unet_work
    if cap is not None:
        budget = cap if budget is None else min(budget, cap)
    tile = tile or (settings.vae_tiling == "auto" and free_bytes is not None and vae_work > free_bytes)
    total = sum(sizes.values())
    if total <= budget:
        return PlacementPlan(
            AUTO, tile_vae=tile, reason=f"all {total // MB} MB of weights fit in {budget // MB} MB"
        )
    if max(sizes.values()) <= budget:
        return PlacementPlan(
            AUTO,
            frozenset(COMPONENTS),
            tile_vae=tile,
            reason=f"{total // MB} MB > {budget // MB} MB: per stage",
        )
    return PlacementPlan(
        AUTO,
        frozenset(COMPONENTS),
        frozenset(name for name, s in sizes.items() if s > budget),
        tile,
        f"a component is larger than {budget // MB} MB: streamed by blocks",
    )


def _on_offload(model: LoadedModel, name: str) -> bool:
    modules = {TEXT: model.text_encoders, UNET: [model.unet], VAE: [model.vae]}[name]
    return all(p.device.type == "cpu" for m in modules for p in m.parameters()) and model.device.type != "cpu"
