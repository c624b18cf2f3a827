"""CLIP vision encoders for IP-Adapter from models/clip_vision/ (offline: shipped configs, no hub).

The extension's names: clip_h (ViT-H/14, SD1.5 and the SDXL vit-h adapters) and clip_g (ViT-bigG/14,
ip-adapter_sdxl). A file also loads under ComfyUI's names. A config.json beside the weights
(`<stem>.json`) or a diffusers/transformers folder (config.json + weights) overrides the shipped config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from sdwebui.models.safe_pickle import load_pickled_checkpoint

if TYPE_CHECKING:  # transformers loads when an encoder does (the page and API start without it)
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

_COMMON = dict(
    attention_dropout=0.0,
    dropout=0.0,
    hidden_act="gelu",
    image_size=224,
    initializer_factor=1.0,
    initializer_range=0.02,
    layer_norm_eps=1e-05,
    num_attention_heads=16,
    num_channels=3,
    patch_size=14,
)
SHIPPED_CONFIGS = {
    "clip_h": dict(
        _COMMON, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, projection_dim=1024
    ),
    "clip_g": dict(
        _COMMON, hidden_size=1664, intermediate_size=8192, num_hidden_layers=48, projection_dim=1280
    ),
}
FILE_NAMES = {
    "clip_h": (
        "clip_h.pth",
        "clip_h.safetensors",
        "clip_vision_h.safetensors",
        "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
    ),
    "clip_g": (
        "clip_g.pth",
        "clip_g.safetensors",
        "clip_vision_g.safetensors",
        "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors",
    ),
}
# OpenAI CLIP's normalisation (the extension's CLIPImageProcessor settings)
_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


class ClipVisionError(ValueError):
    """A CLIP vision file that is missing or does not load; the message names the file."""


def find_encoder(clip_vision_dir: Path | None, config: str) -> Path | None:
    """The file (or folder) for `config` ("clip_h" / "clip_g") in models/clip_vision, or None."""
    if clip_vision_dir is None:
        return None
    for name in FILE_NAMES[config]:
        candidate = clip_vision_dir / name
        if candidate.is_file() or (candidate.is_dir() and (candidate / "config.json").is_file()):
            return candidate
    return None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        if not weights:
            raise ClipVisionError(f"{path.name}: no weights in the folder")
        path = weights[0]
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = load_pickled_checkpoint(path)
    if not isinstance(state, dict):
        raise ClipVisionError(f"{path.name}: not a state dict")
    return state


def _config_for(path: Path, config: str) -> CLIPVisionConfig:
    from transformers import CLIPVisionConfig

    sidecar = path / "config.json" if path.is_dir() else path.with_suffix(".json")
    if sidecar.is_file():
        values = json.loads(sidecar.read_text())
        values = values.get("vision_config", values)  # a full CLIPConfig: its vision part
        return CLIPVisionConfig(**values)
    return CLIPVisionConfig(**SHIPPED_CONFIGS[config])


@dataclass
class ClipVisionEncoder:
    """A loaded encoder: image -> CLIP image embeds (projected) and the penultimate hidden states."""

    name: str
    model: CLIPVisionModelWithProjection

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """[1, 3, S, S]: area-resized to the encoder's square input, normalised (the extension's way)."""

        array = np.asarray(image.convert("RGB"))
        array = cv2.resize(array, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        normalized = (array.astype(np.float32) / 255.0 - _MEAN) / _STD
        return torch.from_numpy(normalized).permute(2, 0, 1)[None]

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image_embeds [B, proj], hidden_states[-2] [B, tokens, hidden]) in float32."""
        parameter = next(self.model.parameters())
        out = self.model(pixel_values=pixels.to(parameter), output_hidden_states=True)
        return out.image_embeds.float(), out.hidden_states[-2].float()


def load_encoder(path: Path, config: str, device: torch.device | str = "cpu") -> ClipVisionEncoder:
    """Load a CLIP vision file (safetensors, or a pickle through the safe loader) with its config."""
    from transformers import CLIPVisionModelWithProjection

    try:
        state = _read_state_dict(path)
        model = CLIPVisionModelWithProjection(_config_for(path, config))
        state = {k.removeprefix("model."): v for k, v in state.items()}
        missing, _ = model.load_state_dict(state, strict=False)
    except ClipVisionError:
        raise
    except Exception as error:  # torch / safetensors raise many types for a bad file
        raise ClipVisionError(f"{path.name}: not a CLIP vision model for {config}: {error}") from None
    if any(not k.endswith("position_ids") for k in missing):
        raise ClipVisionError(f"{path.name}: not a CLIP vision model for {config} (missing {missing[0]})")
    return ClipVisionEncoder(path.name, model.eval().to(device))


class ClipVisionCache:
    """Loaded encoders per (file, config, device), kept while the file is unchanged."""

    def __init__(self) -> None:
        self._loaded: dict[tuple, ClipVisionEncoder] = {}

    def get(self, path: Path, config: str, device: torch.device | str = "cpu") -> ClipVisionEncoder:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, config, str(device))
        if key not in self._loaded:
            self._loaded = {key: load_encoder(path, config, device)}
        return self._loaded[key]
