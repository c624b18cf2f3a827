"""A1111's `modules.devices` for extensions: where and in which precision the model runs.

`device`, `dtype`, `dtype_vae`, `dtype_unet`, `cpu`, ... are read on access (module `__getattr__`): from the
loaded model when there is one (`shared.sd_model`), else from the flags (`--use-cpu all`, `--no-half`,
`--no-half-vae`, `--precision full`) through the same `DevicePolicy` the model loader uses. Nothing here is
stored: this module only reads the facade. Our loop needs no autocast (modules are placed in their dtype), so
`autocast()` and friends are no-op contexts.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any

import torch

from sdwebui.facade import shared
from sdwebui.models.loader import DevicePolicy

__all__ = [
    "NansException",
    "autocast",
    "cond_cast_float",
    "cond_cast_unet",
    "cpu",
    "get_cuda_device_string",
    "get_device_for",
    "get_optimal_device",
    "get_optimal_device_name",
    "has_mps",
    "test_for_nans",
    "torch_gc",
    "torch_npu_set_device",
    "without_autocast",
]

cpu = torch.device("cpu")
# our loop runs in the modules' own dtype; A1111 code checks these before casting
unet_needs_upcast = False
fp8 = False


class NansException(Exception):
    """Raised by `test_for_nans` (A1111 name)."""


def _policy() -> DevicePolicy:
    opts = shared.cmd_opts
    return DevicePolicy.from_flags(
        use_cpu_all="all" in (getattr(opts, "use_cpu", None) or []),
        no_half=bool(getattr(opts, "no_half", False)),
        no_half_vae=bool(getattr(opts, "no_half_vae", False)),
        precision_full=getattr(opts, "precision", "autocast") == "full",
    )


def _model() -> Any:
    model = shared.current_model()
    return model.loaded_model if model is not None else None


def get_optimal_device() -> torch.device:
    """The loaded model's device, else the one the flags would choose."""
    model = _model()
    return torch.device(model.device) if model is not None else _policy().device


def get_optimal_device_name() -> str:
    device = get_optimal_device()
    return f"{device.type}:{device.index}" if device.index is not None else device.type


def get_cuda_device_string() -> str:
    return "cuda"


def get_device_for(task: str) -> torch.device:
    """A1111 lets `--use-cpu <task>` move single tasks to the CPU; we honour the task names the same way."""
    use_cpu = getattr(shared.cmd_opts, "use_cpu", None) or []
    return cpu if task in use_cpu or "all" in use_cpu else get_optimal_device()


def has_mps() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def torch_gc() -> None:
    """Free cached accelerator memory (what A1111 extensions call after dropping big tensors)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


def torch_npu_set_device() -> None:  # A1111 supports Ascend NPUs; we do not, and the call is harmless
    pass


def autocast(disable: bool = False) -> contextlib.AbstractContextManager:
    """A no-op context: the modules already run in their own dtype."""
    return contextlib.nullcontext()


def without_autocast(disable: bool = False) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def cond_cast_unet(tensor: torch.Tensor) -> torch.Tensor:
    """Cast a conditioning tensor to the UNet's dtype."""
    return tensor.to(__getattr__("dtype_unet"))


def cond_cast_float(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if unet_needs_upcast else tensor


def test_for_nans(x: torch.Tensor, where: str) -> None:
    """Raise NansException when `x` is all NaN (A1111 checks the UNet output and the VAE output)."""
    if getattr(shared.cmd_opts, "disable_nan_check", False):
        return
    if torch.isnan(x).all():
        raise NansException(f"A tensor with all NaNs was produced in {where}.")


def __getattr__(name: str) -> Any:  # values that follow the loaded model, computed on access
    if name in ("device", "device_interrogate", "device_gfpgan", "device_esrgan", "device_codeformer"):
        task = name.removeprefix("device").lstrip("_")
        return get_device_for(task) if task else get_optimal_device()
    if name in ("dtype", "dtype_unet", "dtype_inference"):
        model = _model()
        return model.dtype if model is not None else _policy().dtype
    if name == "dtype_vae":
        model = _model()
        return model.vae_dtype if model is not None else _policy().vae_dtype
    raise AttributeError(f"module 'sdwebui.facade.devices' has no attribute {name!r}")
