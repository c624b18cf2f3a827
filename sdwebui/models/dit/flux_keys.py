"""Flux transformer weights: Black Forest Labs' layout (the files users download) <-> diffusers' modules.

One table of rules serves both directions: a BFL tensor is one diffusers tensor, the concatenation of
several along dim 0 (fused qkv, single blocks' qkv + mlp), or one with its two halves swapped (the final
AdaLN's shift/scale order). diffusers' own converter hard-codes Flux's full width (3072); these rules take
every size from the module, so tiny test models and full-size files go through the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.")  # all-in-one / ComfyUI / other
PLAIN, CAT, SWAP = "plain", "cat", "swap"
_PLAIN, _CAT, _SWAP = PLAIN, CAT, SWAP


@dataclass(frozen=True)
class Rule:
    bfl: str  # key without .weight/.bias (or the full key when `suffixes` is empty)
    diffusers: tuple[str, ...]
    op: str = _PLAIN
    suffixes: tuple[str, ...] = ("weight", "bias")


def _linear(bfl: str, diffusers: str) -> Rule:
    return Rule(bfl, (diffusers,))


def _norm(bfl: str, diffusers: str) -> Rule:
    return Rule(f"{bfl}.scale", (f"{diffusers}.weight",), suffixes=())


def rules(num_layers: int, num_single_layers: int, guidance: bool) -> Iterator[Rule]:
    embedders = [
        ("time_in", "time_text_embed.timestep_embedder"),
        ("vector_in", "time_text_embed.text_embedder"),
    ] + ([("guidance_in", "time_text_embed.guidance_embedder")] if guidance else [])
    for bfl, ours in embedders:
        yield _linear(f"{bfl}.in_layer", f"{ours}.linear_1")
        yield _linear(f"{bfl}.out_layer", f"{ours}.linear_2")
    yield _linear("img_in", "x_embedder")
    yield _linear("txt_in", "context_embedder")
    for i in range(num_layers):
        b, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        yield _linear(f"{b}.img_mod.lin", f"{d}.norm1.linear")
        yield _linear(f"{b}.txt_mod.lin", f"{d}.norm1_context.linear")
        yield Rule(f"{b}.img_attn.qkv", tuple(f"{d}.attn.to_{x}" for x in "qkv"), _CAT)
        yield Rule(f"{b}.txt_attn.qkv", tuple(f"{d}.attn.add_{x}_proj" for x in "qkv"), _CAT)
        yield _norm(f"{b}.img_attn.norm.query_norm", f"{d}.attn.norm_q")
        yield _norm(f"{b}.img_attn.norm.key_norm", f"{d}.attn.norm_k")
        yield _norm(f"{b}.txt_attn.norm.query_norm", f"{d}.attn.norm_added_q")
        yield _norm(f"{b}.txt_attn.norm.key_norm", f"{d}.attn.norm_added_k")
        yield _linear(f"{b}.img_attn.proj", f"{d}.attn.to_out.0")
        yield _linear(f"{b}.txt_attn.proj", f"{d}.attn.to_add_out")
        yield _linear(f"{b}.img_mlp.0", f"{d}.ff.net.0.proj")
        yield _linear(f"{b}.img_mlp.2", f"{d}.ff.net.2")
        yield _linear(f"{b}.txt_mlp.0", f"{d}.ff_context.net.0.proj")
        yield _linear(f"{b}.txt_mlp.2", f"{d}.ff_context.net.2")
    for i in range(num_single_layers):
        b, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        yield _linear(f"{b}.modulation.lin", f"{d}.norm.linear")
        parts = (*(f"{d}.attn.to_{x}" for x in "qkv"), f"{d}.proj_mlp")
        yield Rule(f"{b}.linear1", parts, _CAT)
        yield _norm(f"{b}.norm.query_norm", f"{d}.attn.norm_q")
        yield _norm(f"{b}.norm.key_norm", f"{d}.attn.norm_k")
        yield _linear(f"{b}.linear2", f"{d}.proj_out")
    yield _linear("final_layer.linear", "proj_out")
    yield Rule("final_layer.adaLN_modulation.1", ("norm_out.linear",), _SWAP)


def _swap(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The transformer's tensors of a file, without the prefix an all-in-one file puts before them."""
    for prefix in PREFIXES:
        if any(k.startswith(prefix + "double_blocks.") for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def layer_counts(keys: Mapping[str, object] | set[str]) -> tuple[int, int, bool]:
    """(double blocks, single blocks, has guidance embedder) from BFL keys."""

    def count(prefix: str) -> int:
        found = {int(k.split(".")[1]) for k in keys if k.startswith(prefix)}
        return max(found) + 1 if found else 0

    return count("double_blocks."), count("single_blocks."), any(k.startswith("guidance_in.") for k in keys)


def bfl_to_diffusers(
    state: Mapping[str, torch.Tensor], transformer: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """BFL tensors (prefix already stripped) -> the diffusers module's keys; split sizes from the module."""
    layers, singles, guidance = layer_counts(set(state))
    return to_diffusers(state, transformer, rules(layers, singles, guidance))


def diffusers_to_bfl(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers Flux transformer's tensors in BFL's layout (what a transformer-only file holds)."""
    layers = len({k.split(".")[1] for k in state if k.startswith("transformer_blocks.")})
    singles = len({k.split(".")[1] for k in state if k.startswith("single_transformer_blocks.")})
    guidance = any(k.startswith("time_text_embed.guidance_embedder.") for k in state)
    return from_diffusers(state, rules(layers, singles, guidance))


def _pairs(rule: Rule) -> Iterator[tuple[str, list[str]]]:
    for suffix in rule.suffixes or ("",):
        original = f"{rule.bfl}.{suffix}" if suffix else rule.bfl
        yield original, [f"{d}.{suffix}" if suffix else d for d in rule.diffusers]


def to_diffusers(
    state: Mapping[str, torch.Tensor], module: torch.nn.Module, table: Iterable[Rule]
) -> dict[str, torch.Tensor]:
    """An original layout's tensors -> the module's keys by `table`; fused tensors split by the module's
    sizes. Keys the file lacks are left out (the caller's strict load names them)."""
    target = module.state_dict()
    out: dict[str, torch.Tensor] = {}
    for rule in table:
        for original, names in _pairs(rule):
            if original not in state:
                continue
            tensor = state[original]
            if rule.op == _CAT:
                sizes = [target[n].shape[0] if n in target else 0 for n in names]
                out.update(zip(names, torch.split(tensor, sizes, dim=0), strict=True))
            elif rule.op == _SWAP:
                out[names[0]] = _swap(tensor)
            else:
                out[names[0]] = tensor
    return out


def from_diffusers(state: Mapping[str, torch.Tensor], table: Iterable[Rule]) -> dict[str, torch.Tensor]:
    """The inverse of `to_diffusers`: a diffusers module's tensors in the original layout."""
    out: dict[str, torch.Tensor] = {}
    for rule in table:
        for original, names in _pairs(rule):
            if rule.op == _CAT:
                out[original] = torch.cat([state[n] for n in names], dim=0)
            elif rule.op == _SWAP:
                out[original] = _swap(state[names[0]])
            else:
                out[original] = state[names[0]]
    return out
