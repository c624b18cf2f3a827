"""Network key names -> the module names of our loaded diffusers/transformers models.

Targets are named as diffusers names them in a pipeline: ``unet.<module path>``, ``text_encoder.<path>``,
``text_encoder_2.<path>`` (SDXL's OpenCLIP bigG), ``text_encoder_3.<path>`` (SD3's T5). A file names its modules one of these ways:

- kohya / LyCORIS: ``lora_unet_<path with _>`` where the path is the diffusers one
  (``down_blocks_0_attentions_0_...``) or the original LDM/SGM one (``input_blocks_1_1_...``, which all SDXL
  trainers write); ``lora_te_`` (SD1/SD2), ``lora_te1_``/``lora_te2_`` (SDXL's two encoders), ``lora_te3_``
  (T5: SD3's third encoder, and Flux's second, as kohya's Flux scripts name it), with T5's own module names
  (``encoder.block.0.layer.0.SelfAttention.q``).
- diffusers / PEFT: ``unet.<path>.lora_A.weight``, ``text_encoder.<path>.lora.down.weight``, the older
  attention-processor form ``...attn1.processor.to_q_lora.down.weight``, or bare U-Net paths.

Underscore names are ambiguous to split, so the index goes the other way: from every module of the model
it builds every name a file could use for it, and a lookup is exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from sdwebui.models.ldm_export import unet_to_ldm
from sdwebui.models.lora.dit_keys import dit_names, family_group
from sdwebui.models.model import LoadedModel, ModelFamily

UNET = "unet"
TEXT_ENCODER_NAMES = ("text_encoder", "text_encoder_2", "text_encoder_3")

# file part -> canonical part; anything after the module path in a dotted (diffusers/PEFT) key.
_DOTTED_PARTS = {
    "lora_A.weight": "lora_down.weight",
    "lora_B.weight": "lora_up.weight",
    "lora_A.default.weight": "lora_down.weight",
    "lora_B.default.weight": "lora_up.weight",
    "lora.down.weight": "lora_down.weight",
    "lora_down.weight": "lora_down.weight",  # BFL / ComfyUI dotted names with kohya's parts
    "lora_up.weight": "lora_up.weight",
    "lora.up.weight": "lora_up.weight",
    "lora_linear_layer.down.weight": "lora_down.weight",
    "lora_linear_layer.up.weight": "lora_up.weight",
    "lora_magnitude_vector": "peft_magnitude",
    "lora_magnitude_vector.weight": "peft_magnitude",
    "lora_magnitude_vector.default.weight": "peft_magnitude",
    "alpha": "alpha",
}
_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora\.")
_DOTTED_PREFIXES = (UNET, *TEXT_ENCODER_NAMES)
# a transformer's own prefixes (diffusers pipelines, BFL/ComfyUI files) name what LoadedModel calls unet
_TRANSFORMER_PREFIXES = ("transformer.", "model.diffusion_model.", "diffusion_model.")


@dataclass
class ModuleIndex:
    """The patchable modules of one model (those with a weight) and every file name that maps to each."""

    modules: dict[str, torch.nn.Module] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # kohya name -> target
    fused: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)  # -> ((target, rows), ...)
    family: str = ""  # the model's family as dit_keys.family_group names it

    def resolve(self, network_key: str) -> str | None:
        if network_key in self.modules:
            return network_key
        return self.aliases.get(network_key)


def _weighted_modules(root: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    for name, module in root.named_modules():
        if name and isinstance(getattr(module, "weight", None), torch.Tensor):
            yield name, module


def _kohya(prefix: str, path: str) -> str:
    return prefix + path.replace(".", "_")


def _is_t5(encoder: torch.nn.Module) -> bool:
    return getattr(getattr(encoder, "config", None), "model_type", "") == "t5"


def _text_encoder_prefixes(model: LoadedModel) -> list[list[str]]:
    """kohya prefixes for each text encoder, in LoadedModel.text_encoders order."""
    count = len(model.text_encoders)
    if model.family == ModelFamily.SDXL_REFINER:
        return [["lora_te2_", "lora_te_"]]  # its one encoder is the base's second (OpenCLIP bigG)
    prefixes = [["lora_te_", "lora_te1_"]] if count == 1 else [["lora_te1_", "lora_te_"], ["lora_te2_"]]
    if count == 3:
        prefixes.append(["lora_te3_"])
    elif count == 2 and _is_t5(model.text_encoders[1]):
        prefixes[1].append("lora_te3_")  # Flux's T5: kohya's Flux scripts write lora_te3_ (ComfyUI's name)
    return prefixes


def build_index(model: LoadedModel) -> ModuleIndex:
    index = ModuleIndex(family=family_group(model.family))
    unet_modules = dict(_weighted_modules(model.unet))
    if model.is_dit:
        names = dit_names(model, unet_modules)
        index.aliases.update(names.aliases)
        index.fused.update(names.fused)
    else:
        ldm_names = unet_to_ldm({f"{name}.weight": name for name in unet_modules}, model.unet.config)  # type: ignore[dict-item]
        for ldm_key, name in ldm_names.items():
            index.aliases[_kohya("lora_unet_", ldm_key.removesuffix(".weight"))] = f"{UNET}.{name}"
    for name, module in unet_modules.items():
        index.modules[f"{UNET}.{name}"] = module
        index.aliases[_kohya("lora_unet_", name)] = f"{UNET}.{name}"  # diffusers-style wins on a clash
    for encoder, prefix_name, kohya_prefixes in zip(
        model.text_encoders, TEXT_ENCODER_NAMES, _text_encoder_prefixes(model), strict=False
    ):
        t5 = _is_t5(encoder)
        for name, module in _weighted_modules(encoder):
            path = name if t5 else canonical_text_path(name)  # T5 files use its own names
            target = f"{prefix_name}.{path}"
            index.modules[target] = module
            for kohya_prefix in kohya_prefixes:
                index.aliases.setdefault(_kohya(kohya_prefix, path), target)
    return index


def canonical_text_path(path: str) -> str:
    """Files name CLIP modules under ``text_model.`` (transformers 4); transformers 5's CLIPTextModel has
    its encoder at the top, CLIPTextModelWithProjection still under ``text_model``: targets use the file form."""
    return path if path.startswith("text_model.") or path == "text_projection" else f"text_model.{path}"


def split_key(key: str) -> tuple[str, str] | None:
    """(network key, canonical part) of one tensor key, or None when it is not a network weight."""
    if key.startswith(("lora_unet_", "lora_transformer_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_")):
        network_key, _, part = key.partition(".")
        return (network_key, part) if part else None
    key = key.removeprefix("base_model.model.")
    for prefix in _TRANSFORMER_PREFIXES:
        if key.startswith(prefix):
            key = f"{UNET}.{key.removeprefix(prefix)}"
    key = _PROCESSOR.sub(lambda m: "." + ("to_out.0" if m[1] == "to_out" else m[1]) + ".lora.", key)
    for suffix, part in _DOTTED_PARTS.items():
        if key.endswith("." + suffix):
            path = key[: -len(suffix) - 1]
            if not path.startswith(tuple(p + "." for p in _DOTTED_PREFIXES)):
                path = f"{UNET}.{path}"  # diffusers saves a bare U-Net state dict without a prefix
            return path, part
    return None


def is_text_encoder_target(target: str) -> bool:
    return target.startswith(tuple(p + "." for p in TEXT_ENCODER_NAMES))
