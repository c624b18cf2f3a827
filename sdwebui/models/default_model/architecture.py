"""The default model's components: SD1-family modules at a tiny size (configs are plain data)."""

from __future__ import annotations

from typing import Any

import diffusers
import transformers

from sdwebui.models.tokenizer import MAX_LENGTH, VOCAB_SIZE

NATIVE_RESOLUTION = 64

# f=4: 64x64 images <-> 16x16x4 latents.
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [16, 32, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": NATIVE_RESOLUTION,
    "scaling_factor": 1.0,  # replaced by 1/std of the training latents after the VAE is trained
}

# Cross-attention at 16x16 and 8x8 (and the 4x4 middle): position words need the full-resolution map.
# diffusers' ``attention_head_dim`` is the number of heads here, not their width.
UNET_CONFIG: dict[str, Any] = {
    "sample_size": NATIVE_RESOLUTION // 4,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [40, 80, 160],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 128,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}

TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": MAX_LENGTH,
    "hidden_act": "quick_gelu",
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}

# Stable Diffusion's training schedule (the base of ``scheduler_config``).
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def build_vae(config: dict[str, Any] | None = None) -> diffusers.AutoencoderKL:
    return diffusers.AutoencoderKL(**(config or VAE_CONFIG))


def unet_config(channels: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The U-Net config, optionally with other block widths (same depth and attention layout)."""
    config = dict(UNET_CONFIG)
    if channels is not None:
        if len(channels) != len(UNET_CONFIG["block_out_channels"]):
            raise ValueError(f"unet channels: expected {len(UNET_CONFIG['block_out_channels'])} widths")
        config["block_out_channels"] = list(channels)
    return config


def scheduler_config(
    beta_schedule: str = "scaled_linear",
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    prediction_type: str = "epsilon",
    zero_terminal_snr: bool = False,
) -> dict[str, Any]:
    """A DDPM training schedule in the form the checkpoint sidecar and the engine's samplers read."""
    config = dict(SCHEDULER_CONFIG)
    config.update(beta_schedule=beta_schedule, beta_start=beta_start, beta_end=beta_end)
    config["prediction_type"] = prediction_type
    if zero_terminal_snr:
        if prediction_type != "v_prediction":
            raise ValueError("zero terminal SNR needs v-prediction: eps is unlearnable from pure noise")
        config["rescale_betas_zero_snr"] = True
    return config


def build_unet(config: dict[str, Any] | None = None) -> diffusers.UNet2DConditionModel:
    return diffusers.UNet2DConditionModel(**(config or UNET_CONFIG))


def build_text_encoder(config: dict[str, Any] | None = None) -> transformers.CLIPTextModel:
    return transformers.CLIPTextModel(transformers.CLIPTextConfig(**(config or TEXT_ENCODER_CONFIG)))


def build_scheduler(config: dict[str, Any] | None = None) -> diffusers.DDPMScheduler:
    return diffusers.DDPMScheduler.from_config(config or SCHEDULER_CONFIG)
