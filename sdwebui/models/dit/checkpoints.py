"""The one entry for loading any checkpoint: DiT files and folders (Flux, SD3) here, U-Net ones in loader."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from sdwebui.models import loader
from sdwebui.models.dit.loader import dit_family_of, load_dit_file, load_dit_folder
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.model import CheckpointInfo, LoadedModel


def load_checkpoint(
    info: CheckpointInfo, policy: loader.DevicePolicy = loader.DevicePolicy(), modules: Sequence[Path] = ()
) -> LoadedModel:
    """`modules`: separate VAE / text encoder files (Forge's additional modules) a DiT checkpoint needs."""
    if dit_family_of(info) is None:
        return loader.load_checkpoint(info, policy)
    if info.is_diffusers_folder or Path(info.path).is_dir():
        return load_dit_folder(info, policy)
    return load_dit_file(info, policy, modules)


def checkpoint_family(info: CheckpointInfo) -> str | None:
    """The family of a listed checkpoint from its header (cached per file version), for /sd-models."""
    path = Path(info.path)
    try:
        stat = path.stat()
    except OSError:
        return None
    return _family(str(path), stat.st_mtime_ns, stat.st_size, info.is_diffusers_folder)


@functools.lru_cache(maxsize=1024)
def _family(path: str, mtime_ns: int, size: int, folder: bool) -> str | None:
    info = CheckpointInfo(Path(path), "", "", path, is_diffusers_folder=folder)
    dit = dit_family_of(info)
    if dit is not None:
        return dit.value
    if folder or Path(path).suffix != ".safetensors":  # a pickled file would have to be read whole
        return None
    try:
        shapes, metadata = loader.read_shapes(Path(path))
        return loader.resolve_config(Path(path), shapes, metadata)[0].value
    except CheckpointLoadError:
        return None
