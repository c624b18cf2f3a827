"""Textual-inversion embeddings as A1111 reads them: .pt/.bin (safe unpickler) and .safetensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.lora.errors import EmbeddingError
from sdwebui.models.lora.files import sha256_of_file
from sdwebui.models.safe_pickle import load_pickled_checkpoint

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
SHORTHASH_LENGTH = 12  # "TI hashes:" in the infotext


@dataclass
class Embedding:
    """One embedding. SD1/SD2: ``vectors_by_encoder[""]``; SDXL: ``["clip_l"]`` (768) and ``["clip_g"]`` (1280)."""

    name: str
    path: Path
    vectors_by_encoder: dict[str, torch.Tensor]  # (vectors, width) each
    step: int | None
    sd_checkpoint: str | None
    sd_checkpoint_name: str | None
    hash: str  # sha256 of the file, as A1111

    @property
    def vectors(self) -> int:
        return next(iter(self.vectors_by_encoder.values())).shape[0]

    @property
    def shape(self) -> int:
        """The width A1111 reports: the sum over encoders (2048 for SDXL)."""
        return sum(t.shape[-1] for t in self.vectors_by_encoder.values())

    @property
    def shorthash(self) -> str:
        return self.hash[:SHORTHASH_LENGTH]

    def for_encoder(self, key: str, width: int) -> torch.Tensor | None:
        """The vectors for one encoder ("" for SD1/SD2, "clip_l"/"clip_g") if they have its width."""
        tensor = self.vectors_by_encoder.get(key)
        return tensor if tensor is not None and tensor.shape[-1] == width else None


def _as_matrix(tensor: Any, path: Path, what: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() not in (1, 2) or tensor.numel() == 0:
        raise EmbeddingError(f"{path}: {what} is not a (vectors, width) tensor")
    tensor = tensor.detach().to(torch.float32)
    return tensor.unsqueeze(0) if tensor.dim() == 1 else tensor


def _vectors(data: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    if "string_to_param" in data:  # A1111's own training output
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        if not isinstance(params, dict) or len(params) != 1:
            raise EmbeddingError(f"{path}: string_to_param must hold exactly one tensor")
        return {"": _as_matrix(next(iter(params.values())), path, "string_to_param")}
    if "clip_l" in data and "clip_g" in data:  # SDXL
        tensors = {k: _as_matrix(data[k], path, k) for k in ("clip_l", "clip_g")}
        if tensors["clip_l"].shape[0] != tensors["clip_g"].shape[0]:
            raise EmbeddingError(f"{path}: clip_l and clip_g have different vector counts")
        return tensors
    if "emb_params" in data:  # kohya / safetensors
        return {"": _as_matrix(data["emb_params"], path, "emb_params")}
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(data) == 1 and len(tensors) == 1:  # diffusers concept: {token: tensor}
        return {"": _as_matrix(tensors[0], path, "the tensor")}
    raise EmbeddingError(f"{path}: not an embedding (no string_to_param, emb_params or clip_l/clip_g)")


def _read(path: Path) -> dict[str, Any]:
    if path.suffix.lower() == ".safetensors":
        try:
            return dict(safetensors.torch.load_file(str(path)))
        except Exception as error:  # SafetensorError/OSError for truncated or foreign files
            raise EmbeddingError(f"{path}: not a readable safetensors file: {error}") from None
    try:
        data = load_pickled_checkpoint(path)
    except CheckpointLoadError as error:
        raise EmbeddingError(str(error)) from None
    if not isinstance(data, dict):
        raise EmbeddingError(f"{path}: holds a {type(data).__name__}, not an embedding")
    return data


def _optional(value: Any, kind: type) -> Any:
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def read_embedding(path: str | Path, name: str | None = None) -> Embedding:
    path = Path(path)
    if not path.is_file():
        raise EmbeddingError(f"{path}: no such file")
    if path.suffix.lower() not in EMBEDDING_SUFFIXES:
        raise EmbeddingError(f"{path}: not an embedding file (expected {', '.join(EMBEDDING_SUFFIXES)})")
    data = _read(path)
    return Embedding(
        name=name or path.stem,
        path=path,
        vectors_by_encoder=_vectors(data, path),
        step=_optional(data.get("step"), int),
        sd_checkpoint=_optional(data.get("sd_checkpoint"), str),
        sd_checkpoint_name=_optional(data.get("sd_checkpoint_name"), str),
        hash=sha256_of_file(path),
    )
