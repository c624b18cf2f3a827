"""TAESD live-preview decoders (madebyollin's tiny autoencoder), read from A1111's files.

A1111 keeps the decoder alone in `models/VAE-approx/taesd_decoder.pth` (SD1/SD2) and `taesdxl_decoder.pth`
(SDXL): the state dict of a plain `nn.Sequential` (Clamp, conv, ReLU, Blocks, Upsample, ...; keys `1.weight`,
`3.conv.0.weight`, ...). diffusers' `AutoencoderTiny` decoder has the same layers without the Clamp module
(its tanh clamp is in `forward`), so A1111's layer `i` is diffusers' `decoder.layers.{i-1}`.

TAESD decodes the sampler's latents as they are (AutoencoderTiny's `scaling_factor` is 1.0; `latent_magnitude`
/ `latent_shift` only pack latents into images) and gives RGB in [-1, 1] (A1111: raw output * 2 - 1).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from sdwebui.models.model import ModelFamily

FOLDER = "VAE-approx"
SUFFIXES = (".safetensors", ".pth")
_SD_FILE = "taesd_decoder"
_SDXL_FILE = "taesdxl_decoder"
_SDXL_FAMILIES = {ModelFamily.SDXL, ModelFamily.SDXL_INPAINT, ModelFamily.SDXL_REFINER}
_A1111_KEY = re.compile(r"^(\d+)\.(.+)$")


class TaesdError(ValueError):
    """The TAESD decoder for a model family is missing or unreadable; the message names the file."""


def file_stem(family: ModelFamily | str) -> str:
    return _SDXL_FILE if ModelFamily(family) in _SDXL_FAMILIES else _SD_FILE


def expected_path(models_dir: Path, family: ModelFamily | str) -> Path:
    """Where A1111 keeps the family's decoder (the .pth name; a .safetensors beside it is read first)."""
    return models_dir / FOLDER / f"{file_stem(family)}.pth"


def find_decoder(models_dir: Path, family: ModelFamily | str) -> Path | None:
    for suffix in SUFFIXES:
        path = models_dir / FOLDER / f"{file_stem(family)}{suffix}"
        if path.is_file():
            return path
    return None


def any_decoder(models_dir: Path) -> bool:
    return any(find_decoder(models_dir, family) for family in (ModelFamily.SD1, ModelFamily.SDXL))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as error:  # safetensors raises several types for a broken header
            raise TaesdError(f"{path}: not a readable safetensors file: {error}") from None
    from sdwebui.models.errors import CheckpointLoadError
    from sdwebui.models.safe_pickle import load_pickled_checkpoint

    try:
        loaded = load_pickled_checkpoint(path)
    except CheckpointLoadError as error:
        raise TaesdError(str(error)) from None
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise TaesdError(f"{path}: does not hold a TAESD decoder state dict (tensors by layer name)")
    return loaded


def to_diffusers_keys(state_dict: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """A1111's `nn.Sequential` keys -> AutoencoderTiny's `decoder.layers.*` keys."""
    converted = {}
    for key, tensor in state_dict.items():
        match = _A1111_KEY.match(key)
        if match is None or int(match.group(1)) < 1:
            raise TaesdError(f"{path}: unexpected key {key!r} for a TAESD decoder (expected '1.weight', ...)")
        converted[f"layers.{int(match.group(1)) - 1}.{match.group(2)}"] = tensor
    return converted


def build_decoder(path: Path) -> torch.nn.Module:
    """AutoencoderTiny (its default config, TAESD's, built in code: no hub) with the file's decoder."""
    from diffusers import AutoencoderTiny

    state_dict = to_diffusers_keys(_read_state_dict(path), path)
    latent_channels = state_dict.get("layers.0.weight", torch.empty(0, 4)).shape[1]
    model = AutoencoderTiny(latent_channels=latent_channels)
    try:
        model.decoder.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1:2] or [str(error)]
        raise TaesdError(f"{path}: not a TAESD decoder: {first[0].strip()}") from None
    return model.decoder.eval()


@dataclass(frozen=True)
class _Loaded:
    path: Path
    mtime_ns: int
    decoder: torch.nn.Module


class TaesdDecoders:
    """Decoders read once per file (again when the file changes)."""

    def __init__(self, models_dir: Path):
        self.models_dir = models_dir
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        self._decode_lock = threading.Lock()

    def available(self, family: ModelFamily | str) -> bool:
        return find_decoder(self.models_dir, family) is not None

    def decoder(self, family: ModelFamily | str) -> torch.nn.Module:
        path = find_decoder(self.models_dir, family)
        if path is None:
            expected = expected_path(self.models_dir, family)
            raise TaesdError(f"needs the TAESD decoder weights {expected} (or .safetensors) for {family}")
        mtime_ns = path.stat().st_mtime_ns
        with self._lock:
            found = self._loaded.get(file_stem(family))
            if found is None or found.path != path or found.mtime_ns != mtime_ns:
                found = _Loaded(path, mtime_ns, build_decoder(path))
                self._loaded[file_stem(family)] = found
            return found.decoder

    @torch.no_grad()
    def decode(self, family: ModelFamily | str, latents: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] sampler latents -> [B, 3, 8H, 8W] RGB in [0, 1] on the CPU."""
        decoder = self.decoder(family)
        channels = decoder.layers[0].in_channels
        if latents.shape[1] != channels:
            raise TaesdError(
                f"{find_decoder(self.models_dir, family)} decodes {channels}-channel latents; "
                f"this model's have {latents.shape[1]}"
            )
        x = torch.nan_to_num(latents.detach().float())
        with self._decode_lock:  # one decoder shared by the workers of several devices
            decoder.to(x.device)  # on the sampler's device, as A1111 (float32: TAESD is tiny)
            return (decoder(x) / 2 + 0.5).clamp(0.0, 1.0).cpu()
