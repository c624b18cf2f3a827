"""Tiny LoRA / LyCORIS / PEFT / embedding files for the tiny models, with key names written out by hand.

Every builder returns plain tensors keyed as the real trainers name them; the LDM (SGM) names of the tiny
SD1 layout (block_out_channels (32, 64), one layer per block, so two resnets per up block) are spelled out here, not computed, so the
mapping under test is checked against an independent statement of it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import safetensors.torch
import torch

# tiny SD1 U-Net: diffusers module path -> LDM path (input_blocks / middle_block / output_blocks)
SD1_LDM_NAMES = {
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0": "input_blocks.1.1.transformer_blocks.0.attn2.to_out.0",
    "down_blocks.0.attentions.0.proj_in": "input_blocks.1.1.proj_in",
    "down_blocks.0.resnets.0.conv1": "input_blocks.1.0.in_layers.2",
    "down_blocks.0.resnets.0.time_emb_proj": "input_blocks.1.0.emb_layers.1",
    "down_blocks.0.downsamplers.0.conv": "input_blocks.2.0.op",
    "down_blocks.1.resnets.0.conv_shortcut": "input_blocks.3.0.skip_connection",
    "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj": "middle_block.1.transformer_blocks.0.ff.net.0.proj",
    "mid_block.resnets.1.conv2": "middle_block.2.out_layers.3",
    "up_blocks.0.upsamplers.0.conv": "output_blocks.1.1.conv",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k": "output_blocks.3.1.transformer_blocks.0.attn2.to_k",
    "time_embedding.linear_1": "time_embed.0",
    "conv_in": "input_blocks.0.0",
}
TE_TARGET = "text_model.encoder.layers.0.self_attn.q_proj"


def kohya_name(path: str, prefix: str = "lora_unet_") -> str:
    return prefix + path.replace(".", "_")


def randn(*shape: int, generator: torch.Generator, scale: float = 0.1) -> torch.Tensor:
    return torch.randn(*shape, generator=generator) * scale


def lora_factors(weight: torch.Tensor, rank: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """kohya lora_up / lora_down for a Linear (out, in) or Conv2d (out, in, kh, kw) weight."""
    out_ch, in_ch = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    down = randn(rank, in_ch, *kernel, generator=generator)
    up = randn(out_ch, rank, *([1] * len(kernel)), generator=generator)
    return {"lora_up.weight": up, "lora_down.weight": down}


def with_prefix(name: str, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{name}.{part}": tensor for part, tensor in parts.items()}


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


class _RunsCode:
    """A pickle payload that would write a marker file when unpickled (it must never be)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def save_code_pickle(path: Path, marker: Path) -> Path:
    """A .pt whose pickle calls Path.write_text(marker) on load, beside a real tensor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"lora_unet_conv_in.lora_up.weight": torch.zeros(32, 4, 1, 1), "x": _RunsCode(marker)}
    torch.save(payload, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    return path
