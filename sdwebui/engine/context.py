"""Per-job state the engine reads and reports to: interrupt/skip flags, progress, previews.

The job queue creates one JobContext per job and hands it to the engine; nothing is shared between jobs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class StepInfo:
    job_no: int  # index of the current image batch (0..n_iter-1)
    job_count: int  # n_iter
    step: int  # 1-based step just finished within this batch, counted over all its sampling passes
    steps: int  # total sampling steps of this batch: the steps of all its passes
    latents: torch.Tensor | None = None  # current denoised estimate, for live previews
    pass_index: int = 0  # which sampling pass the step belongs to (sdwebui.engine.passes)
    pass_count: int = 1


@dataclass
class JobContext:
    """Control and observation of one running generation."""

    on_step: Callable[[StepInfo], None] | None = None
    _interrupt: threading.Event = field(default_factory=threading.Event)
    _skip: threading.Event = field(default_factory=threading.Event)

    def interrupt(self) -> None:
        """Stop now; the engine returns what it has."""
        self._interrupt.set()

    def skip(self) -> None:
        """Abandon the current image batch and continue with the next one."""
        self._skip.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    @property
    def skipped(self) -> bool:
        return self._skip.is_set()

    def clear_skip(self) -> None:
        self._skip.clear()

    def report(self, info: StepInfo) -> None:
        if self.on_step is not None:
            self.on_step(info)
