"""Flux / SD3 network names -> the diffusers transformer's modules (``unet.<path>``: LoadedModel.unet holds
the transformer).

A file names a transformer layer in one of three ways:

- kohya (sd-scripts): ``lora_unet_double_blocks_0_img_attn_qkv`` (Flux), ``lora_unet_joint_blocks_0_x_block_
  attn_qkv`` (SD3), i.e. the original (BFL / Stability) path with underscores;
- BFL / ComfyUI: ``diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight`` (or ``lora_A``/``lora_B``);
- diffusers / PEFT: ``transformer.transformer_blocks.0.attn.to_q.lora_A.weight`` (and ``lora_transformer_``
  kohya exports of those names).

The original names come from the checkpoint loader's own rule tables (sdwebui.models.dit.flux_keys /
sd3_keys), which take every size from the module, so tiny test models and full-size ones map alike
(diffusers' converters hard-code Flux's 3072 width). A fused original layer (``img_attn.qkv``, single
blocks' ``linear1`` = q, k, v and the MLP) maps to several diffusers modules: the LoRA's up matrix is split
by rows in their order, its down matrix is shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sdwebui.models.dit import flux_keys, sd3_keys
from sdwebui.models.model import LoadedModel, ModelFamily

UNET = "unet"


@dataclass
class DitNames:
    aliases: dict[str, str] = field(default_factory=dict)  # file name -> target
    fused: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)  # -> ((target, rows), ...)


def _rules(model: LoadedModel) -> list[flux_keys.Rule]:
    transformer = model.unet
    if model.family == ModelFamily.SD3:
        return list(sd3_keys.rules(set(transformer.state_dict())))
    guidance = getattr(transformer.time_text_embed, "guidance_embedder", None) is not None
    layers, singles = len(transformer.transformer_blocks), len(transformer.single_transformer_blocks)
    return list(flux_keys.rules(layers, singles, guidance))


def _kohya(prefix: str, path: str) -> str:
    return prefix + path.replace(".", "_")


def dit_names(model: LoadedModel, modules: dict[str, torch.nn.Module]) -> DitNames:
    """Every name a Flux/SD3 file may use for the transformer's layers; `modules`: path -> module."""
    names = DitNames()
    for path in modules:
        for prefix in ("lora_transformer_", "lora_unet_"):
            names.aliases.setdefault(_kohya(prefix, path), f"{UNET}.{path}")
    for rule in _rules(model):
        if "weight" not in rule.suffixes or rule.op == flux_keys.SWAP:
            continue  # norms' scales and the swapped final AdaLN: no LoRA trainer targets them
        spellings = (_kohya("lora_unet_", rule.bfl), f"{UNET}.{rule.bfl}")
        if rule.op == flux_keys.CAT:
            parts = tuple((f"{UNET}.{d}", modules[d].weight.shape[0]) for d in rule.diffusers if d in modules)
            if len(parts) == len(rule.diffusers):
                names.fused.update(dict.fromkeys(spellings, parts))
        elif rule.diffusers[0] in modules:
            names.aliases.update(dict.fromkeys(spellings, f"{UNET}.{rule.diffusers[0]}"))
    return names


def family_group(family: ModelFamily) -> str:
    """The family a network is trained for, as a user names it."""
    if family in (ModelFamily.FLUX_DEV, ModelFamily.FLUX_SCHNELL):
        return "Flux"
    if family == ModelFamily.SD3:
        return "SD3"
    if family in (ModelFamily.SDXL, ModelFamily.SDXL_INPAINT, ModelFamily.SDXL_REFINER):
        return "SDXL"
    return "SD1/SD2"


_BASE_VERSIONS = (
    ("flux", "Flux"),
    ("sd3", "SD3"),
    ("sdxl", "SDXL"),
    ("sd_v1", "SD1/SD2"),
    ("sd_v2", "SD1/SD2"),
)
_KEY_MARKS = (
    (("double_blocks", "single_blocks", "single_transformer_blocks"), "Flux"),
    (("joint_blocks", "context_block"), "SD3"),
    (("input_blocks", "output_blocks", "middle_block", "down_blocks", "up_blocks", "mid_block"), "U-Net"),
)


def network_family(keys: list[str], metadata: dict[str, str]) -> str | None:
    """The family a file was trained for, from kohya's ``ss_base_model_version`` or its key names."""
    base = metadata.get("ss_base_model_version", "").lower()
    for prefix, group in _BASE_VERSIONS:
        if base.startswith(prefix):
            return group
    for marks, group in _KEY_MARKS:
        if any(mark in key for key in keys for mark in marks):
            if group != "U-Net":
                return group
            return "SDXL" if any(key.startswith("lora_te2_") for key in keys) else "SD1/SD2"
    return None


def check_family(path: object, keys: list[str], metadata: dict[str, str], model_group: str) -> str | None:
    """An error naming both families when a Flux/SD3 network meets another family (or the reverse)."""
    group = network_family(keys, metadata)
    if group is None or not model_group or group == model_group:
        return None
    dit = ("Flux", "SD3")
    if group in dit or model_group in dit:
        return f"{path}: a LoRA for {group}, but the loaded model is {model_group}"
    return None
