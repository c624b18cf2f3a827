"""Reading .ckpt/.pt pickles without executing code: torch's weights_only unpickler plus a tiny allowlist."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdwebui.models.errors import CheckpointLoadError


class _LightningModelCheckpoint:
    """Inert stand-in for pytorch_lightning's ModelCheckpoint callback state stored in many .ckpt files."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _numpy_scalar_globals() -> list[Any]:
    names = ["numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"]
    found: list[Any] = [np.dtype]
    found += [cls for cls in vars(np.dtypes).values() if isinstance(cls, type) and issubclass(cls, np.dtype)]
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    found += [(scalar, name) for name in names]
    return found


SAFE_GLOBALS: list[Any] = [
    *_numpy_scalar_globals(),
    (_LightningModelCheckpoint, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    (_LightningModelCheckpoint, "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint"),
]


def load_pickled_checkpoint(path: str | Path) -> Any:
    """torch.load(weights_only=True) with the allowlist; anything else is refused and nothing runs."""
    path = Path(path)
    try:
        # Zip-format files (torch >= 1.6) are memory-mapped: tensors are read only when touched, so e.g. the EMA
        # copy many .ckpt files carry is never read. The legacy format cannot be mapped and is read whole.
        mmap = zipfile.is_zipfile(path)
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise CheckpointLoadError(
            f"{path}: refused to unpickle (not plain tensors; it may try to run code): {_reason(error)}"
        ) from None
    except Exception as error:  # torch raises many types for garbage input; all mean "not a checkpoint"
        raise CheckpointLoadError(f"{path}: not a readable PyTorch checkpoint: {_reason(error)}") from None


def _reason(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "unsupported global" in line.lower() or "unsupported operand" in line.lower():
            return line
    if isinstance(error, KeyError | EOFError) or not lines:  # what torch raises for non-pickle bytes
        return f"not a pickle/zip checkpoint ({type(error).__name__})"
    return lines[0]
