"""A1111's `modules.shared_items`: the lists settings and extensions offer as choices, from the app's own."""

from __future__ import annotations

from sdwebui.facade import sd_models, sd_samplers, sd_vae, shared


def list_checkpoint_tiles(use_short: bool = False) -> list[str]:
    return sd_models.checkpoint_tiles(use_short)


def refresh_checkpoints() -> None:
    sd_models.list_models()


def sd_vae_items() -> list[str]:
    return ["Automatic", "None", *sd_vae.vae_dict]


def refresh_vae_list() -> None:
    sd_vae.refresh_vae_list()


def list_samplers() -> list[sd_samplers.SamplerData]:
    return sd_samplers.all_samplers


def reload_hypernetworks() -> None:
    shared.reload_hypernetworks()


def sd_unet_items() -> list[str]:
    return ["Automatic", "None"]  # no separate U-Net files: the checkpoint's own (A1111's first two)


def cross_attention_optimizations() -> list[str]:
    return ["Automatic"]  # the attention implementation is diffusers' (SDPA), not a choice


ui_reorder_categories_builtin_items = ["prompt", "image", "inpaint", "sampler", "accordions", "checkboxes",
                                       "dimensions", "cfg", "denoising", "seed", "batch", "override_settings"]  # fmt: skip


def ui_reorder_categories() -> list[str]:
    return [*ui_reorder_categories_builtin_items, "scripts"]
