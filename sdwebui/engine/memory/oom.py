"""Out of memory never kills the server: the stage frees what it took, runs once more in a lower-memory
way (block-level offload, tiled VAE), and otherwise fails with `MemoryExhausted` naming what to try."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import TypeVar

import torch

from sdwebui.engine.memory.placement import Placement

log = logging.getLogger(__name__)
T = TypeVar("T")
OOM_ERRORS = (torch.OutOfMemoryError, MemoryError)  # the device's memory, or the host's


class MemoryExhausted(RuntimeError):
    """A job ran out of memory after its lower-memory retry; `setting` is what the user can change."""

    def __init__(self, message: str, setting: str = "memory_mode"):
        super().__init__(message)
        self.setting = setting


def exhausted(stage: str, detail: str) -> MemoryExhausted:
    return MemoryExhausted(
        f"out of memory during {stage} ({detail.splitlines()[0][:200] if detail else 'no detail'}); try a "
        "smaller image or batch, --lowvram (memory_mode: lowvram), a lower gpu_weights_mb, or vae_tiling: always"
    )


def _forget(error: BaseException) -> str:
    """The message of an OOM error, its frames cleared so that the tensors they hold can be freed."""
    message = str(error)
    traceback.clear_frames(error.__traceback__)
    return message


def retrying(placement: Placement, stage: str, run: Callable[[], T]) -> T:
    """`run()`; after an out-of-memory error: free, a lower-memory plan, `run()` once more (once per job)."""
    try:
        return run()
    except OOM_ERRORS as error:
        message = _forget(error)
    placement.release()
    if placement.retried or not placement.lower():
        raise exhausted(stage, message)
    placement.retried = True
    placement.enter(stage)
    try:
        return run()
    except OOM_ERRORS as error:
        message = _forget(error)
    placement.release()
    raise exhausted(stage, message)
