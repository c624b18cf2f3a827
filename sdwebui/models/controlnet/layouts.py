"""Which kind of control model a state dict is, and the diffusers config its keys and shapes imply.

Layouts recognised:
- ControlNet, original (lllyasviel) single file: `control_model.*` keys (or the same keys without the prefix):
  `input_hint_block`, `zero_convs`, `middle_block_out`, the U-Net encoder's `input_blocks` / `middle_block`;
- ControlNet in diffusers' key layout as one file (`controlnet_cond_embedding.*`, `controlnet_down_blocks.*`):
  how most SDXL ControlNets are downloaded into models/ControlNet;
- T2I-Adapter in diffusers' layout (`adapter.body.*`) or the original TencentARC one (`body.*`, `conv_in`).
A diffusers folder (config.json) says what it is itself (`_class_name`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CONTROLNET, T2I_ADAPTER, CONTROLNET_UNION = "controlnet", "t2i_adapter", "controlnet_union"
IP_ADAPTER = "ip_adapter"  # run by sdwebui.engine.controlnet.ip_adapter, not loaded as a diffusers module
SD1, SD2, SDXL = "sd1", "sd2", "sdxl"
ANY = "any"  # a base that cannot be told from the weights: the add-on checks the fit itself
LDM_PREFIX = "control_model."


class LayoutError(ValueError):
    """The keys match no control model layout; the message says what was looked for."""


@dataclass(frozen=True)
class Layout:
    kind: str  # CONTROLNET | T2I_ADAPTER | CONTROLNET_UNION
    layout: str  # "ldm" | "diffusers" | "t2i_original" | "folder"
    base: str  # SD1 | SD2 | SDXL: the U-Net family it was trained for


Shapes = Mapping[str, tuple[int, ...]]


def detect(shapes: Shapes) -> Layout:
    """The layout of a single-file control model from its key -> shape mapping (no tensor data needed)."""
    keys = set(shapes)
    if any(k.startswith(LDM_PREFIX) for k in keys):
        shapes = {k[len(LDM_PREFIX) :]: v for k, v in shapes.items() if k.startswith(LDM_PREFIX)}
        keys = set(shapes)
    if any(k.startswith("image_proj.") for k in keys) and any(k.startswith("ip_adapter.") for k in keys):
        return Layout(IP_ADAPTER, "ip_adapter", ip_adapter_base(shapes))
    if "input_hint_block.0.weight" in keys and "input_blocks.0.0.weight" in keys:
        return Layout(CONTROLNET, "ldm", _ldm_base(shapes))
    if "controlnet_cond_embedding.conv_in.weight" in keys and "conv_in.weight" in keys:
        kind = CONTROLNET_UNION if "task_embedding" in keys else CONTROLNET
        return Layout(kind, "diffusers", _diffusers_base(shapes))
    if "adapter.conv_in.weight" in keys or (
        "conv_in.weight" in keys and any(k.startswith("body.") for k in keys)
    ):
        prefix = "adapter." if "adapter.conv_in.weight" in keys else ""
        return Layout(T2I_ADAPTER, "diffusers" if prefix else "t2i_original", _adapter_base(shapes, prefix))
    sample = ", ".join(sorted(keys)[:3]) or "no tensors"
    raise LayoutError(
        "not a ControlNet or T2I-Adapter: expected 'control_model.input_hint_block.*' (original ControlNet), "
        f"'controlnet_cond_embedding.*' (diffusers ControlNet) or 'adapter.*' / 'body.*' (T2I-Adapter); found e.g. "
        f"{sample}"
    )


def _base_from_context(dim: int | None, has_add_embedding: bool, linear_proj: bool) -> str:
    if has_add_embedding or dim == 2048:
        return SDXL
    if dim == 768:
        return SD1
    if dim == 1024:
        return SD2
    return SD2 if linear_proj else SD1  # small (test) models: by structure


def ip_adapter_base(shapes: Shapes) -> str:
    dims = [v[1] for k, v in shapes.items() if k.endswith("to_k_ip.weight")]
    return {768: SD1, 1024: SD2, 2048: SDXL}.get(dims[0] if dims else 0, ANY)


def _ldm_base(shapes: Shapes) -> str:
    dims = [v[1] for k, v in shapes.items() if k.endswith("attn2.to_k.weight")]
    linear = any(len(v) == 2 for k, v in shapes.items() if k.endswith(".proj_in.weight"))
    return _base_from_context(dims[0] if dims else None, "label_emb.0.0.weight" in shapes, linear)


def _diffusers_base(shapes: Shapes) -> str:
    dims = [v[1] for k, v in shapes.items() if k.endswith("attn2.to_k.weight")]
    linear = any(len(v) == 2 for k, v in shapes.items() if k.endswith(".proj_in.weight"))
    return _base_from_context(dims[0] if dims else None, "add_embedding.linear_1.weight" in shapes, linear)


def _adapter_base(shapes: Shapes, prefix: str) -> str:
    levels = {int(m.group(1)) for k in shapes if (m := re.match(rf"{re.escape(prefix)}body\.(\d+)\.", k))}
    # SDXL adapters have 3 feature levels (full_adapter_xl), SD 1.x ones 4; the original layout is SD 1.x only
    if prefix and len(levels) == 3:
        return SDXL
    return SD1


# ---- configs ---------------------------------------------------------------------------------------------------


def ldm_layers_per_block(shapes: Shapes) -> int:
    """Resnets per level of an original-layout ControlNet: input blocks before the first downsampler, minus conv_in."""
    for index in range(1, 64):
        if f"input_blocks.{index}.0.op.weight" in shapes:
            return index - 1
    raise LayoutError("original ControlNet without a downsampler in input_blocks")


def controlnet_config(shapes: Shapes, base: str) -> dict[str, Any]:
    """A diffusers ControlNetModel config from a diffusers-keyed state dict's shapes."""
    levels = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"down_blocks\.(\d+)\.", k))})
    if not levels:
        raise LayoutError("ControlNet without down blocks")
    resnets = {int(m.group(1)) for k in shapes if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k))}
    channels = [shapes[f"down_blocks.{i}.resnets.0.conv2.weight"][0] for i in levels]
    attention = [f"down_blocks.{i}.attentions.0.proj_in.weight" in shapes for i in levels]
    transformer_layers = []
    for i, has in zip(levels, attention, strict=True):
        found = {
            int(m.group(1))
            for k in shapes
            if (m := re.match(rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.", k))
        }
        transformer_layers.append(max(found) + 1 if has and found else 1)
    cross = [v[1] for k, v in shapes.items() if k.endswith("attn2.to_k.weight")]
    linear = any(len(v) == 2 for k, v in shapes.items() if k.endswith(".proj_in.weight"))
    embedding = _cond_embedding_channels(shapes)
    config: dict[str, Any] = {
        "in_channels": shapes["conv_in.weight"][1],
        "conditioning_channels": shapes["controlnet_cond_embedding.conv_in.weight"][1],
        "conditioning_embedding_out_channels": embedding,
        "block_out_channels": channels,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "layers_per_block": max(resnets) + 1,
        "cross_attention_dim": cross[0] if cross else 768,
        "use_linear_projection": linear,
        "transformer_layers_per_block": transformer_layers,
        "norm_num_groups": _norm_groups(shapes, channels[0]),
        # heads cannot be read from weights: SD 1.x uses 8 heads, SD 2.x and SDXL 64 channels per head
        "attention_head_dim": 8 if base == SD1 else [max(1, c // 64) for c in channels],
    }
    if "add_embedding.linear_1.weight" in shapes:
        config["addition_embed_type"] = "text_time"
        config["projection_class_embeddings_input_dim"] = shapes["add_embedding.linear_1.weight"][1]
        config["addition_time_embed_dim"] = _time_embed_dim(config["projection_class_embeddings_input_dim"])
    if "mid_block.attentions.0.proj_in.weight" not in shapes:
        config["mid_block_type"] = "UNetMidBlock2D"
    return config


def _cond_embedding_channels(shapes: Shapes) -> list[int]:
    out = [shapes["controlnet_cond_embedding.conv_in.weight"][0]]
    blocks = sorted(
        {int(m.group(1)) for k in shapes if (m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.", k))}
    )
    out += [shapes[f"controlnet_cond_embedding.blocks.{i}.weight"][0] for i in blocks if i % 2 == 1]
    return out


def _norm_groups(shapes: Shapes, channels: int) -> int:
    # a GroupNorm's weight has no group count: diffusers' 32 where it divides (all real models), else smaller
    for groups in (32, 16, 8, 4, 2, 1):
        if channels % groups == 0:
            return groups
    return 1


def _time_embed_dim(input_dim: int) -> int:
    """SDXL's add_time_proj has no weight: the largest width whose 6 size/crop ids leave room for a pooled embed
    (SDXL: 2816 = 6 * 256 + 1280)."""
    for dim in (256, 128, 64, 32, 16, 8, 4, 2, 1):
        if 6 * dim < input_dim:
            return dim
    return 1


def adapter_config(shapes: Shapes, base: str) -> dict[str, Any]:
    """A diffusers T2IAdapter config from a diffusers-keyed (`adapter.*`) state dict."""
    levels = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"adapter\.body\.(\d+)\.", k))})
    blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"adapter\.body\.0\.resnets\.(\d+)\.", k))}
    channels = []
    for i in levels:
        channels.append(shapes[f"adapter.body.{i}.resnets.0.block2.weight"][0])
    conv_in = shapes["adapter.conv_in.weight"]
    unshuffle = 16 if base == SDXL else 8
    in_channels = conv_in[1] // (unshuffle * unshuffle)
    return {
        "in_channels": in_channels,
        "channels": channels,
        "num_res_blocks": max(blocks) + 1 if blocks else 2,
        "downscale_factor": unshuffle,
        "adapter_type": "full_adapter_xl" if base == SDXL else "full_adapter",
    }


def t2i_original_to_diffusers(state: Mapping[str, Any]) -> dict[str, Any]:
    """TencentARC's original T2I-Adapter keys (`body.{level * blocks + j}`, `conv_in`) -> diffusers' FullAdapter."""
    indexes = sorted({int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))})
    blocks_per_level = 2 if len(indexes) % 4 == 0 and len(indexes) >= 8 else 1
    converted: dict[str, Any] = {}
    for key, value in state.items():
        match = re.match(r"body\.(\d+)\.(.*)", key)
        if not match:
            converted[f"adapter.{key}"] = value
            continue
        flat, rest = int(match.group(1)), match.group(2)
        level, block = divmod(flat, blocks_per_level)
        if rest.startswith("in_conv."):
            converted[f"adapter.body.{level}.in_conv.{rest[len('in_conv.') :]}"] = value
        elif rest.startswith("down_opt."):
            converted[f"adapter.body.{level}.downsample.{rest[len('down_opt.') :]}"] = value
        else:
            converted[f"adapter.body.{level}.resnets.{block}.{rest}"] = value
    return converted
