"""Loading Flux and SD3 checkpoints offline: single files (transformer-only in BFL's layout, or all-in-one
with VAE and text encoders inside) and diffusers folders, completed by separate part files (Forge's
"additional modules": `models/text_encoder/clip_l|clip_g|t5xxl*`, `models/VAE/ae.safetensors`).

Every module is built on the meta device from the family's shipped config (`configs/<family>.json`, a
`<name>.json` sidecar may override it, as for U-Net checkpoints) and its tensors are assigned in place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from sdwebui.models.components import family_config
from sdwebui.models.dit import flux_keys, parts, quantized, sd3_keys
from sdwebui.models.dit.detect import DIFFUSERS_PIPELINES, detect_dit
from sdwebui.models.dit.t5_tokenizer import load_t5_tokenizer
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.families import FamilySpec, family_spec
from sdwebui.models.loader import DevicePolicy, read_shapes, read_sidecar, read_state_dict
from sdwebui.models.model import CheckpointInfo, LoadedModel, ModelFamily
from sdwebui.models.tokenizer import END_TOKEN, OPENCLIP_PAD_TOKEN, shared_clip_tokenizer

ENCODER_CONFIG_KEYS = ("text_encoder", "text_encoder_2", "text_encoder_3")
PLACE_HINT = {
    "clip_l": "models/text_encoder",
    "clip_g": "models/text_encoder",
    "t5xxl": "models/text_encoder",
}


class MissingPartError(CheckpointLoadError):
    """A DiT checkpoint without a part it needs (text encoder, VAE) and none chosen: a 4xx naming it."""

    field = "forge_additional_modules"


def dit_family_of(info: CheckpointInfo) -> ModelFamily | None:
    """The DiT family of a listed checkpoint (header only), None for U-Net checkpoints."""
    path = Path(info.path)
    if path.is_dir():
        index = path / "model_index.json"
        try:
            name = json.loads(index.read_text()).get("_class_name")
        except (OSError, ValueError):
            return None
        if name not in DIFFUSERS_PIPELINES:
            return None
        if DIFFUSERS_PIPELINES[name] == "sd3":
            return ModelFamily.SD3
        config = json.loads((path / "transformer" / "config.json").read_text())
        return ModelFamily.FLUX_DEV if config.get("guidance_embeds") else ModelFamily.FLUX_SCHNELL
    try:
        if path.suffix == quantized.GGUF_SUFFIX:
            keys = quantized.gguf_names(path)
        elif path.suffix == ".safetensors":
            keys = list(read_shapes(path)[0])
        else:
            return None
    except CheckpointLoadError:
        return None
    found = detect_dit(keys)
    return found.family if found else None


def dit_config(family: ModelFamily, path: Path) -> dict[str, Any]:
    """The family's shipped component configs; a sidecar's components replace them whole."""
    config = family_config(family)
    config.update({k: v for k, v in read_sidecar(path).items() if k != "parameterization"})
    return config


# ---------------------------------------------------------------------------------------------- single file


def load_dit_file(info: CheckpointInfo, policy: DevicePolicy, modules: Sequence[Path] = ()) -> LoadedModel:
    path = Path(info.path)
    if path.suffix == quantized.GGUF_SUFFIX:
        state = quantized.read_gguf(path)
    else:
        state, _ = read_state_dict(path)
        quantized.check_not_nf4(state, path)
    detection = detect_dit(state)
    if detection is None:
        raise CheckpointLoadError(f"{path}: not a Flux or SD3 checkpoint")
    spec = family_spec(detection.family)
    config = dit_config(detection.family, path)
    transformer = _transformer(spec, config, state, path, policy)
    part_files = _part_files(modules)
    vae = _vae(spec, config, state, path, part_files, policy)
    encoders, tokenizers = _encoders(spec, config, state, path, part_files, policy)
    model = _loaded(info, spec, config, transformer, vae, encoders, tokenizers, policy)
    model.extra["detection"] = detection.reason
    model.extra["modules"] = [p.name for p in modules]
    return model


def _transformer(spec: FamilySpec, config, state, path: Path, policy: DevicePolicy) -> torch.nn.Module:
    import diffusers

    with torch.device("meta"):
        if spec.architecture == "flux":
            module = diffusers.FluxTransformer2DModel.from_config(config["transformer"])
        else:
            module = diffusers.SD3Transformer2DModel.from_config(config["transformer"])
    if spec.architecture == "flux":
        converted = flux_keys.bfl_to_diffusers(flux_keys.strip_prefix(state), module)
    else:
        converted = sd3_keys.original_to_diffusers(state, module)
    if any(quantized.is_quantized(v) for v in converted.values()):
        quantized.assign_gguf(module, converted, policy.dtype, path)
        return module.to(policy.weights_device)
    parts.assign(module, converted, "transformer", path, (policy.weights_device, policy.dtype))
    return module


def _part_files(modules: Sequence[Path]) -> list[parts.PartFile]:
    return [parts.classify(Path(p), read_shapes(Path(p))[0]) for p in modules]


def _vae(spec: FamilySpec, config, state, path: Path, files: list[parts.PartFile], policy: DevicePolicy):
    import diffusers

    inside = parts.with_prefix_removed(state, parts.VAE_PREFIXES)
    source, tensors = path, inside
    if not inside:
        found = [f for f in files if f.kind == "vae"]
        if not found:
            raise MissingPartError(
                f"{path.name} ({spec.label}) has no VAE inside: add the {spec.label} VAE (ae.safetensors) to "
                "models/VAE and choose it in forge_additional_modules"
            )
        source, tensors = found[0].path, read_state_dict(found[0].path)[0]
    with torch.device("meta"):
        vae = diffusers.AutoencoderKL.from_config(config["vae"])
    parts.assign(
        vae, parts.vae_state(tensors, config["vae"]), "VAE", source, (policy.weights_device, policy.vae_dtype)
    )
    return vae


def _encoders(spec: FamilySpec, config, state, path: Path, files: list[parts.PartFile], policy: DevicePolicy):
    encoders, tokenizers, missing = [], [], []
    for encoder_spec, key in zip(spec.text_encoders, ENCODER_CONFIG_KEYS, strict=False):
        encoder_config = config[key]
        with torch.device("meta"):
            encoder = parts.build_text_encoder(encoder_config)
        tensors = parts.with_prefix_removed(state, parts.ENCODER_PREFIXES[encoder_spec.name])
        source = path
        if not tensors:
            width = encoder_config.get("d_model") or encoder_config.get("hidden_size")
            found = [f for f in files if f.kind == _KIND[encoder_spec.kind] and f.width == width]
            if not found:
                missing.append(encoder_spec.name)
                continue
            source, tensors = found[0].path, read_state_dict(found[0].path)[0]
            tensors = parts.with_prefix_removed(tensors, parts.ENCODER_PREFIXES[encoder_spec.name]) or tensors
        if encoder_spec.kind == "t5":
            converted = parts.t5_state(tensors)
            tokenizers.append(load_t5_tokenizer(source))
        else:
            converted = parts.clip_state(tensors, encoder)
            pad = END_TOKEN if encoder_spec.kind == "clip" else OPENCLIP_PAD_TOKEN
            tokenizers.append(shared_clip_tokenizer(pad))
        parts.assign(
            encoder,
            converted,
            f"text encoder {encoder_spec.name}",
            source,
            (policy.weights_device, policy.dtype),
        )
        encoders.append(encoder)
    if missing:
        names = " and ".join(missing)
        plural = "s" if len(missing) > 1 else ""
        files = ", ".join(f"{name}.safetensors" for name in missing)
        raise MissingPartError(
            f"{path.name} ({spec.label}) has no {names} text encoder{plural} inside: add {files} to "
            f"models/text_encoder and choose {'them' if plural else 'it'} in forge_additional_modules"
        )
    return encoders, tokenizers


_KIND = {"clip": "clip", "openclip": "clip", "t5": "t5"}


def _loaded(info, spec: FamilySpec, config, transformer, vae, encoders, tokenizers, policy) -> LoadedModel:
    return LoadedModel(
        info=info,
        family=spec.family,
        unet=transformer,
        vae=vae,
        text_encoders=encoders,
        tokenizers=tokenizers,
        scheduler_config={"prediction_type": spec.prediction},
        device=policy.device,
        dtype=policy.dtype,
        vae_dtype=policy.vae_dtype,
        native_resolution=int(config.get("native_resolution", spec.defaults.width)),
        extra={"config": config},
    )


# ---------------------------------------------------------------------------------------------- diffusers folder


def load_dit_folder(info: CheckpointInfo, policy: DevicePolicy) -> LoadedModel:
    """A local FluxPipeline / StableDiffusion3Pipeline folder (local files only, never a hub)."""
    import diffusers
    import transformers

    path = Path(info.path)
    family = dit_family_of(info)
    if family is None:
        raise CheckpointLoadError(f"{path}: not a Flux or SD3 diffusers folder")
    spec = family_spec(family)
    local: Mapping[str, Any] = {"local_files_only": True}
    try:
        cls = (
            diffusers.FluxTransformer2DModel
            if spec.architecture == "flux"
            else diffusers.SD3Transformer2DModel
        )
        transformer = cls.from_pretrained(path / "transformer", **local)
        vae = diffusers.AutoencoderKL.from_pretrained(path / "vae", **local)
        index = json.loads((path / "model_index.json").read_text())
        encoders, tokenizers = [], []
        for n, encoder_spec in enumerate(spec.text_encoders):
            suffix = "" if n == 0 else f"_{n + 1}"
            encoder_cls = getattr(transformers, index[f"text_encoder{suffix}"][1])
            encoders.append(encoder_cls.from_pretrained(path / f"text_encoder{suffix}", **local))
            if encoder_spec.kind == "t5":
                tokenizers.append(load_t5_tokenizer(path / f"tokenizer{suffix}" / "spiece.model"))
            else:
                tokenizers.append(
                    transformers.CLIPTokenizer.from_pretrained(path / f"tokenizer{suffix}", **local)
                )
    except CheckpointLoadError:
        raise
    except Exception as error:
        raise CheckpointLoadError(f"{path}: not a loadable {spec.label} diffusers folder: {error}") from None
    for module in (transformer, vae, *encoders):
        module.to(device=policy.weights_device, dtype=policy.vae_dtype if module is vae else policy.dtype)
        module.eval().requires_grad_(False)
    native = 8 * int(transformer.config.sample_size) if spec.architecture == "sd3" else spec.defaults.width
    config = {"family": family.value, "native_resolution": native}
    return _loaded(info, spec, config, transformer, vae, encoders, tokenizers, policy)
