"""The one entry for loading any checkpoint: DiT files and folders (Flux, SD3) here, U-Net ones in loader."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sdwebui.models import loader
from sdwebui.models.dit.loader import dit_family_of, load_dit_file, load_dit_folder
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
