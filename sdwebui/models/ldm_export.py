"""Diffusers components -> original LDM/SGM single-file layout (the reverse of diffusers' single-file conversion).

Used to write checkpoints in the layout users' files have (tests, the default-model trainer), and by the
loader to know exactly which keys a file of a given configuration must contain.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sdwebui.models.model import ModelFamily

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

# (kind, prefix) of each text encoder in the single-file layout, in LoadedModel.text_encoders order.
# kind: "clip" = HF CLIP layout kept as is; "openclip" = OpenCLIP layout (fused qkv, resblocks).
TEXT_ENCODER_LAYOUTS: dict[ModelFamily, list[tuple[str, str]]] = {
    ModelFamily.SD1: [("clip", "cond_stage_model.transformer.")],
    ModelFamily.SD1_INPAINT: [("clip", "cond_stage_model.transformer.")],
    ModelFamily.SD2: [("openclip", "cond_stage_model.model.")],
    ModelFamily.SD2_V: [("openclip", "cond_stage_model.model.")],
    ModelFamily.SD2_INPAINT: [("openclip", "cond_stage_model.model.")],
    ModelFamily.SDXL: [
        ("clip", "conditioner.embedders.0.transformer."),
        ("openclip", "conditioner.embedders.1.model."),
    ],
    ModelFamily.SDXL_INPAINT: [
        ("clip", "conditioner.embedders.0.transformer."),
        ("openclip", "conditioner.embedders.1.model."),
    ],
    ModelFamily.SDXL_REFINER: [("openclip", "conditioner.embedders.0.model.")],
}

SD2_FAMILIES = (ModelFamily.SD2, ModelFamily.SD2_V, ModelFamily.SD2_INPAINT)

_UNET_RESNET_RENAMES = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
_VAE_ATTN_RENAMES = [
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
]
_OPENCLIP_LAYER_RENAMES = [
    ("self_attn.out_proj", "attn.out_proj"),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
]


def _rename_by_prefix(
    state_dict: Mapping[str, torch.Tensor], prefixes: list[tuple[str, str, list[tuple[str, str]]]], what: str
) -> dict[str, torch.Tensor]:
    """Rename keys by their longest matching prefix, then apply that prefix's suffix renames."""
    ordered = sorted(prefixes, key=lambda p: len(p[0]), reverse=True)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for old, new, renames in ordered:
            if key == old or key.startswith(old + "."):
                rest = key[len(old) :]
                for a, b in renames:
                    if rest.startswith("." + a + "."):
                        rest = "." + b + rest[len(a) + 1 :]
                        break
                out[new + rest] = value
                break
        else:
            raise ValueError(f"{what}: no LDM name for diffusers key {key!r}")
    return out


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel state dict -> openaimodel keys (without the 'model.diffusion_model.' prefix)."""
    n_blocks = len(config["block_out_channels"])
    per_block = config["layers_per_block"]
    res = _UNET_RESNET_RENAMES
    prefixes: list[tuple[str, str, list[tuple[str, str]]]] = [
        ("time_embedding.linear_1", "time_embed.0", []),
        ("time_embedding.linear_2", "time_embed.2", []),
        ("add_embedding.linear_1", "label_emb.0.0", []),
        ("add_embedding.linear_2", "label_emb.0.2", []),
        ("conv_in", "input_blocks.0.0", []),
        ("conv_norm_out", "out.0", []),
        ("conv_out", "out.2", []),
        ("mid_block.resnets.0", "middle_block.0", res),
        ("mid_block.attentions.0", "middle_block.1", []),
        ("mid_block.resnets.1", "middle_block.2", res),
    ]
    for i in range(n_blocks):
        for j in range(per_block):
            idx = 1 + i * (per_block + 1) + j
            prefixes.append((f"down_blocks.{i}.resnets.{j}", f"input_blocks.{idx}.0", res))
            prefixes.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{idx}.1", []))
        prefixes.append(
            (
                f"down_blocks.{i}.downsamplers.0.conv",
                f"input_blocks.{1 + i * (per_block + 1) + per_block}.0.op",
                [],
            )
        )
        has_attention = config["up_block_types"][i].startswith("CrossAttn")
        for j in range(per_block + 1):
            idx = i * (per_block + 1) + j
            prefixes.append((f"up_blocks.{i}.resnets.{j}", f"output_blocks.{idx}.0", res))
            prefixes.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{idx}.1", []))
        last = i * (per_block + 1) + per_block
        prefixes.append(
            (f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{last}.{2 if has_attention else 1}.conv", [])
        )
    return _rename_by_prefix(state_dict, prefixes, "unet")


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """AutoencoderKL state dict -> LDM autoencoder keys (without the 'first_stage_model.' prefix)."""
    n_blocks = len(config["block_out_channels"])
    res = [("conv_shortcut", "nin_shortcut")]
    prefixes: list[tuple[str, str, list[tuple[str, str]]]] = [
        ("encoder.conv_norm_out", "encoder.norm_out", []),
        ("decoder.conv_norm_out", "decoder.norm_out", []),
    ]
    for name in ("encoder.conv_in", "encoder.conv_out", "decoder.conv_in", "decoder.conv_out"):
        prefixes.append((name, name, []))
    for name in ("quant_conv", "post_quant_conv"):
        prefixes.append((name, name, []))
    for part in ("encoder", "decoder"):
        prefixes.append((f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", res))
        prefixes.append((f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", res))
        prefixes.append((f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", _VAE_ATTN_RENAMES))
    for i in range(n_blocks):
        prefixes.append((f"encoder.down_blocks.{i}.resnets", f"encoder.down.{i}.block", []))
        prefixes.append(
            (f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv", [])
        )
        up = n_blocks - 1 - i  # LDM numbers decoder blocks from the lowest resolution up
        prefixes.append((f"decoder.up_blocks.{i}.resnets", f"decoder.up.{up}.block", []))
        prefixes.append((f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{up}.upsample.conv", []))
    out = _rename_by_prefix(state_dict, prefixes, "vae")
    renamed: dict[str, torch.Tensor] = {}
    for key, value in out.items():
        key = key.replace(".conv_shortcut.", ".nin_shortcut.")
        # LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers.
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        renamed[key] = value
    return renamed


def _text_model_state(text_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Keys of the CLIP text transformer without any 'text_model.' wrapper (transformers >= 5.6 has none)."""
    inner = getattr(text_encoder, "text_model", text_encoder)
    return {k: v for k, v in inner.state_dict().items() if not k.startswith("text_projection")}


def clip_to_ldm(text_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """HF CLIP text model -> the 'transformer.text_model.*' layout of LDM's FrozenCLIPEmbedder (prefix-less)."""
    out = {f"text_model.{k}": v for k, v in _text_model_state(text_encoder).items()}
    positions = text_encoder.config.max_position_embeddings
    out["text_model.embeddings.position_ids"] = torch.arange(positions, device=_device_of(out)).unsqueeze(0)
    return out


def openclip_to_ldm(text_encoder: torch.nn.Module, unused_final_layer: bool) -> dict[str, torch.Tensor]:
    """HF CLIP text model -> OpenCLIP 'model.*' layout (prefix-less).

    ``unused_final_layer``: SD2 files carry one more resblock than SD2 uses (it conditions on the penultimate
    layer) plus a text projection; both are written as zeros so the file has the real layout.
    """
    state = _text_model_state(text_encoder)
    config = text_encoder.config
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": state["embeddings.token_embedding.weight"],
        "positional_embedding": state["embeddings.position_embedding.weight"],
        "ln_final.weight": state["final_layer_norm.weight"],
        "ln_final.bias": state["final_layer_norm.bias"],
    }
    ref = state["final_layer_norm.weight"]
    for i in range(config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [state[f"{src}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
        for key, value in state.items():
            if key.startswith(src) and ".self_attn." not in key.replace("self_attn.out_proj", "out_proj"):
                rest = key[len(src) :]
                for a, b in _OPENCLIP_LAYER_RENAMES:
                    if rest.startswith(a + "."):
                        rest = b + rest[len(a) :]
                        break
                out[dst + rest] = value
    hidden = config.hidden_size
    if hasattr(text_encoder, "text_projection"):
        out["text_projection"] = text_encoder.text_projection.weight.T.contiguous()
    elif unused_final_layer:
        out["text_projection"] = torch.zeros(hidden, hidden, dtype=ref.dtype, device=ref.device)
    if unused_final_layer:
        dst = f"transformer.resblocks.{config.num_hidden_layers}."
        shapes = {
            "attn.in_proj_weight": (3 * hidden, hidden),
            "attn.in_proj_bias": (3 * hidden,),
            "attn.out_proj.weight": (hidden, hidden),
            "attn.out_proj.bias": (hidden,),
            "ln_1.weight": (hidden,),
            "ln_1.bias": (hidden,),
            "ln_2.weight": (hidden,),
            "ln_2.bias": (hidden,),
            "mlp.c_fc.weight": (config.intermediate_size, hidden),
            "mlp.c_fc.bias": (config.intermediate_size,),
            "mlp.c_proj.weight": (hidden, config.intermediate_size),
            "mlp.c_proj.bias": (hidden,),
        }
        for name, shape in shapes.items():
            out[dst + name] = torch.zeros(shape, dtype=ref.dtype, device=ref.device)
    out["logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=ref.dtype, device=ref.device)
    return out


def _device_of(state: Mapping[str, torch.Tensor]) -> torch.device:
    return next(iter(state.values())).device


def components_to_ldm(
    family: ModelFamily, unet: torch.nn.Module, vae: torch.nn.Module, text_encoders: list[torch.nn.Module]
) -> dict[str, torch.Tensor]:
    """The full single-file state dict (LDM layout for SD1/SD2, SGM layout for SDXL)."""
    layouts = TEXT_ENCODER_LAYOUTS[family]
    if len(layouts) != len(text_encoders):
        raise ValueError(f"{family.value} expects {len(layouts)} text encoder(s), got {len(text_encoders)}")
    out: dict[str, torch.Tensor] = {}
    for key, value in unet_to_ldm(unet.state_dict(), unet.config).items():
        out[UNET_PREFIX + key] = value
    for key, value in vae_to_ldm(vae.state_dict(), vae.config).items():
        out[VAE_PREFIX + key] = value
    for (kind, prefix), encoder in zip(layouts, text_encoders, strict=True):
        if kind == "clip":
            part = clip_to_ldm(encoder)
        else:
            part = openclip_to_ldm(encoder, unused_final_layer=family in SD2_FAMILIES)
        out.update({prefix + k: v for k, v in part.items()})
    return out


def component_configs(
    family: ModelFamily,
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoders: list[torch.nn.Module],
    scheduler_config: Mapping[str, Any],
    native_resolution: int,
) -> dict[str, Any]:
    """The ``<name>.json`` sidecar: everything needed to rebuild the components without any hub."""
    sidecar: dict[str, Any] = {
        "family": family.value,
        "unet": {k: v for k, v in dict(unet.config).items() if not k.startswith("_")},
        "vae": {k: v for k, v in dict(vae.config).items() if not k.startswith("_")},
        "scheduler": {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")},
        "native_resolution": native_resolution,
    }
    for i, encoder in enumerate(text_encoders):
        config = encoder.config.to_dict()
        config["architectures"] = [type(encoder).__name__]
        sidecar["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = config
    return json.loads(json.dumps(sidecar, default=list))


def save_single_file(
    path: str | Path,
    family: ModelFamily,
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoders: list[torch.nn.Module],
    scheduler_config: Mapping[str, Any],
    native_resolution: int = 512,
    dtype: torch.dtype | None = None,
    write_sidecar: bool = True,
) -> Path:
    """Write ``path`` (.safetensors or .ckpt) in the original layout, plus a ``<name>.json`` sidecar."""
    path = Path(path)
    state = components_to_ldm(family, unet, vae, text_encoders)
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in state.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        import safetensors.torch

        safetensors.torch.save_file(state, str(path), metadata={"format": "pt"})
    elif path.suffix in (".ckpt", ".pt", ".pth"):
        torch.save({"state_dict": state, "global_step": 0, "epoch": 0}, path)
    else:
        raise ValueError(f"cannot write checkpoint {path}: use .safetensors or .ckpt")
    if write_sidecar:
        sidecar = component_configs(family, unet, vae, text_encoders, scheduler_config, native_resolution)
        path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1, sort_keys=True))
    return path
