"""A1111's `modules.sd_samplers_cfg_denoiser`: the `CFGDenoiser` class extensions subclass.

The engine runs the U-Net and the guidance (sdwebui.engine.denoiser); this object is the A1111 side of
it: built with its sampler (A1111 1.6+), it carries the attributes extensions read (`inner_model`, `mask`,
`nmask`, `init_latent`, `step`, `total_steps`, `image_cfg_scale`, `p`) and A1111's `combine_denoised`.
When the job's sampler has a denoiser whose `combine_denoised` is overridden (a subclass, as dynamic
thresholding does, or an attribute set on the instance), the engine calls it every step with A1111's
arguments (sdwebui.facade.sampler_hooks) and steps from what it returns.
"""

from __future__ import annotations

from typing import Any

import torch


class CFGDenoiser(torch.nn.Module):
    """Classifier-free guidance over the denoised (x0) estimates, as A1111's."""

    def __init__(self, sampler: Any):
        super().__init__()
        self.sampler = sampler
        self.model_wrap = None
        self.mask = None  # img2img inpainting: 1 = keep (A1111's mask), set from p by the sampler
        self.nmask = None  # 1 = repaint
        self.init_latent = None
        self.steps = None  # steps asked for
        self.total_steps = None  # denoiser calls of the pass
        self.step = 0  # current step (0-based), set before every combine
        self.image_cfg_scale = None
        self.padded_cond_uncond = False
        self.padded_cond_uncond_v0 = False
        self.p = None
        self.mask_before_denoising = False

    @property
    def inner_model(self) -> Any:
        """The model the sampler runs (our `shared.sd_model`, not a k-diffusion wrapper of an LDM)."""
        return getattr(self.sampler, "sd_model", None)

    def combine_denoised(self, x_out: torch.Tensor, conds_list: list, uncond: Any, cond_scale: float):
        """x_out: the cond rows' estimates, then one uncond row per image; conds_list[i]: image i's
        (cond row, weight) pairs."""
        denoised_uncond = x_out[-_rows(uncond) :]  # noqa: E203
        denoised = torch.clone(denoised_uncond)
        for i, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
        return denoised

    def combine_denoised_for_edit_model(self, x_out: torch.Tensor, cond_scale: float) -> torch.Tensor:
        out_cond, out_img_cond, out_uncond = x_out.chunk(3)
        image_scale = self.image_cfg_scale if self.image_cfg_scale is not None else 1.0
        return out_uncond + cond_scale * (out_cond - out_img_cond) + image_scale * (out_img_cond - out_uncond)

    def get_pred_x0(self, x_in: torch.Tensor, x_out: torch.Tensor, sigma: Any) -> torch.Tensor:
        return x_out

    def overrides_combine(self) -> bool:
        """Whether an extension replaced `combine_denoised` (then the engine must call it)."""
        return (
            "combine_denoised" in vars(self)
            or type(self).combine_denoised is not CFGDenoiser.combine_denoised
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "CFGDenoiser: the app's engine runs the U-Net and the guidance; an extension cannot call the "
            "denoiser itself (override combine_denoised, or use the on_cfg_denoiser callbacks)"
        )


def _rows(uncond: Any) -> int:
    if isinstance(uncond, dict):  # SDXL conditioning in A1111 is a dict of tensors
        uncond = uncond["crossattn"]
    return int(uncond.shape[0])
