"""The native image size of the model the UI will generate with, for the width/height defaults.

A loaded model knows it; otherwise it is read from the checkpoint's header (safetensors) or its diffusers
config, without loading weights, so the page can show 64x64 for the embedded default model, 512 for SD1 and
1024 for SDXL before the first generation.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from sdwebui.models.dit.checkpoints import checkpoint_family
from sdwebui.models.families import FamilyDefaults, family_spec

log = logging.getLogger(__name__)

FALLBACK = 512


def native_resolution(models: Any) -> int:
    """Native side of the current model, else of the checkpoint that the first job would load."""
    current = getattr(getattr(models, "manager", None), "current", None)
    if current is not None:
        return int(current.native_resolution)
    info = _first_checkpoint(models)
    if info is None:
        return FALLBACK
    family = checkpoint_family(info)
    if family is not None and family_spec(family).architecture != "unet":  # Flux, SD3: the family's size
        return family_spec(family).defaults.width
    return checkpoint_resolution(Path(info.path), bool(info.is_diffusers_folder))


def family_defaults(models: Any) -> FamilyDefaults:
    """The generation defaults (sampler, steps, CFG, distilled CFG) of the current model's family, else of
    the checkpoint the first job would load (from its header); SD1's when neither can tell."""
    current = getattr(getattr(models, "manager", None), "current", None)
    family = getattr(current, "family", None)
    if family is None:
        info = _first_checkpoint(models)
        family = checkpoint_family(info) if info is not None else None
    try:
        return family_spec(family).defaults if family is not None else FamilyDefaults()
    except (KeyError, ValueError):  # a family this version does not describe
        return FamilyDefaults()


def _first_checkpoint(models: Any) -> Any:
    try:
        infos = list(models.checkpoints())
    except Exception:  # a provider without checkpoints must not break the page
        return None
    if not infos:
        return None
    preferred = getattr(models, "preferred", None)
    wanted = Path(preferred).resolve() if preferred else None
    return next((i for i in infos if wanted is not None and Path(i.path).resolve() == wanted), infos[0])


@lru_cache(maxsize=32)
def checkpoint_resolution(path: Path, is_diffusers_folder: bool = False) -> int:
    """Native side from a checkpoint on disk (header / config only); FALLBACK when it cannot tell."""
    try:
        if is_diffusers_folder:
            config = json.loads((path / "unet" / "config.json").read_text())
            return 8 * int(config["sample_size"])
        if path.suffix != ".safetensors":  # a pickle would have to be loaded whole: not worth it here
            return FALLBACK
        from sdwebui.models.loader import read_shapes, resolve_config

        shapes, metadata = read_shapes(path)
        _, config, _ = resolve_config(path, shapes, metadata)
        return int(config.get("native_resolution", FALLBACK))
    except Exception as exc:
        log.warning("native resolution of %s unknown (%s); using %d", path, exc, FALLBACK)
        return FALLBACK
