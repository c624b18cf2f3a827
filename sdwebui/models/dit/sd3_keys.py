"""SD3 / SD3.5 transformer weights: Stability AI's MMDiT layout (sd3.5_large.safetensors) <-> diffusers'.

The same rule table as Flux (flux_keys.Rule): fused qkv split by the module's sizes, the final AdaLN and
the last block's context AdaLN (context_pre_only) with their shift/scale halves swapped. Which rules apply
is read from the diffusers module's keys: SD3.5 medium's dual-attention blocks (attn2) and the QK norms
(3.5) exist in some blocks or models only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from sdwebui.models.dit.flux_keys import CAT, SWAP, Rule, from_diffusers, to_diffusers

PREFIXES = ("model.diffusion_model.",)


def _linear(original: str, ours: str) -> Rule:
    return Rule(original, (ours,))


def rules(diffusers_keys: set[str]) -> Iterator[Rule]:
    yield Rule("pos_embed", ("pos_embed.pos_embed",), suffixes=())
    yield _linear("x_embedder.proj", "pos_embed.proj")
    yield _linear("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1")
    yield _linear("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2")
    yield _linear("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1")
    yield _linear("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2")
    yield _linear("context_embedder", "context_embedder")
    layers = len({k.split(".")[1] for k in diffusers_keys if k.startswith("transformer_blocks.")})
    for i in range(layers):
        yield from _block(i, f"joint_blocks.{i}", f"transformer_blocks.{i}", diffusers_keys)
    yield _linear("final_layer.linear", "proj_out")
    yield Rule("final_layer.adaLN_modulation.1", ("norm_out.linear",), SWAP)


def _block(i: int, b: str, d: str, keys: set[str]) -> Iterator[Rule]:
    pre_only = f"{d}.attn.to_add_out.weight" not in keys  # the last block's context stream ends there
    yield _linear(f"{b}.x_block.adaLN_modulation.1", f"{d}.norm1.linear")
    context_norm = Rule(f"{b}.context_block.adaLN_modulation.1", (f"{d}.norm1_context.linear",), SWAP)
    yield context_norm if pre_only else _linear(context_norm.bfl, context_norm.diffusers[0])
    yield Rule(f"{b}.x_block.attn.qkv", tuple(f"{d}.attn.to_{x}" for x in "qkv"), CAT)
    yield Rule(f"{b}.context_block.attn.qkv", tuple(f"{d}.attn.add_{x}_proj" for x in "qkv"), CAT)
    yield _linear(f"{b}.x_block.attn.proj", f"{d}.attn.to_out.0")
    yield _linear(f"{b}.x_block.mlp.fc1", f"{d}.ff.net.0.proj")
    yield _linear(f"{b}.x_block.mlp.fc2", f"{d}.ff.net.2")
    if not pre_only:
        yield _linear(f"{b}.context_block.attn.proj", f"{d}.attn.to_add_out")
        yield _linear(f"{b}.context_block.mlp.fc1", f"{d}.ff_context.net.0.proj")
        yield _linear(f"{b}.context_block.mlp.fc2", f"{d}.ff_context.net.2")
    norms = [
        ("x_block.attn.ln_q", "attn.norm_q"),
        ("x_block.attn.ln_k", "attn.norm_k"),
        ("context_block.attn.ln_q", "attn.norm_added_q"),
        ("context_block.attn.ln_k", "attn.norm_added_k"),
    ]
    if f"{d}.attn2.to_q.weight" in keys:  # SD3.5 medium's second attention (MMDiT-X)
        yield Rule(f"{b}.x_block.attn2.qkv", tuple(f"{d}.attn2.to_{x}" for x in "qkv"), CAT)
        yield _linear(f"{b}.x_block.attn2.proj", f"{d}.attn2.to_out.0")
        norms += [("x_block.attn2.ln_q", "attn2.norm_q"), ("x_block.attn2.ln_k", "attn2.norm_k")]
    for original, ours in norms:
        if f"{d}.{ours}.weight" in keys:
            yield Rule(f"{b}.{original}.weight", (f"{d}.{ours}.weight",), suffixes=())


def strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in PREFIXES:
        if any(k.startswith(prefix + "joint_blocks.") for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if not k.startswith(("text_encoders.", "first_stage_model."))}


def original_to_diffusers(
    state: Mapping[str, torch.Tensor], module: torch.nn.Module
) -> dict[str, torch.Tensor]:
    return to_diffusers(strip_prefix(state), module, rules(set(module.state_dict())))


def diffusers_to_original(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return from_diffusers(state, rules(set(state)))
