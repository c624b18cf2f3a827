"""The parts of a DiT checkpoint (transformer, VAE, CLIP and T5 encoders) built from configs on the meta
device and filled from tensors, wherever they come from: inside an all-in-one file (under ComfyUI's / SAI's
prefixes) or a separate file of `models/text_encoder/` or `models/VAE/` (Forge's additional modules)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdwebui.models.errors import CheckpointLoadError

# where an all-in-one file keeps each part (ComfyUI / Stability AI single files)
ENCODER_PREFIXES = {
    "clip_l": ("text_encoders.clip_l.transformer.",),
    "clip_g": ("text_encoders.clip_g.transformer.",),
    "t5xxl": ("text_encoders.t5xxl.transformer.",),
}
VAE_PREFIXES = ("vae.", "first_stage_model.")
CLIP_NORM = "text_model.final_layer_norm.weight"
T5_KEY = "encoder.block.0.layer.0.SelfAttention.q.weight"


@dataclass(frozen=True)
class PartFile:
    """A separate part's file and what its keys say it is."""

    path: Path
    kind: str  # "vae" | "clip" | "t5"
    width: int  # hidden size (text encoders) / 0


def build_text_encoder(config: Mapping[str, Any]) -> torch.nn.Module:
    import transformers

    arch = (config.get("architectures") or ["CLIPTextModel"])[0]
    kwargs = {
        k: v for k, v in config.items() if k not in ("architectures", "model_type", "transformers_version")
    }
    if arch == "T5EncoderModel":
        return transformers.T5EncoderModel(transformers.T5Config(**kwargs))
    if arch not in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        raise CheckpointLoadError(f"unsupported text encoder architecture {arch!r}")
    return getattr(transformers, arch)(transformers.CLIPTextConfig(**kwargs))


def with_prefix_removed(
    state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    for prefix in prefixes:
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if part:
            return part
    return {}


def classify(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> PartFile:
    """What a separate file is, from its keys; an unknown file is a CheckpointLoadError naming it."""
    keys = set(shapes)
    for prefix in ("", *ENCODER_PREFIXES["clip_l"], "transformer."):
        if prefix + CLIP_NORM in keys:
            return PartFile(path, "clip", int(shapes[prefix + CLIP_NORM][0]))
        if prefix + T5_KEY in keys:
            return PartFile(path, "t5", int(shapes[prefix + T5_KEY][1]))
    if any(k.startswith(("encoder.down", "decoder.up")) or k.startswith(VAE_PREFIXES) for k in keys):
        return PartFile(path, "vae", 0)
    raise CheckpointLoadError(
        f"{path.name}: not a VAE, CLIP or T5 text encoder (e.g. keys {sorted(keys)[:3]})"
    )


def clip_state(state: Mapping[str, torch.Tensor], encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """transformers' CLIP keys from a file or a prefix-free part (transformers >= 5.6: no 'text_model.')."""
    state = with_prefix_removed(state, ("transformer.",)) or dict(state)
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    if not hasattr(encoder, "text_model"):
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    if "text_projection.weight" not in state and hasattr(encoder, "text_projection"):
        if "text_projection" in state:  # OpenCLIP's [in, out] matrix
            state["text_projection.weight"] = state.pop("text_projection").t().contiguous()
    return state


def t5_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """T5 encoder keys; the tied token embedding appears under one name or both."""
    state = dict(state)
    shared = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
    if shared is not None:
        state.setdefault("shared.weight", shared)
        state.setdefault("encoder.embed_tokens.weight", shared)
    return state


def vae_state(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """diffusers VAE keys from LDM/BFL-layout tensors (ae.safetensors) or diffusers-layout ones."""
    state = with_prefix_removed(state, VAE_PREFIXES) or dict(state)
    if any(".down_blocks." in k or ".up_blocks." in k for k in state):
        return state
    from diffusers.loaders import single_file_utils as sfu

    return sfu.convert_ldm_vae_checkpoint(state, dict(config))


def assign(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    what: str,
    source: Path,
    placement: tuple[torch.device, torch.dtype],
) -> None:
    """Every parameter from `state` (converted once on the way in); anything missing or left over is an error."""
    placed = {
        k: v.to(device=placement[0], dtype=placement[1] if v.is_floating_point() else v.dtype)
        for k, v in state.items()
    }
    expected = module.state_dict()
    wrong = [k for k in expected if k in placed and tuple(placed[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointLoadError(
            f"{source.name}: {what} does not fit this checkpoint's {what}: {k} is "
            f"{list(placed[k].shape)} in the file, {list(expected[k].shape)} expected"
        )
    result = module.load_state_dict(placed, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise CheckpointLoadError(
            f"{source.name}: {what} weights do not fit: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
    _fix_position_ids(module)
    module.eval().requires_grad_(False)


def _fix_position_ids(module: torch.nn.Module) -> None:
    inner = getattr(module, "text_model", module)
    embeddings = getattr(inner, "embeddings", None)
    ids = getattr(embeddings, "position_ids", None)
    if ids is not None and ids.is_meta:
        n = ids.shape[-1]
        device = embeddings.position_embedding.weight.device
        embeddings.register_buffer(
            "position_ids", torch.arange(n, device=device).unsqueeze(0), persistent=False
        )
