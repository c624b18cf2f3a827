"""Loading control models into diffusers modules (ControlNetModel, ControlNetUnionModel, T2IAdapter), offline.

Single files: the original layout is renamed with diffusers' own single-file converter; the config comes from
the file's shapes (layouts.py) with a `<stem>.json` sidecar's values on top; the module is built on the meta
device and every tensor assigned (a missing or extra key is an error naming it, never random weights).
Folders load with `from_pretrained(local_files_only=True)`. A small LRU cache keeps loaded models, so a model
is loaded once and the cache holds at most `max_models` (the extension's "Model cache size" setting).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdwebui.models.controlnet import layouts
from sdwebui.models.controlnet.library import ControlModelError, ControlModelInfo
from sdwebui.models.loader import read_state_dict

_CLASSES = {
    layouts.CONTROLNET: "ControlNetModel",
    layouts.CONTROLNET_UNION: "ControlNetUnionModel",
    layouts.T2I_ADAPTER: "T2IAdapter",
}


@dataclass
class ControlModel:
    """A loaded control model: the diffusers module and what it is for."""

    info: ControlModelInfo
    kind: str  # layouts.CONTROLNET | CONTROLNET_UNION | T2I_ADAPTER
    base: str  # layouts.SD1 | SD2 | SDXL
    module: torch.nn.Module
    device: torch.device
    dtype: torch.dtype

    @property
    def title(self) -> str:
        return self.info.title

    @property
    def is_adapter(self) -> bool:
        return self.kind == layouts.T2I_ADAPTER

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.module.parameters())


def load_control_model(info: ControlModelInfo, device: torch.device, dtype: torch.dtype) -> ControlModel:
    if not info.usable or info.layout is None:
        raise ControlModelError(f"ControlNet model {info.title} cannot be used: {info.error}")
    layout = info.layout
    if layout.kind not in _CLASSES:
        raise ControlModelError(f"{info.title} is an {layout.kind.replace('_', '-')}, not a ControlNet")
    if layout.layout == "folder":
        module = _load_folder(info.path, layout.kind)
    else:
        module = _load_file(info, layout)
    # nn.Module.to: diffusers' own .to() warns about dtype casts the loader means to make
    module = torch.nn.Module.to(module, device=device, dtype=dtype).eval().requires_grad_(False)
    return ControlModel(info, layout.kind, layout.base, module, device, dtype)


def _load_folder(folder: Path, kind: str) -> torch.nn.Module:
    import diffusers

    cls = getattr(diffusers, _CLASSES[kind])
    variant = None
    if not any((folder / f"diffusion_pytorch_model.{ext}").is_file() for ext in ("safetensors", "bin")):
        variant = "fp16"
    try:
        return cls.from_pretrained(
            str(folder), local_files_only=True, variant=variant, torch_dtype=torch.float32
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ControlModelError(f"{folder.name}: not a loadable {cls.__name__} folder: {exc}") from None


def _load_file(info: ControlModelInfo, layout: layouts.Layout) -> torch.nn.Module:
    state, _ = read_state_dict(info.path)
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if layout.kind == layouts.T2I_ADAPTER:
        if layout.layout == "t2i_original":
            state = layouts.t2i_original_to_diffusers(state)
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        config = {**layouts.adapter_config(shapes, layout.base), **(info.sidecar or {})}
    else:
        if layout.layout == "ldm":
            state = _convert_ldm(state)
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        config = {**layouts.controlnet_config(shapes, layout.base), **(info.sidecar or {})}
    return _build(layout.kind, config, state, info.path)


def _convert_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    prefixed = any(k.startswith(layouts.LDM_PREFIX) for k in state)
    plain = {k[len(layouts.LDM_PREFIX) :]: v for k, v in state.items() if k.startswith(layouts.LDM_PREFIX)}
    plain = plain if prefixed else state
    shapes = {k: tuple(v.shape) for k, v in plain.items()}
    config = {"layers_per_block": layouts.ldm_layers_per_block(shapes)}
    converted = convert_controlnet_checkpoint(plain, config)
    return {k: v for k, v in converted.items() if v is not None}


def _build(kind: str, config: dict[str, Any], state: dict[str, torch.Tensor], path: Path) -> torch.nn.Module:
    import diffusers

    cls = getattr(diffusers, _CLASSES[kind])
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        with torch.device("meta"):
            module = cls.from_config(config)
    except (TypeError, ValueError) as exc:
        raise ControlModelError(f"{path.name}: config does not build a {cls.__name__}: {exc}") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ControlModelError(
            f"{path.name}: weights do not match the {cls.__name__} layout: missing {_few(missing)}, "
            f"unexpected {_few(extra)}"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ControlModelError(
                f"{path.name}: {key} has shape {tuple(state[key].shape)}, the layout needs {tuple(tensor.shape)}"
            )
    module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, assign=True, strict=True)
    return module


def _few(keys: list[str], n: int = 3) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


class ControlModelCache:
    """Loaded control models by (path, device, dtype), least recently used dropped beyond `max_models`."""

    def __init__(self, max_models: int = 2):
        self.max_models = max(1, int(max_models))
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple[str, str, str], ControlModel] = OrderedDict()
        self.loads = 0  # how many times a file was actually loaded (tests, benchmark)

    def get(self, info: ControlModelInfo, device: torch.device, dtype: torch.dtype) -> ControlModel:
        key = (str(info.path), str(device), str(dtype))
        with self._lock:
            model = self._models.get(key)
            if model is not None and model.info == info:
                self._models.move_to_end(key)
                return model
            model = load_control_model(info, device, dtype)
            self.loads += 1
            self._models[key] = model
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return model

    def set_limit(self, max_models: int) -> None:
        with self._lock:
            self.max_models = max(1, int(max_models))
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)

    def loaded(self) -> list[ControlModel]:
        with self._lock:
            return list(self._models.values())
