"""Tiny random-weight models of every family, in memory and written in the real on-disk layouts.

Sizes: UNet (32, 64) channels, VAE (8, 16, 16, 16) channels with 4 latent channels (scale factor 8, as the
real ones), CLIP text encoders with hidden size 32 and the real 49408-token tokenizer. Everything is built
from fixed seeds on CPU in fp32, so two builds with the same seed are identical.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import diffusers
import safetensors.torch
import torch

from sdwebui.models.components import Components, build_components, family_config
from sdwebui.models.families import family_spec
from sdwebui.models.ldm_export import save_single_file, vae_to_ldm
from sdwebui.models.model import CheckpointInfo, LoadedModel, ModelFamily
from sdwebui.models.tokenizer import build_clip_tokenizer, build_openclip_tokenizer

TINY_RESOLUTION = 64  # pixels; latents are 8x8

TINY_VAE = {  # the tiny VAE of every family (DiT fixtures widen its latents)
    "block_out_channels": [8, 16, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "latent_channels": 4,
    "sample_size": TINY_RESOLUTION,
}
_CLIP = {
    "architectures": ["CLIPTextModel"],
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "projection_dim": 32,
}
_OPENCLIP = dict(_CLIP, hidden_act="gelu")
_OPENCLIP_PROJ = dict(_OPENCLIP, architectures=["CLIPTextModelWithProjection"])
_UNET = {
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "sample_size": TINY_RESOLUTION // 8,
}
_UNET_SD2 = dict(_UNET, attention_head_dim=[2, 4], use_linear_projection=True)
_UNET_SDXL = dict(
    _UNET,
    attention_head_dim=[2, 4],
    use_linear_projection=True,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 2],
    cross_attention_dim=64,  # CLIP-L and bigG hidden states concatenated
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 size/crop ids + pooled bigG embedding
)
_UNET_REFINER = dict(_UNET_SDXL, cross_attention_dim=32, projection_class_embeddings_input_dim=5 * 8 + 32)

# the U-Net families (Flux and SD3 have their own tiny models: tests/dit_fixtures.py)
FAMILIES = tuple(f for f in ModelFamily if family_spec(f).architecture == "unet")


def tiny_config(family: ModelFamily | str) -> dict[str, Any]:
    """A complete component config (same schema as the shipped ones and the .json sidecar)."""
    family = ModelFamily(family)
    base = family_config(family)
    config: dict[str, Any] = {
        "family": family.value,
        "vae": dict(TINY_VAE, scaling_factor=base["vae"]["scaling_factor"]),
        "scheduler": base["scheduler"],
        "native_resolution": TINY_RESOLUTION,
    }
    if family in (ModelFamily.SD1, ModelFamily.SD1_INPAINT):
        config.update(unet=dict(_UNET), text_encoder=dict(_CLIP))
    elif family in (ModelFamily.SD2, ModelFamily.SD2_V, ModelFamily.SD2_INPAINT):
        config.update(unet=dict(_UNET_SD2), text_encoder=dict(_OPENCLIP))
    elif family == ModelFamily.SDXL_REFINER:
        config.update(unet=dict(_UNET_REFINER), text_encoder=dict(_OPENCLIP_PROJ))
    else:
        config.update(unet=dict(_UNET_SDXL), text_encoder=dict(_CLIP), text_encoder_2=dict(_OPENCLIP_PROJ))
    config["unet"]["in_channels"] = 9 if family.value.endswith("-inpaint") else 4
    return copy.deepcopy(config)


def tokenizers_for(family: ModelFamily) -> list[Any]:
    if family in (ModelFamily.SD1, ModelFamily.SD1_INPAINT):
        return [build_clip_tokenizer()]
    if family in (ModelFamily.SD2, ModelFamily.SD2_V, ModelFamily.SD2_INPAINT):
        return [build_openclip_tokenizer()]
    if family == ModelFamily.SDXL_REFINER:
        return [build_openclip_tokenizer()]
    return [build_clip_tokenizer(), build_openclip_tokenizer()]


def tiny_components(family: ModelFamily | str, seed: int = 0) -> Components:
    torch.manual_seed(seed)
    components = build_components(tiny_config(family), device="cpu")
    for module in (components.unet, components.vae, *components.text_encoders):
        module.eval().requires_grad_(False)
    return components


def tiny_loaded_model(family: ModelFamily | str, seed: int = 0) -> LoadedModel:
    """An in-memory LoadedModel (CPU, fp32) of the given family with random weights."""
    family = ModelFamily(family)
    config = tiny_config(family)
    components = tiny_components(family, seed)
    name = f"tiny-{family.value}"
    info = CheckpointInfo(path=Path(name), name=name, title=f"{name}.safetensors", filename=name)
    return LoadedModel(
        info=info,
        family=family,
        unet=components.unet,
        vae=components.vae,
        text_encoders=components.text_encoders,
        tokenizers=tokenizers_for(family),
        scheduler_config=dict(config["scheduler"]),
        device=torch.device("cpu"),
        dtype=torch.float32,
        vae_dtype=torch.float32,
        native_resolution=TINY_RESOLUTION,
    )


def write_single_file(
    model: LoadedModel, path: str | Path, dtype: torch.dtype | None = None, sidecar: bool = True
) -> Path:
    """Save as a real single-file checkpoint (.safetensors or .ckpt) in the LDM/SGM layout (+ .json sidecar)."""
    return save_single_file(
        path,
        model.family,
        model.unet,
        model.vae,
        model.text_encoders,
        model.scheduler_config,
        native_resolution=model.native_resolution,
        dtype=dtype,
        write_sidecar=sidecar,
    )


_PIPELINES = {
    ModelFamily.SD1: "StableDiffusionPipeline",
    ModelFamily.SD1_INPAINT: "StableDiffusionInpaintPipeline",
    ModelFamily.SD2: "StableDiffusionPipeline",
    ModelFamily.SD2_V: "StableDiffusionPipeline",
    ModelFamily.SD2_INPAINT: "StableDiffusionInpaintPipeline",
    ModelFamily.SDXL: "StableDiffusionXLPipeline",
    ModelFamily.SDXL_INPAINT: "StableDiffusionXLInpaintPipeline",
    ModelFamily.SDXL_REFINER: "StableDiffusionXLImg2ImgPipeline",
}


def write_diffusers_folder(model: LoadedModel, path: str | Path) -> Path:
    """Save as a diffusers folder (model_index.json, unet/, vae/, text_encoder*/, tokenizer*/, scheduler/)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "_class_name": _PIPELINES[model.family],
        "_diffusers_version": diffusers.__version__,
    }
    model.unet.save_pretrained(path / "unet")
    model.vae.save_pretrained(path / "vae")
    index["unet"] = ["diffusers", "UNet2DConditionModel"]
    index["vae"] = ["diffusers", "AutoencoderKL"]
    for i, (encoder, tokenizer) in enumerate(zip(model.text_encoders, model.tokenizers, strict=True)):
        suffix = "" if i == 0 else f"_{i + 1}"
        encoder.save_pretrained(path / f"text_encoder{suffix}")
        tokenizer.save_pretrained(path / f"tokenizer{suffix}")
        index[f"text_encoder{suffix}"] = ["transformers", type(encoder).__name__]
        index[f"tokenizer{suffix}"] = ["transformers", "CLIPTokenizer"]
    scheduler = diffusers.DDIMScheduler.from_config(model.scheduler_config)
    scheduler.save_pretrained(path / "scheduler")
    index["scheduler"] = ["diffusers", "DDIMScheduler"]
    (path / "model_index.json").write_text(json.dumps(index, indent=1))
    return path


def write_vae_file(vae: diffusers.AutoencoderKL, path: str | Path, layout: str = "ldm") -> Path:
    """A standalone VAE file: ``layout="ldm"`` (A1111 .vae.pt/.safetensors keys) or ``"diffusers"``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = vae.state_dict() if layout == "diffusers" else vae_to_ldm(vae.state_dict(), vae.config)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path


def write_sdxl_base_and_refiner(
    folder: str | Path, base: str = "base", refiner: str = "refiner"
) -> list[Path]:
    """A tiny SDXL base and a tiny SDXL refiner as single-file checkpoints in `folder` (models/Stable-diffusion)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_single_file(tiny_loaded_model(ModelFamily.SDXL, seed=0), folder / f"{base}.safetensors"),
        write_single_file(
            tiny_loaded_model(ModelFamily.SDXL_REFINER, seed=1), folder / f"{refiner}.safetensors"
        ),
    ]
