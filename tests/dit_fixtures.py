"""Tiny random Flux (dev, schnell) and SD3 models, written in every on-disk layout users have.

Transformers 1 double + 1 single block (Flux) / 1 joint block (SD3), width 32; a 16-channel VAE; CLIP
encoders of width 32 with the real CLIP vocabulary; a T5 encoder of width 64 whose sentencepiece tokenizer
is trained here on a few words (T5's real vocabulary ships with no package). Fixed seeds, fp32, CPU.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import safetensors.torch
import torch
import transformers

from sdwebui.models.dit import flux_keys, sd3_keys
from sdwebui.models.dit.t5_tokenizer import load_t5_tokenizer
from sdwebui.models.ldm_export import vae_to_ldm
from sdwebui.models.model import CheckpointInfo, LoadedModel, ModelFamily
from sdwebui.models.tokenizer import END_TOKEN, OPENCLIP_PAD_TOKEN, shared_clip_tokenizer
from tests.tiny_models import TINY_VAE

SIZE = 64  # pixels: 8x8 latents, 16 Flux tokens
T5_WIDTH = 64
WORDS = "a photo of cat dog red blue green house tree sky mountain river portrait painting the with in on and"

# the tiny SD VAE with Flux / SD3's 16 latent channels and no quant convs (their VAEs have none)
VAE = {
    **TINY_VAE,
    "latent_channels": 16,
    "sample_size": SIZE,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
CLIP_L = {
    "architectures": ["CLIPTextModel"],
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "projection_dim": 32,
}
T5 = {
    "architectures": ["T5EncoderModel"],
    "d_model": T5_WIDTH,
    "d_ff": 37,
    "d_kv": 16,
    "num_heads": 4,
    "num_layers": 2,
    "feed_forward_proj": "gated-gelu",
    "vocab_size": 40,
    "is_encoder_decoder": False,
    "use_cache": False,
}
FLUX = {
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "in_channels": 64,
    "joint_attention_dim": T5_WIDTH,
    "pooled_projection_dim": 32,
    "num_layers": 1,
    "num_single_layers": 1,
    "patch_size": 1,
    "axes_dims_rope": [4, 6, 6],
    "guidance_embeds": True,
}
SD3_T5_WIDTH = 96  # >= CLIP-L + CLIP-G widths (32 + 48), as 4096 >= 768 + 1280
SD3 = {  # SD3.5 medium's shape: QK norms, a dual-attention (MMDiT-X) block, a context_pre_only last block
    "sample_size": SIZE // 8,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "joint_attention_dim": SD3_T5_WIDTH,
    "caption_projection_dim": 32,
    "pooled_projection_dim": 80,
    "pos_embed_max_size": 16,
    "qk_norm": "rms_norm",
    "dual_attention_layers": [0],
}


def tiny_config(family: ModelFamily) -> dict[str, Any]:
    """The component configs of a tiny model (what its `<name>.json` sidecar holds)."""
    scaling = (
        {"scaling_factor": 1.5305, "shift_factor": 0.0609}
        if family == ModelFamily.SD3
        else {"scaling_factor": 0.3611, "shift_factor": 0.1159}
    )
    config: dict[str, Any] = {"vae": dict(VAE, **scaling), "native_resolution": SIZE}
    if family == ModelFamily.SD3:
        with_projection = dict(CLIP_L, architectures=["CLIPTextModelWithProjection"])
        clip_g = dict(with_projection, hidden_act="gelu", hidden_size=48, projection_dim=48)
        config.update(
            transformer=dict(SD3),
            text_encoder=with_projection,
            text_encoder_2=clip_g,
            text_encoder_3=dict(T5, d_model=SD3_T5_WIDTH),
        )
    else:
        config.update(
            transformer=dict(FLUX, guidance_embeds=family == ModelFamily.FLUX_DEV),
            text_encoder=dict(CLIP_L),
            text_encoder_2=dict(T5),
        )
    return copy.deepcopy(config)


def train_t5_vocabulary(folder: Path) -> Path:
    """A sentencepiece unigram model with T5's special ids (pad 0, eos 1, unk 2), as `spiece.model`."""
    import sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = WORDS.split()
    sentences = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(300)]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(folder / "spiece"),
        vocab_size=T5["vocab_size"],
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
        num_threads=1,
    )
    return folder / "spiece.model"


def _build(family: ModelFamily, seed: int, transformer: dict[str, Any] | None, size: int) -> dict[str, Any]:
    config = tiny_config(family)
    if transformer is not None:  # another transformer size (benchmarks/dit.py)
        config["transformer"] = dict(transformer)
    config["native_resolution"] = size
    torch.manual_seed(seed)
    if family == ModelFamily.SD3:
        transformer = diffusers.SD3Transformer2DModel.from_config(config["transformer"])
    else:
        transformer = diffusers.FluxTransformer2DModel.from_config(config["transformer"])
    vae = diffusers.AutoencoderKL.from_config(config["vae"])
    encoders = []
    for key in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if key in config:
            encoder_config = {k: v for k, v in config[key].items() if k != "architectures"}
            arch = config[key]["architectures"][0]
            cls = getattr(transformers, arch)
            config_cls = transformers.T5Config if arch == "T5EncoderModel" else transformers.CLIPTextConfig
            encoders.append(cls(config_cls(**encoder_config)))
    for module in (transformer, vae, *encoders):
        module.eval().requires_grad_(False)
    return {"transformer": transformer, "vae": vae, "encoders": encoders, "config": config}


def tiny_dit_model(
    family: ModelFamily,
    folder: Path,
    seed: int = 0,
    transformer: dict[str, Any] | None = None,
    size: int = SIZE,
) -> LoadedModel:
    """An in-memory tiny model (its T5 vocabulary trained into `folder`); `transformer`: another config."""
    built = _build(family, seed, transformer, size)
    spiece = train_t5_vocabulary(folder / "t5_tokenizer")
    clip_pads = [END_TOKEN] if family != ModelFamily.SD3 else [END_TOKEN, OPENCLIP_PAD_TOKEN]
    tokenizers = [shared_clip_tokenizer(pad) for pad in clip_pads] + [load_t5_tokenizer(spiece)]
    return LoadedModel(
        info=CheckpointInfo(folder, "tiny", "tiny", str(folder)),
        family=family,
        unet=built["transformer"],
        vae=built["vae"],
        text_encoders=built["encoders"],
        tokenizers=tokenizers,
        scheduler_config={"prediction_type": "flow"},
        device=torch.device("cpu"),
        dtype=torch.float32,
        vae_dtype=torch.float32,
        native_resolution=size,
        extra={"config": built["config"], "spiece": str(spiece)},
    )


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))
    return path


def _sidecar(model: LoadedModel, path: Path) -> None:
    path.with_suffix(".json").write_text(json.dumps(model.extra["config"], indent=1))


def write_flux_transformer_only(model: LoadedModel, path: Path, dtype: torch.dtype | None = None) -> Path:
    """BFL's layout with no prefix (flux1-dev.safetensors as BFL publishes it) + the tiny sizes' sidecar."""
    state = flux_keys.diffusers_to_bfl(model.unet.state_dict())
    _save({k: v.to(dtype) if dtype else v for k, v in state.items()}, path)
    _sidecar(model, path)
    return path


def write_flux_all_in_one(model: LoadedModel, path: Path) -> Path:
    """ComfyUI/Forge's all-in-one layout: model.diffusion_model., vae. (LDM keys), text_encoders.*."""
    state = {
        f"model.diffusion_model.{k}": v
        for k, v in flux_keys.diffusers_to_bfl(model.unet.state_dict()).items()
    }
    state.update({f"vae.{k}": v for k, v in vae_to_ldm(model.vae.state_dict(), model.vae.config).items()})
    clip, t5 = model.text_encoders
    state.update({f"text_encoders.clip_l.transformer.{k}": v for k, v in _clip_keys(clip).items()})
    state.update({f"text_encoders.t5xxl.transformer.{k}": v for k, v in _t5_keys(t5).items()})
    _save(state, path)
    _sidecar(model, path)
    spiece = Path(model.extra["spiece"])
    (path.parent / "spiece.model").write_bytes(spiece.read_bytes())
    return path


def _clip_keys(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """transformers' CLIP keys as files have them (with 'text_model.', which transformers >= 5.6 dropped)."""
    state = encoder.state_dict()
    if hasattr(encoder, "text_model"):
        return state
    return {(k if k.startswith("text_projection") else f"text_model.{k}"): v for k, v in state.items()}


def write_sd3_single_file(model: LoadedModel, path: Path, with_encoders: bool = True) -> Path:
    """Stability AI's single-file layout (sd3.5_large.safetensors): model.diffusion_model. (MMDiT keys),
    first_stage_model. (LDM VAE), and (with_encoders) text_encoders.clip_l / clip_g / t5xxl.transformer."""
    state = {
        f"model.diffusion_model.{k}": v
        for k, v in sd3_keys.diffusers_to_original(model.unet.state_dict()).items()
    }
    vae = vae_to_ldm(model.vae.state_dict(), model.vae.config)
    state.update({f"first_stage_model.{k}": v for k, v in vae.items()})
    if with_encoders:
        clip_l, clip_g, t5 = model.text_encoders
        for name, encoder in (("clip_l", clip_l), ("clip_g", clip_g)):
            state.update({f"text_encoders.{name}.transformer.{k}": v for k, v in _clip_keys(encoder).items()})
        state.update({f"text_encoders.t5xxl.transformer.{k}": v for k, v in _t5_keys(t5).items()})
        (path.parent).mkdir(parents=True, exist_ok=True)
        (path.parent / "spiece.model").write_bytes(Path(model.extra["spiece"]).read_bytes())
    _save(state, path)
    _sidecar(model, path)
    return path


def _t5_keys(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """T5 files store the tied token embedding once, as `shared.weight`."""
    return {k: v for k, v in encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}


def write_parts(model: LoadedModel, text_encoder_dir: Path, vae_dir: Path) -> dict[str, Path]:
    """Forge's separate parts: models/text_encoder/{clip_l,clip_g (SD3),t5xxl_fp16}.safetensors (+
    spiece.model), models/VAE/ae.safetensors (BFL's LDM-layout keys)."""
    clip, t5 = model.text_encoders[0], model.text_encoders[-1]
    written = {"clip_l": _save(_clip_keys(clip), text_encoder_dir / "clip_l.safetensors")}
    if len(model.text_encoders) == 3:
        written["clip_g"] = _save(_clip_keys(model.text_encoders[1]), text_encoder_dir / "clip_g.safetensors")
    written["t5xxl"] = _save(_t5_keys(t5), text_encoder_dir / "t5xxl_fp16.safetensors")
    written["ae"] = _save(vae_to_ldm(model.vae.state_dict(), model.vae.config), vae_dir / "ae.safetensors")
    spiece = Path(model.extra["spiece"])
    (text_encoder_dir / "spiece.model").write_bytes(spiece.read_bytes())
    return written


def write_dit_diffusers_folder(model: LoadedModel, path: Path) -> Path:
    """A FluxPipeline / StableDiffusion3Pipeline folder as save_pretrained writes it."""
    path.mkdir(parents=True, exist_ok=True)
    sd3 = model.family == ModelFamily.SD3
    index: dict[str, Any] = {"_class_name": "StableDiffusion3Pipeline" if sd3 else "FluxPipeline"}
    model.unet.save_pretrained(path / "transformer")
    model.vae.save_pretrained(path / "vae")
    index["transformer"] = ["diffusers", type(model.unet).__name__]
    index["vae"] = ["diffusers", "AutoencoderKL"]
    for i, (encoder, tokenizer) in enumerate(zip(model.text_encoders, model.tokenizers, strict=True)):
        suffix = "" if i == 0 else f"_{i + 1}"
        encoder.save_pretrained(path / f"text_encoder{suffix}")
        tokenizer.save_pretrained(path / f"tokenizer{suffix}")
        index[f"text_encoder{suffix}"] = ["transformers", type(encoder).__name__]
        index[f"tokenizer{suffix}"] = ["transformers", type(tokenizer).__name__]
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0 if sd3 else 1.0)
    scheduler.save_pretrained(path / "scheduler")
    index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    (path / "model_index.json").write_text(json.dumps(index, indent=1))
    return path


# ---------------------------------------------------------------------------------------------- GGUF


def quantize_q4_k(values: np.ndarray) -> np.ndarray:
    """ggml's block_q4_K (256 values: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of 4-bit
    quants), which gguf-py can read but not write. Rows of `values` must be multiples of 256 long."""
    rows = values.reshape(-1, 8, 32).astype(np.float32)  # super-blocks of 8 sub-blocks of 32
    low = np.maximum(-rows.min(axis=2), 0.0)
    scale = (rows.max(axis=2) + low) / 15
    d = np.maximum(scale.max(axis=1), 1e-8) / 63
    dmin = np.maximum(low.max(axis=1), 1e-8) / 63
    sc = np.clip(np.round(scale / d[:, None]), 0, 63).astype(np.uint8)
    mn = np.clip(np.round(low / dmin[:, None]), 0, 63).astype(np.uint8)
    step = (d[:, None] * sc)[:, :, None]
    q = np.clip(np.round((rows + (dmin[:, None] * mn)[:, :, None]) / np.where(step == 0, 1, step)), 0, 15)
    q = q.astype(np.uint8).reshape(-1, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    scales = np.zeros((rows.shape[0], 12), dtype=np.uint8)
    scales[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = mn[:, 0:4] | ((mn[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0xF) | ((mn[:, 4:8] & 0xF) << 4)
    head = np.stack([d, dmin], axis=1).astype(np.float16).view(np.uint8)
    blocks = np.concatenate([head, scales, qs], axis=1)
    return blocks.reshape(values.shape[0], -1)


def write_flux_gguf(model: LoadedModel, path: Path, quant: str, unsupported: str | None = None) -> Path:
    """The transformer in BFL's layout as a GGUF file (city96's layout), 2-D weights quantized to `quant`
    (Q8_0 or Q4_K; rows too short for a Q4_K block fall back to Q8_0, as mixed quants do), the rest F32.
    `unsupported`: one tensor written with that (unsupported) type instead, for the error path."""
    import gguf

    qtype = gguf.GGMLQuantizationType[quant]
    writer = gguf.GGUFWriter(str(path), "flux")
    state = flux_keys.diffusers_to_bfl(model.unet.state_dict())
    for index, (name, tensor) in enumerate(sorted(state.items())):
        array = tensor.detach().float().numpy()
        if unsupported and index == 0:
            kind = gguf.GGMLQuantizationType[unsupported]
            size = gguf.GGML_QUANT_SIZES[kind][1]
            writer.add_tensor(name, np.zeros((1, size), dtype=np.uint8), raw_dtype=kind)
            continue
        if array.ndim != 2 or array.shape[1] % 32:
            writer.add_tensor(name, array)
        elif qtype == gguf.GGMLQuantizationType.Q4_K and array.shape[1] % 256 == 0:
            writer.add_tensor(name, quantize_q4_k(array), raw_dtype=qtype)
        else:
            q8 = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(array, q8), raw_dtype=q8)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _sidecar(model, path)
    return path


def write_flux_fp8(model: LoadedModel, path: Path) -> Path:
    """The transformer-only file with every weight stored as float8 e4m3fn (as flux1-dev-fp8 ships)."""
    state = flux_keys.diffusers_to_bfl(model.unet.state_dict())
    _save({k: v.to(torch.float8_e4m3fn) for k, v in state.items()}, path)
    _sidecar(model, path)
    return path
