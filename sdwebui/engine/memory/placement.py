"""Moves a job's components between the compute device and the CPU at the stage boundaries.

    placement = Placement(model, plan)
    placement.enter(CONDITIONING)   # text encoders on the device; the U-Net and VAE off it (if the plan offloads)
    ...
    placement.enter(SAMPLING)       # the U-Net on; text encoders off
    placement.require(VAE)          # something in a stage needs another component (img2img's encode)

A component moves only when it is not where its stage wants it, so with the job's stages run one after the
other (EngineSettings.stage_order "job") each moves at most once per stage boundary of the job. Streamed
components (lowvram) get diffusers' group offloading instead: their blocks come to the device one at a time.
Every move is recorded in `transfers` (the tests count them; the log names them).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch

from sdwebui.engine.memory import offload
from sdwebui.engine.memory.plan import TEXT, UNET, VAE, PlacementPlan
from sdwebui.engine.memory.settings import MemorySettings
from sdwebui.models.model import LoadedModel

log = logging.getLogger(__name__)
CONDITIONING, SAMPLING, DECODE = "conditioning", "sampling", "decode"  # as sdwebui.engine.stages
STAGE_NEEDS = {CONDITIONING: (TEXT,), SAMPLING: (UNET,), DECODE: (VAE,)}
OFFLOAD_DEVICE = torch.device("cpu")


class Mover:
    """Moves modules and says where they are; a test may swap in one that tracks a fake offload device."""

    offload: torch.device = OFFLOAD_DEVICE  # where offloaded weights wait: host memory

    def move(self, module: torch.nn.Module, device: torch.device) -> None:
        module.to(device)

    def where(self, module: torch.nn.Module) -> torch.device:
        for tensor in module.parameters():
            return tensor.device
        return OFFLOAD_DEVICE


_mover: contextvars.ContextVar[Mover | None] = contextvars.ContextVar("memory_mover", default=None)
_current: contextvars.ContextVar[Placement | None] = contextvars.ContextVar("memory_placement", default=None)


@contextlib.contextmanager
def using_mover(mover: Mover) -> Iterator[Mover]:
    token = _mover.set(mover)
    try:
        yield mover
    finally:
        _mover.reset(token)


@dataclass(frozen=True)
class Transfer:
    component: str
    device: str
    stage: str


@dataclass
class Placement:
    model: LoadedModel
    plan: PlacementPlan
    settings: MemorySettings = MemorySettings()
    mover: Mover = field(default_factory=lambda: _mover.get() or Mover())
    transfers: list[Transfer] = field(default_factory=list)
    stage: str = ""
    retried: bool = False  # the job's one lower-memory retry after an out-of-memory error is used

    @property
    def compute(self) -> torch.device:
        return self.model.device

    def modules(self, component: str) -> list[torch.nn.Module]:
        return {TEXT: list(self.model.text_encoders), UNET: [self.model.unet], VAE: [self.model.vae]}[
            component
        ]

    def enter(self, stage: str) -> None:
        """Before `stage`: what it needs on the device, what the plan offloads and it does not need, off."""
        self.stage = stage
        needs = STAGE_NEEDS[stage]
        for component in (TEXT, UNET, VAE):
            if component in needs:
                self.require(component)
            elif component in self.plan.offload:
                self._put(component, self.mover.offload)

    def require(self, component: str) -> None:
        """`component` is used now: on the device (or streamed to it block by block)."""
        if component in self.plan.stream:
            for module in self.modules(component):
                if not offload.is_streamed(module):
                    self._record(component, "stream")
                    offload.stream(module, self.compute, self.mover.offload)
            return
        self._put(component, self.compute)

    def _put(self, component: str, device: torch.device) -> None:
        for module in self.modules(component):
            if offload.is_streamed(module):
                if component in self.plan.stream:
                    continue  # its blocks already come and go by themselves
                offload.unstream(module)
            if self.mover.where(module) != device:
                self._record(component, str(device))
                self.mover.move(module, device)

    def _record(self, component: str, device: str) -> None:
        self.transfers.append(Transfer(component, device, self.stage))
        log.debug("memory: %s -> %s before %s", component, device, self.stage)

    def lower(self) -> bool:
        """After an out-of-memory error: a lower-memory plan from now on; False when none is left."""
        lower = self.plan.lower()
        if lower is None:
            return False
        log.warning(
            "out of memory: retrying with %s (%s)", lower.mode, ", ".join(sorted(lower.stream)) or "-"
        )
        self.plan = lower
        return True

    def tile_vae(self) -> None:
        """The VAE ran out of memory untiled: the rest of the job tiles it."""
        self.plan = replace(self.plan, tile_vae=True)

    def release(self) -> None:
        """Everything the plan offloads off the device (after an error), then the allocator's cache freed."""
        for component in self.plan.offload:
            self._put(component, self.mover.offload)
        empty_cache(self.compute)


def empty_cache(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def active(placement: Placement) -> Iterator[Placement]:
    """`placement` is the running job's (the VAE helpers ask it for their component)."""
    token = _current.set(placement)
    try:
        yield placement
    finally:
        _current.reset(token)


def current() -> Placement | None:
    return _current.get()


def require(model: LoadedModel, component: str) -> None:
    """A helper (the VAE's encode/decode) uses `component` of `model`: the job's placement brings it."""
    placement = _current.get()
    if placement is not None and placement.model.vae is model.vae:
        placement.require(component)
