"""Flow-matching samplers behind the interface the engine's loop drives (a diffusers scheduler's).

The model predicts the velocity v = noise - x0, so x0 = x - sigma * v at every step. Samplers (A1111/Forge
names): Euler (x += (sigma_next - sigma) * v, diffusers' FlowMatchEulerDiscreteScheduler), Euler a
(ComfyUI's rectified-flow ancestral step: down to sigma_down, then renoise to sigma_next), DPM++ 2M (the
data-prediction multistep solver with alpha = 1 - sigma, as diffusers' DPMSolverMultistep with flow sigmas),
DPM++ 2M SDE (its stochastic midpoint variant with eta, as ComfyUI's flow-aware `sample_dpmpp_2m_sde`;
diffusers' `sde-dpmsolver++` at eta 1), UniPC (diffusers' UniPCMultistepScheduler with flow sigmas and
flow prediction, driven on our sigmas) and LCM (x0, renoised to sigma_next). Timesteps are sigma * 1000,
as diffusers gives them to the model. Stochastic samplers draw from the images' own generators.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sdwebui.engine.flow.schedules import flow_sigmas

EULER, EULER_A, DPMPP_2M, DPMPP_2M_SDE, UNIPC, LCM = (
    "euler",
    "euler_a",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "unipc",
    "lcm",
)
SAMPLER_LABELS = {
    EULER: "Euler",
    EULER_A: "Euler a",
    DPMPP_2M: "DPM++ 2M",
    DPMPP_2M_SDE: "DPM++ 2M SDE",
    UNIPC: "UniPC",
    LCM: "LCM",
}
FLOW_SAMPLERS = {label.lower(): kind for kind, label in SAMPLER_LABELS.items()}
STOCHASTIC = (EULER_A, DPMPP_2M_SDE, LCM)


@dataclass(frozen=True)
class FlowConfig:
    """What a FlowScheduler is built from: sampler kind, schedule type, the resolved shift, eta."""

    kind: str
    schedule: str
    shift: float
    eta: float = 1.0


class FlowScheduler:
    order = 1
    init_noise_sigma = 1.0

    def __init__(self, config: FlowConfig):
        self.config = config
        self.sigmas = torch.ones(1, dtype=torch.float64)
        self.timesteps = torch.zeros(0)
        self._index = 0
        self._old_denoised: torch.Tensor | None = None
        self._old_h: float | None = None
        self._unipc: Any = None  # UniPC: diffusers' multistep solver, stepped on our sigmas

    def set_timesteps(self, steps: int, device: Any = None) -> None:
        self.sigmas = flow_sigmas(self.config.schedule, steps, self.config.shift)
        self.timesteps = (self.sigmas[:-1] * 1000).to(torch.float32)
        if device is not None:
            self.timesteps = self.timesteps.to(device)
        self._index, self._old_denoised, self._old_h = 0, None, None
        if self.config.kind == UNIPC:
            self._unipc = _unipc(self.sigmas)

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._index = begin_index
        if self._unipc is not None:
            self._unipc.set_begin_index(begin_index)

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        return sample

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The flow's interpolation at `timesteps` (sigma * 1000): (1 - sigma) * x0 + sigma * noise."""
        sigma = (timesteps.reshape(-1).to(torch.float64)[:1] / 1000).item()
        return ((1 - sigma) * original.double() + sigma * noise.to(original.device).double()).to(
            original.dtype
        )

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        return_dict: bool = False,
    ) -> tuple[torch.Tensor]:
        sigma, sigma_next = float(self.sigmas[self._index]), float(self.sigmas[self._index + 1])
        self._index += 1
        x, v = sample.float(), model_output.float()
        denoised = x - sigma * v
        kind = self.config.kind
        if kind == UNIPC:
            return (self._unipc.step(v, timestep, x, return_dict=False)[0].to(sample.dtype),)
        if kind == EULER:
            result = x + (sigma_next - sigma) * v
        elif sigma_next == 0:
            result = denoised
        elif kind == EULER_A:
            result = self._ancestral(x, denoised, sigma, sigma_next, generator)
        elif kind == LCM:
            result = (1 - sigma_next) * denoised + sigma_next * _noise(x, generator)
        elif kind == DPMPP_2M_SDE:
            result = self._dpmpp_2m_sde(x, denoised, sigma, sigma_next, generator)
        else:
            result = self._dpmpp_2m(x, denoised, sigma, sigma_next)
        return (result.to(sample.dtype),)

    def _ancestral(self, x, denoised, sigma: float, sigma_next: float, generator) -> torch.Tensor:
        ratio = 1 + (sigma_next / sigma - 1) * self.config.eta
        sigma_down = sigma_next * ratio
        alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
        renoise = max(sigma_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2, 0.0) ** 0.5
        x = (sigma_down / sigma) * x + (1 - sigma_down / sigma) * denoised
        if self.config.eta > 0:
            x = (alpha_next / alpha_down) * x + _noise(x, generator) * renoise
        return x

    def _dpmpp_2m(self, x, denoised, sigma: float, sigma_next: float) -> torch.Tensor:
        lam, lam_next = _lambda(sigma), _lambda(sigma_next)
        h = lam_next - lam
        estimate = denoised
        old, old_h = self._old_denoised, self._old_h
        if old is not None and old_h is not None and torch.isfinite(torch.tensor(old_h)) and h > 0:
            r = old_h / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
        self._old_denoised, self._old_h = denoised, h
        factor = -torch.expm1(torch.tensor(-h, dtype=torch.float64)).item()  # 1 - e^-h (1 from sigma 1)
        return (sigma_next / sigma) * x + (1 - sigma_next) * factor * estimate

    def _dpmpp_2m_sde(self, x, denoised, sigma: float, sigma_next: float, generator) -> torch.Tensor:
        """The midpoint 2nd-order step (1st order on the first step); noise scaled by eta."""
        eta = self.config.eta
        h = _lambda(sigma_next) - _lambda(sigma)
        alpha_next = 1 - sigma_next
        decay = -math.expm1(-h * (eta + 1))  # 1 - e^{-h (1 + eta)}; 1 from pure noise (h = inf)
        keep = math.exp(-h * eta) if eta > 0 else 1.0  # e^{-h eta}; eta 0 is DPM++ 2M
        result = (sigma_next / sigma) * keep * x + alpha_next * decay * denoised
        old, old_h = self._old_denoised, self._old_h
        if old is not None and old_h is not None:
            r = old_h / h  # inf after the first step from sigma 1: no correction, as diffusers
            result = result + 0.5 * alpha_next * decay * (1 / r) * (denoised - old)
        self._old_denoised, self._old_h = denoised, h
        if eta > 0:
            result = result + _noise(x, generator) * sigma_next * math.sqrt(-math.expm1(-2 * h * eta))
        return result


def _unipc(sigmas: torch.Tensor) -> Any:
    """diffusers' UniPC (bh2, order 2, flow prediction) on our (already shifted) sigmas; it nudges a first
    sigma of 1 down by 1e-6 (its log-SNR guard) and steps by index."""
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=1.0
    )
    scheduler.set_timesteps(sigmas=sigmas[:-1].numpy())
    scheduler.set_begin_index(0)
    return scheduler


def _lambda(sigma: float) -> float:
    """log-SNR of the flow's (alpha = 1 - sigma, sigma) at sigma; -inf at pure noise."""
    if sigma >= 1.0:
        return float("-inf")
    return float(torch.log(torch.tensor((1 - sigma) / sigma, dtype=torch.float64)))


def _noise(like: torch.Tensor, generator) -> torch.Tensor:
    """Fresh noise from the images' own CPU generators (one per row), as the U-Net samplers draw it."""
    if isinstance(generator, (list, tuple)):
        rows = [torch.randn(like.shape[1:], generator=g, dtype=torch.float32) for g in generator]
        return torch.stack(rows).to(like.device)
    return torch.randn(like.shape, generator=generator, dtype=torch.float32).to(like.device)
