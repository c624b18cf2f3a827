"""A1111's `modules.sd_samplers_compvis`: `VanillaStableDiffusionSampler`, the base extensions subclass for
A1111's DDIM / PLMS samplers (dynamic thresholding defines its UniPC class on it at import).

The app has no CompVis samplers of its own: DDIM, PLMS and UniPC are entries of the engine's one loop, built
as `sd_samplers_kdiffusion.KDiffusionSampler` (so the same callback points reach them), and
`samplers_data_compvis` is empty. A subclass can be built and bound to a job's p; running it as the job's
sampler is the engine's (see sd_samplers_kdiffusion).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

samplers_data_compvis: list[Any] = []


class VanillaStableDiffusionSampler:
    """A1111's attributes over an inner sampler built by `constructor(sd_model)`."""

    def __init__(self, constructor: Callable[[Any], Any], sd_model: Any):
        self.sampler = constructor(sd_model)
        self.sd_model = sd_model
        self.mask = None
        self.nmask = None
        self.init_latent = None
        self.sampler_noises = None
        self.step = 0
        self.stop_at = None
        self.eta = None
        self.config = None
        self.last_latent = None
        self.conditioning_key = "crossattn"
        self.p = None

    def number_of_needed_noises(self, p: Any) -> int:
        return 0

    def initialize(self, p: Any) -> None:
        self.p = p
        self.eta = getattr(p, "eta", None)
        self.mask = getattr(p, "mask", None)
        self.nmask = getattr(p, "nmask", None)
