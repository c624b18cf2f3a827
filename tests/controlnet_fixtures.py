"""Tiny random ControlNets and T2I-Adapters for the tiny SD1 / SDXL U-Nets, in the real on-disk layouts.

A ControlNet starts as diffusers' `ControlNetModel.from_unet` of the tiny U-Net (the encoder copied, as the
ControlNet paper does); its zero convolutions (and the hint embedding's last conv) are then randomised so the
model acts. Written as the original single-file layout (`control_model.*`, like control_v11p_sd15_canny.pth),
as diffusers' one-file layout (SDXL downloads) or as a diffusers folder. Values that weights cannot tell
(group-norm groups, attention heads of these toy sizes) go into a `<stem>.json` sidecar, as for the tiny
checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import safetensors.torch
import torch

from sdwebui.models.ldm_export import unet_to_ldm
from sdwebui.models.model import ModelFamily
from tests.tiny_models import tiny_components, tiny_config

_EMBEDDING = (8, 8, 8, 8)  # the hint embedding's channels (real: 16, 32, 96, 256); 3 downsamplings = x8


def tiny_controlnet(family: ModelFamily | str = ModelFamily.SD1, seed: int = 0, scale: float = 0.5):
    """A ControlNetModel for the tiny U-Net of `family` (same seed as tiny_loaded_model(family, 0))."""
    unet = tiny_components(family, 0).unet
    torch.manual_seed(1000 + seed)
    net = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=_EMBEDDING)
    with torch.no_grad():
        zero_convs = [
            *net.controlnet_down_blocks,
            net.controlnet_mid_block,
            net.controlnet_cond_embedding.conv_out,
        ]
        for conv in zero_convs:
            conv.weight.normal_(0.0, scale)
            conv.bias.normal_(0.0, scale * 0.1)
    return net.eval().requires_grad_(False)


def tiny_t2i_adapter(seed: int = 0, scale: float = 0.5) -> diffusers.T2IAdapter:
    """A T2IAdapter whose two feature levels fit the tiny SD1 U-Net's down blocks (32 and 64 channels)."""
    torch.manual_seed(2000 + seed)
    adapter = diffusers.T2IAdapter(
        in_channels=3, channels=[32, 64], num_res_blocks=1, downscale_factor=8, adapter_type="full_adapter"
    )
    with torch.no_grad():
        for param in adapter.parameters():
            param.mul_(scale * 4)
    return adapter.eval().requires_grad_(False)


def tiny_t2i_adapter_xl(seed: int = 0, scale: float = 0.5) -> diffusers.T2IAdapter:
    """A full_adapter_xl T2IAdapter for the tiny SDXL U-Net (down blocks: DownBlock2D 32, CrossAttn 64).

    As the real SDXL adapters: 3 levels, the pixels unshuffled by 16. Level 0 (32 channels, 1/16) is added after
    the first down block (it halves the 1/8 latent), level 1 (64, 1/16) inside the cross-attention block; the
    tiny U-Net has no third down block, so level 2 (64, 1/32) is left over, which diffusers' U-Net allows."""
    torch.manual_seed(3000 + seed)
    adapter = diffusers.T2IAdapter(
        in_channels=3,
        channels=[32, 64, 64],
        num_res_blocks=1,
        downscale_factor=16,
        adapter_type="full_adapter_xl",
    )
    with torch.no_grad():
        for param in adapter.parameters():
            param.mul_(scale * 4)
    return adapter.eval().requires_grad_(False)


def _sidecar(net: diffusers.ControlNetModel) -> dict:
    keys = ("norm_num_groups", "attention_head_dim", "addition_time_embed_dim")
    return {k: net.config[k] for k in keys if net.config.get(k) is not None}


def controlnet_to_ldm(net: diffusers.ControlNetModel, family: ModelFamily | str) -> dict[str, torch.Tensor]:
    """The original (lllyasviel) layout: `control_model.` + U-Net encoder keys, input_hint_block, zero_convs."""
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    shared = {
        k: v
        for k, v in state.items()
        if k.split(".")[0] in ("conv_in", "time_embedding", "add_embedding", "down_blocks", "mid_block")
    }
    ldm = unet_to_ldm(shared, tiny_config(family)["unet"])
    embed = net.controlnet_cond_embedding
    ldm["input_hint_block.0.weight"], ldm["input_hint_block.0.bias"] = state_pair(embed.conv_in)
    for i, block in enumerate(embed.blocks):
        ldm[f"input_hint_block.{2 * (i + 1)}.weight"], ldm[f"input_hint_block.{2 * (i + 1)}.bias"] = (
            state_pair(block)
        )
    last = 2 * (len(embed.blocks) + 1)
    ldm[f"input_hint_block.{last}.weight"], ldm[f"input_hint_block.{last}.bias"] = state_pair(embed.conv_out)
    for i, conv in enumerate(net.controlnet_down_blocks):
        ldm[f"zero_convs.{i}.0.weight"], ldm[f"zero_convs.{i}.0.bias"] = state_pair(conv)
    ldm["middle_block_out.0.weight"], ldm["middle_block_out.0.bias"] = state_pair(net.controlnet_mid_block)
    return {f"control_model.{k}": v for k, v in ldm.items()}


def state_pair(conv: torch.nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    return conv.weight.detach().clone().contiguous(), conv.bias.detach().clone().contiguous()


def write_ldm_controlnet(net, family: ModelFamily | str, path: Path) -> Path:
    """`.safetensors` or `.pth` (a plain pickled dict of tensors, as the v1.1 releases) + `<stem>.json`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = controlnet_to_ldm(net, family)
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save(state, path)
    path.with_suffix(".json").write_text(json.dumps(_sidecar(net)))
    return path


def write_diffusers_file(module: torch.nn.Module, path: Path, sidecar: dict | None = None) -> Path:
    """diffusers' key layout in one .safetensors file (how SDXL ControlNets are often downloaded)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    if isinstance(module, diffusers.T2IAdapter):
        state = {k if k.startswith("adapter.") else f"adapter.{k}": v for k, v in state.items()}
    safetensors.torch.save_file(state, str(path))
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def write_controlnet_dir(net, path: Path) -> Path:
    """A diffusers folder: config.json + diffusion_pytorch_model.safetensors."""
    net.save_pretrained(str(path))
    return Path(path)


def sidecar_of(net: diffusers.ControlNetModel) -> dict:
    return _sidecar(net)


def tiny_union_controlnet(family: ModelFamily | str = ModelFamily.SDXL, seed: int = 0, scale: float = 0.5):
    """A ControlNet Union (xinsir's ControlNet++ layout, 8 control types) for the tiny U-Net of `family`."""
    config = {k: v for k, v in tiny_controlnet(family).config.items() if not k.startswith("_")}
    config.pop("mid_block_type", None)
    width = config["block_out_channels"][0]
    torch.manual_seed(3000 + seed)
    net = diffusers.ControlNetUnionModel(
        **config, num_control_type=8, num_trans_channel=width, num_trans_head=2, num_proj_channel=width
    )
    with torch.no_grad():
        for conv in (
            *net.controlnet_down_blocks,
            net.controlnet_mid_block,
            net.controlnet_cond_embedding.conv_out,
        ):
            conv.weight.normal_(0.0, scale)
    return net.eval().requires_grad_(False)


def write_original_t2i(adapter: diffusers.T2IAdapter, path: Path) -> Path:
    """TencentARC's original key layout (`body.{level * blocks + j}.*`, `conv_in`), as a plain .pth pickle."""
    blocks = adapter.config.num_res_blocks
    state = {}
    for key, value in adapter.state_dict().items():
        key = key.removeprefix("adapter.")
        parts = key.split(".")
        if parts[0] == "body" and parts[2] == "resnets":
            key = ".".join(["body", str(int(parts[1]) * blocks + int(parts[3])), *parts[4:]])
        elif parts[0] == "body" and parts[2] == "in_conv":
            key = ".".join(["body", str(int(parts[1]) * blocks), *parts[2:]])
        state[key] = value.detach().clone().contiguous()
    torch.save(state, path)
    return Path(path)
