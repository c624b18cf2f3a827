"""Sigma schedules for flow-matching (rectified flow) models: x_sigma = (1 - sigma) * x0 + sigma * noise.

Each schedule type gives `steps` sigmas in (0, 1] from the top, then the family's shift bends them toward
the noisy end; a final 0 is appended. "Simple" is `linspace(1, 1/steps, steps)` (what diffusers' Flux and
SD3 pipelines give their FlowMatchEulerDiscreteScheduler, so results match them), "SGM Uniform" is
`linspace(1, 1/1000, steps + 1)` without its last point (ComfyUI's: from the first to the last training
timestep), Karras and Beta are spaced between the shifted
schedule's ends (sigma_max = 1, sigma_min = shifted 1/1000: the training schedule's last sigma).
"""

from __future__ import annotations

import math

import torch

from sdwebui.models.families import FlowShift

TRAINING_STEPS = 1000
SCHEDULES = ("simple", "sgm_uniform", "karras", "beta", "uniform")  # "uniform": the same as "simple"
KARRAS_RHO = 7.0
BETA_ALPHA = BETA_BETA = 0.6  # A1111's / diffusers' beta schedule defaults


class UnsupportedFlowSchedule(ValueError):
    """A schedule type flow-matching models have no meaning for (e.g. Exponential)."""


def shift_value(shift: FlowShift, image_tokens: int) -> float:
    """The shift of a schedule; Flux dev's grows with the image's token count (its reference code's mu)."""
    if not shift.dynamic:
        return shift.shift
    slope = (shift.max_shift - shift.base_shift) / (shift.max_tokens - shift.base_tokens)
    mu = shift.base_shift + slope * (image_tokens - shift.base_tokens)
    return math.exp(mu)


def apply_shift(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """shift * s / (1 + (shift - 1) * s); with shift = exp(mu) this is Flux's exp(mu) / (exp(mu) + 1/s - 1)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_sigmas(schedule: str, steps: int, shift: float) -> torch.Tensor:
    """`steps + 1` float64 sigmas from the noisy end down to 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if schedule in ("simple", "uniform", "automatic"):
        base = apply_shift(torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float64), shift)
    elif schedule == "sgm_uniform":
        end = 1.0 / TRAINING_STEPS
        base = apply_shift(torch.linspace(1.0, end, steps + 1, dtype=torch.float64)[:-1], shift)
    elif schedule in ("karras", "beta"):
        sigma_min = float(apply_shift(torch.tensor(1.0 / TRAINING_STEPS, dtype=torch.float64), shift))
        base = _karras(steps, sigma_min, 1.0) if schedule == "karras" else _beta(steps, sigma_min, 1.0)
    else:
        raise UnsupportedFlowSchedule(
            f"schedule type {schedule!r} is not available for flow-matching models; "
            "valid: Simple, SGM Uniform, Karras, Beta"
        )
    return torch.cat([base, torch.zeros(1, dtype=torch.float64)])


def _karras(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
    return (hi + ramp * (lo - hi)) ** KARRAS_RHO


def _beta(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    import scipy.stats

    points = 1 - torch.linspace(0, 1, steps, dtype=torch.float64).numpy()
    quantiles = scipy.stats.beta.ppf(points, BETA_ALPHA, BETA_BETA)
    return torch.from_numpy(sigma_min + quantiles * (sigma_max - sigma_min)).to(torch.float64)
