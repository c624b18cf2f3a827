"""torch.compile of the U-Net (the unet_compile setting): compiled in place once, each new shape compiled on
its first step (the warm-up), then reused by every later step and job of that shape; the recompiles are
logged from torch._dynamo's counters, so a setting that makes the graph change per job shows up."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def is_compiled(module: torch.nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def set_compiled(module: torch.nn.Module, enabled: bool, backend: str = "inductor") -> None:
    """Compile `module` (nn.Module.compile: in place, shape-static graphs), or go back to eager."""
    if enabled and not is_compiled(module):
        log.info(
            "compiling the U-Net with torch.compile (%s): the first step of each new size is slow", backend
        )
        module.compile(backend=backend, dynamic=False)
    elif not enabled and is_compiled(module):
        module._compiled_call_impl = None  # nn.Module has compile() and no public way back: eager again


def compiled_frames() -> int:
    """How many frames torch._dynamo has compiled in this process (each recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
