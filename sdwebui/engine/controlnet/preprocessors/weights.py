"""Annotator weight files: where they lie under models/ControlNetAnnotators and their networks, loaded once.

The extension keeps each annotator's files in its own folder (`lineart/sk_model.pth`, `hed/ControlNetHED.pth`);
a file straight in models/ControlNetAnnotators is found too (what lllyasviel/Annotators' flat layout gives).
Pickles go through the safe unpickler; checkpoints saved from nn.DataParallel lose their `module.` prefix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from sdwebui.engine.controlnet.preprocessors.errors import BrokenAnnotatorError
from sdwebui.models.safe_pickle import CheckpointLoadError, load_pickled_checkpoint


def weight_path(annotator_dir: Path | None, relative: str) -> Path | None:
    """The file for `relative` (e.g. "lineart/sk_model.pth"): in its folder, else flat; None when absent."""
    if annotator_dir is None:
        return None
    for candidate in (annotator_dir / relative, annotator_dir / Path(relative).name):
        if candidate.is_file():
            return candidate
    return None


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of `path` (.safetensors, or a pickle of a state dict, plain or under "state_dict" / "model"),
    without `module.` prefixes."""
    if path.suffix.lower() == ".safetensors":
        try:
            return safetensors.torch.load_file(str(path))
        except (safetensors.SafetensorError, OSError) as error:
            raise ValueError(f"not a readable safetensors file: {error}") from None
    loaded = load_pickled_checkpoint(path)
    for wrapper in ("state_dict", "model"):  # training checkpoints keep the weights under one of these
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: not a state dict ({type(loaded).__name__})")
    return {key.removeprefix("module."): value for key, value in loaded.items()}


def network(
    build: Callable[[dict[str, torch.Tensor]], nn.Module], path: Path, device: str = "cpu"
) -> nn.Module:
    """`build(state)` (the architecture, sized from the state where it varies) with the state loaded
    strictly, in eval mode, on `device`; kept while the file is unchanged."""
    stat = path.stat()
    return _cached(build, str(path), (stat.st_mtime_ns, stat.st_size), device)


def device_of(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


@functools.lru_cache(maxsize=4)
def _cached(
    build: Callable[[dict[str, torch.Tensor]], nn.Module], path: str, stamp: tuple[int, int], device: str
) -> nn.Module:
    try:
        state = state_dict(Path(path))
        net = build(state)
        net.load_state_dict(state, strict=True)
    except (CheckpointLoadError, ValueError, KeyError, RuntimeError) as error:  # not this annotator's weights
        raise BrokenAnnotatorError(path, str(error).splitlines()[0]) from None
    return net.eval().requires_grad_(False).to(device)


def image_tensor(
    rgb: np.ndarray, scale: float = 1.0, shift: float = 0.0, net: nn.Module | None = None
) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] as `rgb * scale + shift`, on `net`'s device."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).float().permute(2, 0, 1)[None]
    return (x if net is None else x.to(device_of(net))) * scale + shift
