"""fp8 weight storage (A1111's fp8_storage): the U-Net's Linear/Conv weights are kept as float8_e4m3fn and
each layer casts its own weights to the model's compute dtype for its forward (and back after it), as
diffusers' layerwise casting does; norms and the in/out projections stay in the compute dtype.

Applied for one job and undone exactly afterwards: the original weights wait in host memory meanwhile (as
A1111's cache_fp16_weight), so turning the setting off never needs a checkpoint reload.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from sdwebui.engine.memory import offload

STORAGE = torch.float8_e4m3fn
SKIPPED = re.compile(r"(^|\.)(pos_embed|patch_embed|proj_in|proj_out)$|norm")  # diffusers' skip list


def _layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    kinds = (torch.nn.Linear, torch.nn.Conv2d)
    return [m for name, m in module.named_modules() if isinstance(m, kinds) and not SKIPPED.search(name)]


def is_fp8(module: torch.nn.Module) -> bool:
    return any(p.dtype == STORAGE for p in module.parameters())


@contextlib.contextmanager
def fp8_storage(module: torch.nn.Module, compute: torch.dtype) -> Iterator[int]:
    """The layers' weights stored in fp8 while the context is open; yields how many layers."""
    layers = _layers(module)
    originals: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    handles = []

    def to_compute(layer: torch.nn.Module, args: tuple) -> None:
        for p in layer.parameters(recurse=False):
            p.data = p.data.to(compute)

    def to_storage(layer: torch.nn.Module, args: tuple, output: object) -> None:
        for p in layer.parameters(recurse=False):
            p.data = p.data.to(STORAGE)  # exact: the values came from fp8

    try:
        for layer in layers:
            for p in layer.parameters(recurse=False):
                originals.append((p, p.data.to("cpu", copy=True)))
                p.data = p.data.to(STORAGE)
            handles.append(layer.register_forward_pre_hook(to_compute))
            handles.append(layer.register_forward_hook(to_storage))
        yield len(layers)
    finally:
        for handle in handles:
            handle.remove()
        if offload.is_streamed(module):  # its offloaded copies hold fp8 weights: streamed afresh next job
            offload.unstream(module)
        for p, original in originals:
            p.data = original.to(p.device)
