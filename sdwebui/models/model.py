"""What a loaded checkpoint looks like to the rest of the program."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class ModelFamily(str, enum.Enum):
    SD1 = "sd1"
    SD1_INPAINT = "sd1-inpaint"
    SD2 = "sd2"  # 512 eps-prediction
    SD2_V = "sd2-v"  # 768 v-prediction
    SD2_INPAINT = "sd2-inpaint"
    SDXL = "sdxl"
    SDXL_INPAINT = "sdxl-inpaint"
    SDXL_REFINER = "sdxl-refiner"
    FLUX_DEV = "flux-dev"  # diffusion transformers (sdwebui.models.families describes every family)
    FLUX_SCHNELL = "flux-schnell"
    SD3 = "sd3"  # SD 3 / 3.5 medium, large, large turbo


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint found on disk (file or diffusers folder); cheap, nothing loaded."""

    path: Path
    name: str  # relative to the checkpoint dir, without extension, as A1111's model_name
    title: str  # "name.safetensors [shorthash]" once hashed, else "name.safetensors"
    filename: str  # absolute path as a string (A1111 "filename")
    sha256: str | None = None
    is_diffusers_folder: bool = False
    config_path: Path | None = None  # sidecar .yaml/.json next to the file, if any

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None


@dataclass
class LoadedModel:
    """Diffusers modules of one checkpoint, on their device, ready for the engine.

    SD1/SD2: one text encoder and tokenizer. SDXL: [CLIP-L, OpenCLIP bigG] (refiner: [bigG]).
    """

    info: CheckpointInfo
    family: ModelFamily
    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoders: list[Any]  # transformers CLIPTextModel / CLIPTextModelWithProjection
    tokenizers: list[Any]  # transformers CLIPTokenizer
    scheduler_config: dict[str, Any]  # DDPM training schedule: num_train_timesteps, betas, prediction_type
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    vae_name: str | None = None  # standalone VAE in use, None = the checkpoint's own
    native_resolution: int = 512
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def is_sdxl(self) -> bool:
        return self.family in (ModelFamily.SDXL, ModelFamily.SDXL_INPAINT, ModelFamily.SDXL_REFINER)

    @property
    def is_inpainting(self) -> bool:
        return self.unet.config.in_channels == 9 and not self.is_dit

    @property
    def is_dit(self) -> bool:
        """A diffusion transformer (Flux, SD3): `unet` holds the transformer, sampling is flow matching."""
        return self.family in (ModelFamily.FLUX_DEV, ModelFamily.FLUX_SCHNELL, ModelFamily.SD3)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)
