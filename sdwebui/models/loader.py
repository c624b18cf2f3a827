"""Loading checkpoints (single-file LDM/SGM, diffusers folders) and standalone VAEs, entirely offline.

Modules are built on the meta device from shipped configs (or a sidecar), the file's tensors are renamed with
diffusers' single-file converters and assigned in place: no random init, no hub, every key accounted for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from sdwebui.models.components import Components, build_components, build_vae, family_config, merge_config
from sdwebui.models.detection import detect_family
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.families import family_spec
from sdwebui.models.ldm_export import SD2_FAMILIES, TEXT_ENCODER_LAYOUTS, components_to_ldm
from sdwebui.models.model import CheckpointInfo, LoadedModel, ModelFamily
from sdwebui.models.safe_pickle import load_pickled_checkpoint
from sdwebui.models.tokenizer import END_TOKEN, OPENCLIP_PAD_TOKEN, shared_clip_tokenizer

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# Top-level entries some real files carry besides the modules (see tests/fixtures/.../extras_optional.json).
_EXTRA_KEYS = {
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
    "denoiser.sigmas",
}
_EXTRA_PREFIXES = ("model_ema.", "loss.")
# Present in the layout but optional in files (buffers / unused scalars).
_OPTIONAL_SUFFIXES = ("embeddings.position_ids", "logit_scale")


@dataclass(frozen=True)
class DevicePolicy:
    """Where and in which precision models live."""

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    vae_dtype: torch.dtype = torch.float32
    # where weights land when a checkpoint loads; None: `device`. The CPU under a memory mode that moves
    # components (--medvram, --lowvram): each job's placement brings a component to `device` for its stage
    load_device: torch.device | None = None

    @property
    def weights_device(self) -> torch.device:
        return self.device if self.load_device is None else self.load_device

    @classmethod
    def from_flags(
        cls,
        use_cpu_all: bool = False,
        no_half: bool = False,
        no_half_vae: bool = False,
        precision_full: bool = False,
        prefer_bf16: bool = False,
    ) -> DevicePolicy:
        """CUDA fp16 (bf16 optional), VAE fp32 with --no-half-vae; Apple MPS fp16; CPU always fp32."""
        if use_cpu_all:
            return cls()
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = torch.device("mps")
        else:
            return cls()
        if no_half or precision_full:
            return cls(device, torch.float32, torch.float32)
        bf16 = prefer_bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
        half = torch.bfloat16 if bf16 else torch.float16
        return cls(device, half, torch.float32 if no_half_vae else half)


# ---------------------------------------------------------------------------------------------- reading files


def read_sidecar(path: Path) -> dict[str, Any]:
    """``<name>.json`` (ours: component configs) and ``<name>.yaml`` (A1111/LDM: parameterization)."""
    sidecar: dict[str, Any] = {}
    json_path, yaml_path = path.with_suffix(".json"), path.with_suffix(".yaml")
    if json_path.is_file():
        try:
            sidecar.update(json.loads(json_path.read_text()))
        except (OSError, ValueError) as error:
            raise CheckpointLoadError(f"{json_path}: unreadable sidecar: {error}") from None
    if yaml_path.is_file():
        import yaml

        try:
            original = yaml.safe_load(yaml_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise CheckpointLoadError(f"{yaml_path}: unreadable sidecar: {error}") from None
        params = (original.get("model") or {}).get("params") or {}
        sidecar.setdefault("parameterization", params.get("parameterization", "eps"))
    return sidecar


def _unwrap(state: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointLoadError(f"{path}: checkpoint holds a {type(state).__name__}, not a dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a .safetensors or pickled checkpoint; bad files raise CheckpointLoadError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointLoadError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        if path.stat().st_size == 0:
            raise CheckpointLoadError(f"{path}: empty file (0 bytes)")
        if path.suffix == ".safetensors":
            # Lazy: tensors are views of the mmapped file; bytes are read when something touches them.
            with safetensors.safe_open(str(path), framework="pt") as handle:
                return handle.get_tensors(), handle.metadata() or {}
    except CheckpointLoadError:
        raise
    except (
        Exception
    ) as error:  # safetensors raises SafetensorError/OSError/... for truncated or foreign files
        raise CheckpointLoadError(f"{path}: not a readable safetensors file: {error}") from None
    return _unwrap(load_pickled_checkpoint(path), path), {}


def read_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Key -> shape without reading tensor data (safetensors header only)."""
    if path.suffix != ".safetensors":
        state, metadata = read_state_dict(path)
        return {k: tuple(v.shape) for k, v in state.items()}, metadata
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}, handle.metadata() or {}
    except Exception as error:
        raise CheckpointLoadError(f"{path}: not a readable safetensors file: {error}") from None


# ---------------------------------------------------------------------------------------------- conversion


def _normalize_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old SD1 files lack the 'text_model.' level in the CLIP keys (as A1111 fixes up too)."""
    old = "cond_stage_model.transformer."
    if any(k.startswith(old + "embeddings.") for k in state):
        return {
            (
                old + "text_model." + k[len(old) :]
                if k.startswith(old) and not k.startswith(old + "text_model.")
                else k
            ): v
            for k, v in state.items()
        }
    return state


def _is_extra(key: str) -> bool:
    return key in _EXTRA_KEYS or key.startswith(_EXTRA_PREFIXES)


def _few(keys: set[str], n: int = 4) -> str:
    listed = ", ".join(sorted(keys)[:n])
    return listed + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def check_layout(
    shapes: Mapping[str, tuple[int, ...]],
    expected: Mapping[str, tuple[int, ...]],
    path: Path,
    family: ModelFamily,
) -> None:
    """Every expected key present with its shape; nothing unknown left over (ignoring known extras)."""
    present = {k for k in shapes if not _is_extra(k)}
    missing = {k for k in set(expected) - present if not k.endswith(_OPTIONAL_SUFFIXES)}
    unexpected = present - set(expected)
    wrong = {k for k in present & set(expected) if tuple(shapes[k]) != tuple(expected[k])}
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    if wrong:
        k = sorted(wrong)[0]
        problems.append(
            f"{len(wrong)} shape mismatch(es), e.g. {k}: file {list(shapes[k])} vs {family.value} {list(expected[k])}"
        )
    if problems:
        raise CheckpointLoadError(
            f"{path}: does not match the {family.value} layout: "
            + "; ".join(problems)
            + f". For non-standard sizes put a '{path.with_suffix('.json').name}' sidecar with the component configs"
        )


def expected_layout(family: ModelFamily, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    meta = build_components(config, device="meta")
    state = components_to_ldm(family, meta.unet, meta.vae, meta.text_encoders)
    return {k: tuple(v.shape) for k, v in state.items()}


def _placed(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Device and (floating point only) dtype in one copy; the same tensor, no copy, when both already match."""
    return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)


def _load_into(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    what: str,
    path: Path,
    placement: tuple[torch.device, torch.dtype] | None = None,
) -> None:
    """Assign the tensors as the module's parameters (no init, no extra copy); ``placement`` converts each
    tensor once on the way in, instead of a second pass over the whole module with ``module.to()``."""
    if placement is not None:
        state = {k: _placed(v, *placement) for k, v in state.items()}
    result = module.load_state_dict(state, strict=False, assign=True)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {_few(set(result.missing_keys))}")
    if result.unexpected_keys:
        problems.append(f"unexpected {_few(set(result.unexpected_keys))}")
    if problems:
        raise CheckpointLoadError(f"{path}: {what} weights do not fit: " + "; ".join(problems))


def _fix_buffers_and_check(module: torch.nn.Module, what: str, path: Path) -> None:
    """Recreate non-persistent buffers left on meta (CLIP position ids); anything else on meta is an error."""
    inner = getattr(module, "text_model", module)
    embeddings = getattr(inner, "embeddings", None)
    if embeddings is not None and getattr(embeddings, "position_ids", None) is not None:
        if embeddings.position_ids.is_meta:
            n = embeddings.position_ids.shape[-1]
            device = embeddings.position_embedding.weight.device
            embeddings.register_buffer(
                "position_ids", torch.arange(n, device=device).unsqueeze(0), persistent=False
            )
    leftover = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftover and not all(t.is_meta for t in module.parameters()):
        raise CheckpointLoadError(
            f"{path}: {what} has uninitialised tensors after loading: {_few(set(leftover))}"
        )


def _convert_text_encoder(
    kind: str, prefix: str, encoder: torch.nn.Module, state: Mapping[str, torch.Tensor], family: ModelFamily
) -> dict[str, torch.Tensor]:
    from diffusers.loaders import single_file_utils as sfu  # diffusers costs seconds: imported on first load

    part = {k: v for k, v in state.items() if k.startswith(prefix)}
    if kind == "clip":
        converted = sfu.convert_ldm_clip_checkpoint(part, remove_prefix=prefix)
    else:
        if family in SD2_FAMILIES:  # SD2 never uses its final resblock nor the projection
            unused = f"{prefix}transformer.resblocks.{encoder.config.num_hidden_layers}."
            part = {
                k: v for k, v in part.items() if not k.startswith(unused) and k != prefix + "text_projection"
            }
        converted = sfu.convert_open_clip_checkpoint(encoder, part, prefix=prefix)
    converted = {k: v for k, v in converted.items() if not k.endswith("position_ids")}
    if not hasattr(encoder, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    return converted


def convert_state_dict(
    state: dict[str, torch.Tensor],
    family: ModelFamily,
    config: dict[str, Any],
    path: Path,
    policy: DevicePolicy | None = None,
) -> Components:
    """LDM/SGM tensors -> diffusers modules (built on meta, tensors assigned).

    With a ``policy`` each tensor is moved/converted once while being assigned; tensors already on the target
    device and dtype (e.g. an fp16 file for fp16) are used as they are: zero-copy views of the mmapped file.
    Without one, tensors are assigned as given (meta tensors in the manifest tests).
    """
    from diffusers.loaders import single_file_utils as sfu

    main = (policy.weights_device, policy.dtype) if policy else None
    vae = (policy.weights_device, policy.vae_dtype) if policy else None
    components = build_components(config, device="meta")
    # The exporter applied to the empty modules gives exactly the keys/shapes a file of this config has.
    expected = components_to_ldm(family, components.unet, components.vae, components.text_encoders)
    expected_shapes = {k: tuple(v.shape) for k, v in expected.items()}
    del expected
    check_layout({k: tuple(v.shape) for k, v in state.items()}, expected_shapes, path, family)
    unet_state = sfu.convert_ldm_unet_checkpoint(state, config["unet"])
    _load_into(components.unet, unet_state, "UNet", path, main)
    del unet_state
    vae_state = sfu.convert_ldm_vae_checkpoint(state, config["vae"])
    _load_into(components.vae, vae_state, "VAE", path, vae)
    del vae_state
    layouts = TEXT_ENCODER_LAYOUTS[family]
    for (kind, prefix), encoder in zip(layouts, components.text_encoders, strict=True):
        converted = _convert_text_encoder(kind, prefix, encoder, state, family)
        _load_into(encoder, converted, "text encoder", path, main)
    for module, what in ((components.unet, "UNet"), (components.vae, "VAE")):
        _fix_buffers_and_check(module, what, path)
    for encoder in components.text_encoders:
        _fix_buffers_and_check(encoder, "text encoder", path)
    return components


# ---------------------------------------------------------------------------------------------- public API


def tokenizers_for_family(family: ModelFamily) -> list[Any]:
    """The family's tokenizers (CLIP-L pads with <|endoftext|>, OpenCLIP with "!"); shared, built once."""
    kinds = [encoder.kind for encoder in family_spec(family).text_encoders]
    return [shared_clip_tokenizer(END_TOKEN if kind == "clip" else OPENCLIP_PAD_TOKEN) for kind in kinds]


def resolve_config(
    path: Path, shapes: Mapping[str, Any], metadata: Mapping[str, str]
) -> tuple[ModelFamily, dict[str, Any], str]:
    sidecar = read_sidecar(path)
    detection = detect_family(shapes, path, metadata, sidecar)
    config = family_config(detection.family)
    overrides = {k: v for k, v in sidecar.items() if k != "parameterization"}
    config = merge_config(config, overrides)
    if sidecar.get("parameterization") == "v":
        config["scheduler"]["prediction_type"] = "v_prediction"
    config["family"] = detection.family.value
    return detection.family, config, detection.reason


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    # Only call .to() when something changes: diffusers warns on every dtype .to() call.
    first = next(module.parameters())
    if first.dtype != dtype or first.device != torch.device(device):
        module.to(device=device, dtype=dtype)
    return module


def _finish(
    info: CheckpointInfo,
    family: ModelFamily,
    components: Components,
    config: dict[str, Any],
    policy: DevicePolicy,
) -> LoadedModel:
    for module in (components.unet, components.vae, *components.text_encoders):
        module.eval().requires_grad_(False)
    _place(components.unet, policy.weights_device, policy.dtype)
    _place(components.vae, policy.weights_device, policy.vae_dtype)
    for encoder in components.text_encoders:
        _place(encoder, policy.weights_device, policy.dtype)
    return LoadedModel(
        info=info,
        family=family,
        unet=components.unet,
        vae=components.vae,
        text_encoders=components.text_encoders,
        tokenizers=tokenizers_for_family(family),
        scheduler_config=dict(config["scheduler"]),
        device=policy.device,
        dtype=policy.dtype,
        vae_dtype=policy.vae_dtype,
        native_resolution=int(config.get("native_resolution", 512)),
        extra={"config": config},
    )


def load_single_file(info: CheckpointInfo, policy: DevicePolicy = DevicePolicy()) -> LoadedModel:
    path = Path(info.path)
    state, metadata = read_state_dict(path)
    state = _normalize_keys(state)
    family, config, reason = resolve_config(path, {k: tuple(v.shape) for k, v in state.items()}, metadata)
    components = convert_state_dict(state, family, config, path, policy)
    del state
    model = _finish(info, family, components, config, policy)
    model.extra["detection"] = reason
    return model


def load_diffusers_folder(info: CheckpointInfo, policy: DevicePolicy = DevicePolicy()) -> LoadedModel:
    """A local diffusers folder; family from its configs. Never touches a hub (local paths only)."""
    import diffusers

    path = Path(info.path)
    try:
        index = json.loads((path / "model_index.json").read_text())
        unet = diffusers.UNet2DConditionModel.from_pretrained(path / "unet", local_files_only=True)
        vae = diffusers.AutoencoderKL.from_pretrained(path / "vae", local_files_only=True)
        import transformers

        encoders = []
        for sub in ("text_encoder", "text_encoder_2"):
            if (path / sub).is_dir():
                cls = getattr(transformers, index.get(sub, ["", "CLIPTextModel"])[1])
                encoders.append(cls.from_pretrained(path / sub, local_files_only=True))
        scheduler = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    except CheckpointLoadError:
        raise
    except Exception as error:
        raise CheckpointLoadError(f"{path}: not a loadable diffusers folder: {error}") from None
    in_channels = unet.config.in_channels
    if unet.config.get("addition_embed_type") == "text_time":
        family = ModelFamily.SDXL_REFINER if len(encoders) == 1 else ModelFamily.SDXL
        family = ModelFamily.SDXL_INPAINT if in_channels == 9 and family == ModelFamily.SDXL else family
    elif encoders and encoders[0].config.hidden_act == "gelu":
        v = scheduler.get("prediction_type") == "v_prediction"
        family = (
            ModelFamily.SD2_INPAINT if in_channels == 9 else (ModelFamily.SD2_V if v else ModelFamily.SD2)
        )
    else:
        family = ModelFamily.SD1_INPAINT if in_channels == 9 else ModelFamily.SD1
    scheduler = {k: v for k, v in scheduler.items() if not k.startswith("_")}
    native = 8 * int(unet.config.sample_size)
    config = {"family": family.value, "scheduler": scheduler, "native_resolution": native}
    return _finish(info, family, Components(unet, vae, encoders), config, policy)


def load_checkpoint(info: CheckpointInfo, policy: DevicePolicy = DevicePolicy()) -> LoadedModel:
    if info.is_diffusers_folder or Path(info.path).is_dir():
        return load_diffusers_folder(info, policy)
    return load_single_file(info, policy)


def load_vae_file(path: Path, vae_config: dict[str, Any], device: torch.device, dtype: torch.dtype):
    """A standalone VAE (.safetensors/.pt/.ckpt, LDM or diffusers key layout) for a model's VAE config."""
    path = Path(path)
    state, _ = read_state_dict(path)
    for prefix in ("first_stage_model.", "vae."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not _is_extra(k)}
    if not any(k.startswith(("encoder.", "decoder.")) for k in state):
        raise CheckpointLoadError(f"{path}: not a VAE: no 'encoder.'/'decoder.' weights")
    if any(".down_blocks." in k or ".up_blocks." in k for k in state):
        converted = state
    else:
        from diffusers.loaders import single_file_utils as sfu

        converted = sfu.convert_ldm_vae_checkpoint(state, vae_config)
        used = {k for k in state if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}
        if used != set(state):
            raise CheckpointLoadError(f"{path}: unexpected VAE key(s): {_few(set(state) - used)}")
    vae = build_vae(vae_config)
    expected = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    wrong = {k for k in set(expected) & set(converted) if tuple(converted[k].shape) != expected[k]}
    if wrong:
        raise CheckpointLoadError(
            f"{path}: VAE does not fit this checkpoint's VAE (shape mismatch: {_few(wrong)})"
        )
    _load_into(vae, converted, "VAE", path, (torch.device(device), dtype))
    return vae.eval().requires_grad_(False)
