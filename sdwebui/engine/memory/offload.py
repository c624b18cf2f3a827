"""Block-level offload (lowvram): diffusers' group offloading, overlapped on a CUDA stream where there is one."""

from __future__ import annotations

import torch


def is_streamed(module: torch.nn.Module) -> bool:
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    return bool(_is_group_offload_enabled(module))


def stream(module: torch.nn.Module, compute: torch.device, offload: torch.device) -> None:
    """Weights stay on `offload`; each block comes to `compute` for its forward (the next one prefetched on a
    side stream on CUDA, so the copy overlaps the compute)."""
    from diffusers.hooks import apply_group_offloading

    module.to(offload)
    cuda = compute.type == "cuda"
    apply_group_offloading(
        module,
        onload_device=compute,
        offload_device=offload,
        offload_type="block_level",
        num_blocks_per_group=1,
        non_blocking=cuda,
        use_stream=cuda,
        record_stream=cuda,
    )


def unstream(module: torch.nn.Module) -> None:
    """Group offloading removed; the module's weights are on the offload device afterwards."""
    from diffusers.hooks.group_offloading import (
        _GROUP_OFFLOADING,
        _LAYER_EXECUTION_TRACKER,
        _LAZY_PREFETCH_GROUP_OFFLOADING,
    )

    for submodule in module.modules():
        registry = getattr(submodule, "_diffusers_hook", None)
        if registry is None:
            continue
        for name in (_GROUP_OFFLOADING, _LAYER_EXECUTION_TRACKER, _LAZY_PREFETCH_GROUP_OFFLOADING):
            if registry.get_hook(name) is not None:
                registry.remove_hook(name, recurse=False)
