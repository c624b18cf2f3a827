"""Per-family component configs (shipped in configs/, overridable by a sidecar) and building the modules."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sdwebui.models.model import ModelFamily

if TYPE_CHECKING:  # diffusers and transformers cost seconds to import: only when a model is built
    import diffusers
    import transformers

CONFIG_DIR = Path(__file__).parent / "configs"
COMPONENT_KEYS = ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler")
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")  # transformers class names


@dataclass
class Components:
    unet: diffusers.UNet2DConditionModel
    vae: diffusers.AutoencoderKL
    text_encoders: list[transformers.PreTrainedModel]


def family_config(family: ModelFamily) -> dict[str, Any]:
    """The shipped diffusers configs of a family: {family, unet, vae, text_encoder[, text_encoder_2], ...}."""
    return json.loads((CONFIG_DIR / f"{family.value}.json").read_text())


def merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Sidecar values win; component dicts are updated key by key so a sidecar can change one field."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key in COMPONENT_KEYS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def text_encoder_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [config[k] for k in ("text_encoder", "text_encoder_2") if k in config]


def build_text_encoder(config: dict[str, Any]) -> transformers.PreTrainedModel:
    import transformers

    arch = (config.get("architectures") or ["CLIPTextModel"])[0]
    if arch not in TEXT_ENCODER_CLASSES:
        raise ValueError(f"unsupported text encoder architecture {arch!r}")
    kwargs = {
        k: v for k, v in config.items() if k not in ("architectures", "model_type", "transformers_version")
    }
    return getattr(transformers, arch)(transformers.CLIPTextConfig(**kwargs))


def build_components(config: dict[str, Any], device: str | torch.device = "meta") -> Components:
    """Instantiate the modules from configs; on 'meta' nothing is allocated or randomly initialised."""
    import diffusers

    with torch.device(device):
        unet = diffusers.UNet2DConditionModel.from_config(config["unet"])
        vae = diffusers.AutoencoderKL.from_config(config["vae"])
        encoders = [build_text_encoder(c) for c in text_encoder_configs(config)]
    return Components(unet=unet, vae=vae, text_encoders=encoders)


def build_vae(config: dict[str, Any], device: str | torch.device = "meta") -> diffusers.AutoencoderKL:
    import diffusers

    with torch.device(device):
        return diffusers.AutoencoderKL.from_config(config)
