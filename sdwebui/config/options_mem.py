"""Settings of the memory modes (sdwebui.engine.memory), collected into sdwebui.config.options."""

from __future__ import annotations

from typing import Any

from sdwebui.config.option_info import OptionInfo

SECTION_MEMORY = ("memory", "Memory")
MODES = ("auto", "gpu", "medvram", "medvram-sdxl", "lowvram")  # sdwebui.engine.memory.settings.MODES
TILING = ("auto", "always", "never")


def mem_templates() -> dict[str, OptionInfo]:
    return {name: OptionInfo(**kwargs) for name, kwargs in _mem_templates_kwargs().items()}


def _mem_templates_kwargs() -> dict[str, dict[str, Any]]:
    return {
        "memory_mode": {
            "default": "auto",
            "label": "Memory mode: auto (keep what fits, move or stream the rest), gpu (all on the device), "
            "medvram (one component on the device at a time), medvram-sdxl (medvram for SDXL and larger), "
            "lowvram (the U-Net and text encoders streamed block by block); --medvram/--lowvram win",
            "choices": list(MODES),
        },
        "gpu_weights_mb": {
            "default": 0,
            "label": "GPU weights (MB): most weights 'auto' keeps on the device; 0 = as much as fits",
            "component_args": {"minimum": 0, "maximum": 262144, "step": 64},
        },
        "vae_tiling": {
            "default": "auto",
            "label": "Tiled VAE: auto (large images, and after running out of memory), always, never",
            "choices": list(TILING),
        },
        "vae_tiling_min_pixels": {
            "default": 2048 * 2048,
            "label": "Tiled VAE 'auto': images of at least this many pixels are tiled",
            "component_args": {"minimum": 64 * 64, "maximum": 16384 * 16384, "step": 64 * 64},
        },
        "s_min_uncond": {
            "default": 0.0,
            "label": "Negative Guidance minimum sigma (skip negative prompt for some steps when the image is "
            "almost ready; 0=disable, higher=faster)",
            "component_args": {"minimum": 0.0, "maximum": 15.0, "step": 0.01},
            "infotext": "NGMS",
        },
        "fp8_storage": {
            "default": "Disable",
            "label": "FP8 weight (U-Net weights stored as float8_e4m3fn, computed in fp16/bf16: about half "
            "the memory of the weights, slightly different images)",
            "choices": ["Disable", "Enable for SDXL", "Enable"],
            "infotext": "FP8 weight",
        },
        "channels_last": {
            "default": False,
            "label": "Channels-last memory format for the U-Net (faster convolutions on tensor cores)",
        },
        "cudnn_benchmark": {
            "default": False,
            "label": "cuDNN benchmark: pick the fastest convolution kernels for each new image size (the first "
            "job of a size is slower; results may differ in the last bits)",
        },
        "unet_compile": {
            "default": False,
            "label": "torch.compile the U-Net (the first step of each new image size compiles, minutes; then "
            "faster; interrupts act between steps only)",
        },
        "step_cache_threshold": {
            "default": 0.0,
            "label": "Step cache for DiT models (Flux, SD3): first-block cache threshold, 0 = off, higher = "
            "faster and further from the uncached image; U-Net models are not affected",
            "component_args": {"minimum": 0.0, "maximum": 1.0, "step": 0.01},
            "infotext": "First block cache",
        },
        "token_merging_ratio": {
            "default": 0.0,
            "label": "Token merging ratio (0=disable, higher=faster)",
            "component_args": {"minimum": 0.0, "maximum": 0.9, "step": 0.1},
            "infotext": "Token merging ratio",
        },
        "token_merging_ratio_hr": {
            "default": 0.0,
            "label": "Token merging ratio for high-res pass (only applies if non-zero and overrides above)",
            "component_args": {"minimum": 0.0, "maximum": 0.9, "step": 0.1},
            "infotext": "Token merging ratio hr",
        },
        "auto_vae_precision": {
            "default": True,
            "label": "Automatically revert VAE to 32-bit floats (triggers when a tensor with NaNs is produced "
            "in VAE; disabling the option in this case will result in a black square image)",
        },
    }
