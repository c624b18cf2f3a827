"""A generation is a list of sampling passes run over every batch, each pass over the previous one's latents.

The first pass is the request's own (txt2img from noise, img2img from the init images). A later pass (hires
fix, the SDXL refiner, a test's extra img2img pass) re-noises the previous latents to `denoising_strength`
and samples again with its own size (and SDXL size conditioning), RNG shape, sampler and step count; the
job's progress counts the steps of all passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_PASS_STEPS = 150


@dataclass(frozen=True)
class RefinerSwitch:
    """A1111's SDXL refiner: the pass continues on `checkpoint` (same schedule, scheduler and latents) from
    the first step whose timestep t has (999 - t) / 1000 >= `switch_at` (A1111's default switch by timestep)."""

    checkpoint: str
    switch_at: float = 0.8

    def switch_step(self, timesteps: list[float]) -> int:
        """The index of the first step run on the refiner; len(timesteps) = no switch in this pass."""
        for index, timestep in enumerate(timesteps):
            if (999 - float(timestep)) / 1000 >= self.switch_at:
                return index
        return len(timesteps)


@dataclass(frozen=True)
class SamplingPass:
    """One sampling pass of every batch. Sizes in pixels; `original_size`/`crop` are SDXL's micro-
    conditioning (None = the pass's own size, no crop)."""

    width: int
    height: int
    steps: int
    sampler_name: str = "Euler"
    scheduler: str = "Automatic"
    cfg_scale: float = 7.0
    denoising_strength: float = 1.0  # later passes: how much of the previous latents is re-sampled
    # A1111's second pass runs exactly `steps` (its img2img_fix_steps rule); False runs int(strength * steps)
    fix_steps: bool = True
    original_size: tuple[int, int] | None = None  # (height, width)
    crop: tuple[int, int] = (0, 0)  # (top, left)
    # how the previous pass's result comes to this size: a latent mode of sdwebui.engine.hires or an image
    # upscaler (decode, upscale, encode); upscaled to `upscale_to` (width, height), then centre-cropped
    upscaler: str = "Latent"
    upscale_to: tuple[int, int] | None = None  # None: the pass's own size
    prompt: str | None = None  # None: the images' prompts (hires fix's hr_prompt)
    negative_prompt: str | None = None
    name: str = "pass"
    checkpoint: str | None = None  # another checkpoint for this pass (hr_checkpoint_name); None: the job's
    refiner: RefinerSwitch | None = None  # a switch to the refiner during this pass

    def problems(self) -> list[tuple[str, str]]:
        """(field, reason) for every invalid field; empty when the pass is valid."""
        found = []
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 64 <= value <= 2048 or value % 8:
                found.append((name, f"must be a multiple of 8 between 64 and 2048, got {value!r}"))
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_PASS_STEPS:
            found.append(("steps", f"must be between 1 and {MAX_PASS_STEPS}, got {self.steps!r}"))
        for name, hi in (("cfg_scale", 30.0), ("denoising_strength", 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= hi:
                found.append((name, f"must be a number between 0 and {hi:g}, got {value!r}"))
        return found


def img2img_steps(steps: int, strength: float, fix_steps: bool) -> tuple[int, int]:
    """(schedule length, steps run at its end) for a pass starting from noised latents, as A1111:
    `int(strength * steps)` last steps of a `steps` schedule, or exactly `steps` with fix_steps."""
    if fix_steps and strength > 0:
        return min(int(steps / min(strength, 0.999)), 1000), steps
    return steps, int(strength * steps)
