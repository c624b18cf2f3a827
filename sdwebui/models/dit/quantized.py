"""Quantized DiT transformers: GGUF files (city96's / Forge's Flux and SD3 quants, through diffusers' GGUF
support: the weights stay quantized in memory and are dequantized per layer at compute), fp8 e4m3fn /
e5m2 stored weights (read as stored, computed in the model's dtype), and bitsandbytes NF4 (CUDA only)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from sdwebui.models.errors import CheckpointLoadError

GGUF_SUFFIX = ".gguf"
NF4_MARKERS = (".absmax", ".quant_map", ".quant_state.bitsandbytes__nf4")


def gguf_names(path: Path) -> list[str]:
    """The tensor names of a GGUF file (header only)."""
    from gguf import GGUFReader

    try:
        return [tensor.name for tensor in GGUFReader(str(path)).tensors]
    except Exception as error:  # a truncated or foreign file
        raise CheckpointLoadError(f"{path}: not a readable GGUF file: {error}") from None


def read_gguf(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a GGUF file: quantized ones as diffusers' GGUFParameter; an unknown type is an error."""
    import gguf
    from diffusers.models.model_loading_utils import load_gguf_checkpoint
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES

    try:
        tensors = gguf.GGUFReader(str(path)).tensors
    except Exception as error:
        raise CheckpointLoadError(f"{path}: not a readable GGUF file: {error}") from None
    plain = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    for tensor in tensors:
        kind = tensor.tensor_type
        if kind not in plain and kind not in SUPPORTED_GGUF_QUANT_TYPES:
            supported = ", ".join(sorted(t.name for t in SUPPORTED_GGUF_QUANT_TYPES))
            raise CheckpointLoadError(
                f"{path.name}: tensor {tensor.name} has GGUF quantization type {kind.name}, which is not "
                f"supported; supported: F32, F16, {supported}"
            )
    return load_gguf_checkpoint(str(path), return_tensors=True)


def is_quantized(value: torch.Tensor) -> bool:
    return hasattr(value, "quant_type")


def assign_gguf(
    module: torch.nn.Module, state: Mapping[str, torch.Tensor], dtype: torch.dtype, path: Path
) -> None:
    """Linear layers whose weight is quantized become diffusers' GGUFLinear (dequantizing in `dtype` at
    compute); every other tensor is assigned in `dtype`. All of the module's tensors must be there."""
    from diffusers.quantizers.gguf.utils import _replace_with_gguf_linear

    _replace_with_gguf_linear(module, dtype, dict(state))
    expected = set(module.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise CheckpointLoadError(
            f"{path.name}: transformer weights do not fit: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    for name, value in state.items():
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        if is_quantized(value):
            tensor = value
        else:
            tensor = torch.nn.Parameter(value.to(dtype), requires_grad=False)
        if attr in owner._parameters:
            setattr(
                owner, attr, tensor if isinstance(tensor, torch.nn.Parameter) else torch.nn.Parameter(tensor)
            )
        else:
            owner.register_buffer(attr, tensor.data)
    module.eval().requires_grad_(False)


def check_not_nf4(state: Mapping[str, object], path: Path) -> None:
    """bitsandbytes NF4 files (Forge's flux1-dev-bnb-nf4) need CUDA and bitsandbytes."""
    if not any(k.endswith(NF4_MARKERS) for k in state):
        return
    reason = "CUDA is not available" if not torch.cuda.is_available() else "bitsandbytes is not installed"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass
    else:
        if torch.cuda.is_available():
            reason = "loading bitsandbytes NF4 checkpoints is not supported yet"
    raise CheckpointLoadError(
        f"{path.name} is a bitsandbytes NF4 checkpoint and cannot be loaded: {reason}. Use its GGUF (Q4_K / "
        "Q8_0) or fp8 / fp16 version instead"
    )
