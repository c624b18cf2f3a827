"""IP-Adapter files (ip-adapter_sd15, -plus, -plus-face, SDXL variants): the image projection and the
per-layer key/value weights of the decoupled cross-attention.

Layouts: safetensors with flat keys `image_proj.*` / `ip_adapter.<i>.to_k_ip.weight` (and `to_v_ip`), or
a pickle {"image_proj": {...}, "ip_adapter": {...}} (read through the safe loader). `<i>` indexes the
U-Net's attention processors in diffusers' order (the cross-attention ones carry weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from sdwebui.models.safe_pickle import load_pickled_checkpoint


class IPAdapterError(ValueError):
    """A file that is not an IP-Adapter in a known layout; the message names the file and why."""


@dataclass
class IPAdapterWeights:
    name: str
    image_proj: dict[str, torch.Tensor]  # the projection's state dict (original key names)
    layers: dict[int, tuple[torch.Tensor, torch.Tensor]]  # processor index -> (to_k_ip, to_v_ip) weights

    @property
    def is_plus(self) -> bool:
        """A Resampler projection over the encoder's penultimate hidden states (plus, plus-face)."""
        return "latents" in self.image_proj

    @property
    def is_full(self) -> bool:
        return "proj.3.weight" in self.image_proj

    @property
    def uses_hidden_states(self) -> bool:
        return self.is_plus or self.is_full

    @property
    def cross_attention_dim(self) -> int:
        return int(next(iter(self.layers.values()))[0].shape[1])

    @property
    def clip_embeddings_dim(self) -> int:
        """Width of what the projection takes: the encoder's projection_dim (base) or hidden size (plus)."""
        if self.is_plus:
            return int(self.image_proj["proj_in.weight"].shape[1])
        if self.is_full:
            return int(self.image_proj["proj.0.weight"].shape[1])
        return int(self.image_proj["proj.weight"].shape[1])


def is_ip_adapter_keys(keys: list[str]) -> bool:
    """Whether a flat state dict's keys are an IP-Adapter's (for the ControlNet model library)."""
    return any(k.startswith("image_proj.") for k in keys) and any(k.startswith("ip_adapter.") for k in keys)


def _split(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    if "image_proj" in state and "ip_adapter" in state:
        return dict(state["image_proj"]), dict(state["ip_adapter"])
    proj = {k.removeprefix("image_proj."): v for k, v in state.items() if k.startswith("image_proj.")}
    layers = {k.removeprefix("ip_adapter."): v for k, v in state.items() if k.startswith("ip_adapter.")}
    return proj, layers


def load_ip_adapter(path: Path) -> IPAdapterWeights:
    """Read an IP-Adapter file; IPAdapterError names the file when it is not one."""
    try:
        state = load_file(str(path)) if path.suffix == ".safetensors" else load_pickled_checkpoint(path)
    except Exception as error:  # safetensors / the safe loader: a bad or refused file
        raise IPAdapterError(f"{path.name}: not readable: {error}") from None
    if not isinstance(state, dict):
        raise IPAdapterError(f"{path.name}: not a state dict")
    proj, flat = _split(state)
    layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, value in flat.items():
        index, _, rest = key.partition(".")
        if rest == "to_k_ip.weight" and index.isdigit():
            other = flat.get(f"{index}.to_v_ip.weight")
            if other is None:
                raise IPAdapterError(f"{path.name}: ip_adapter.{index} has to_k_ip but no to_v_ip")
            layers[int(index)] = (value, other)
    if not proj or not layers:
        raise IPAdapterError(f"{path.name}: no image_proj.* / ip_adapter.*.to_k_ip keys (not an IP-Adapter)")
    if "proj.weight" not in proj and "latents" not in proj and "proj.3.weight" not in proj:
        raise IPAdapterError(f"{path.name}: unknown image projection layout ({sorted(proj)[:3]}...)")
    return IPAdapterWeights(path.stem, proj, dict(sorted(layers.items())))


class IPAdapterCache:
    """Loaded IP-Adapter files, kept while the file is unchanged (path, size, mtime)."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, int, int], IPAdapterWeights] = {}

    def get(self, path: Path) -> IPAdapterWeights:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._loaded:
            self._loaded = {key: load_ip_adapter(path)}  # one at a time: they are large
        return self._loaded[key]
