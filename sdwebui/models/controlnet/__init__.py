"""Control models (ControlNet, ControlNet Union, T2I-Adapter): the library of files and loaded modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdwebui.models.clip_vision import ClipVisionCache
from sdwebui.models.controlnet.library import ControlModelError, ControlModelInfo, ControlNetLibrary
from sdwebui.models.controlnet.loading import ControlModel, ControlModelCache
from sdwebui.models.ip_adapter import IPAdapterCache


@dataclass
class ControlNets:
    """What a job needs of control models: find one by a unit's `model` name, get it loaded (once, cached)."""

    library: ControlNetLibrary
    cache: ControlModelCache = field(default_factory=ControlModelCache)
    annotator_dir: Path | None = None  # models/ControlNetAnnotators: the preprocessors' weights
    clip_vision_dir: Path | None = None  # models/clip_vision: IP-Adapter's image encoders
    ip_adapters: IPAdapterCache = field(default_factory=IPAdapterCache)
    clip_vision: ClipVisionCache = field(default_factory=ClipVisionCache)
    inpaint_blur_sigma: int = 7  # control_net_inpaint_blur_sigma: inpaint_only's final blend, in pixels

    def find(self, name: str, field_name: str = "model") -> ControlModelInfo:
        return self.library.find(name, field_name)

    def get(
        self, name: str, device: torch.device, dtype: torch.dtype, field_name: str = "model"
    ) -> ControlModel:
        return self.cache.get(self.find(name, field_name), device, dtype)


__all__ = [
    "ControlModel",
    "ControlModelCache",
    "ControlModelError",
    "ControlModelInfo",
    "ControlNetLibrary",
    "ControlNets",
]
