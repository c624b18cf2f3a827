"""Tiny random IP-Adapters (base and plus, the original key layout) and a tiny CLIP vision encoder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=28,
    patch_size=14,
    projection_dim=24,
    hidden_act="gelu",
)


def write_clip_vision(folder: Path, name: str = "clip_h", seed: int = 0) -> Path:
    """`<folder>/<name>.safetensors` + its config beside it (a random tiny ViT with projection)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION))
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(VISION))
    return path


def _randn(gen: torch.Generator, *shape: int, scale: float = 0.3) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * scale


def _base_projection(gen, clip_dim: int, cross: int, tokens: int = 4) -> dict[str, torch.Tensor]:
    return {
        "proj.weight": _randn(gen, tokens * cross, clip_dim),
        "proj.bias": _randn(gen, tokens * cross),
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }


def _resampler(gen, hidden: int, cross: int, dim: int = 64, queries: int = 16, depth: int = 4) -> dict:
    """The original Resampler's keys (heads = inner // 64: one head of 64 here)."""
    sd = {
        "latents": _randn(gen, 1, queries, dim),
        "proj_in.weight": _randn(gen, dim, hidden),
        "proj_in.bias": torch.zeros(dim),
        "proj_out.weight": _randn(gen, cross, dim),
        "proj_out.bias": torch.zeros(cross),
        "norm_out.weight": torch.ones(cross),
        "norm_out.bias": torch.zeros(cross),
    }
    for i in range(depth):
        for norm in ("0.norm1", "0.norm2", "1.0"):
            sd[f"layers.{i}.{norm}.weight"] = torch.ones(dim)
            sd[f"layers.{i}.{norm}.bias"] = torch.zeros(dim)
        sd[f"layers.{i}.0.to_q.weight"] = _randn(gen, 64, dim)
        sd[f"layers.{i}.0.to_kv.weight"] = _randn(gen, 128, dim)
        sd[f"layers.{i}.0.to_out.weight"] = _randn(gen, dim, 64)
        sd[f"layers.{i}.1.1.weight"] = _randn(gen, dim * 4, dim)
        sd[f"layers.{i}.1.3.weight"] = _randn(gen, dim, dim * 4)
    return sd


def ip_adapter_state(unet, plus: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """A flat IP-Adapter state dict for `unet`: image_proj.* and ip_adapter.<i>.to_{k,v}_ip.weight."""
    gen = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    proj = (
        _resampler(gen, VISION["hidden_size"], cross)
        if plus
        else _base_projection(gen, VISION["projection_dim"], cross)
    )
    state = {f"image_proj.{k}": v for k, v in proj.items()}
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            attn = unet.get_submodule(name.removesuffix(".processor"))
            state[f"ip_adapter.{index}.to_k_ip.weight"] = _randn(
                gen, attn.to_k.out_features, cross, scale=1.0
            )
            state[f"ip_adapter.{index}.to_v_ip.weight"] = _randn(
                gen, attn.to_v.out_features, cross, scale=1.0
            )
    return state


def write_ip_adapter(path: Path, unet, plus: bool = False, seed: int = 0) -> Path:
    """Save as safetensors (flat keys) or, for .bin/.pth, the nested pickle layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = ip_adapter_state(unet, plus, seed)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        nested = {"image_proj": {}, "ip_adapter": {}}
        for key, value in state.items():
            group, _, rest = key.partition(".")
            nested[group][rest] = value
        torch.save(nested, path)
    return path
