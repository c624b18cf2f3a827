"""The transformer side of the loop for DiT families: what `CFGDenoiser` calls instead of the U-Net adapter.

Flux takes its latents as 2x2 patches packed into a token sequence with (row, column) position ids, the
timestep as sigma (0..1), and (dev) the distilled guidance value; SD3 takes the latent image and the
timestep as sigma * 1000. Both predict the flow's velocity; real classifier-free guidance (CFG > 1) is
the CFGDenoiser's, as for U-Nets, so CFG 1 costs one forward per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sdwebui.engine.flow.slg import SkipLayerGuidance
from sdwebui.models.families import family_spec
from sdwebui.models.model import LoadedModel


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H/2 * W/2, C * 4] (FluxPipeline._pack_latents)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack` for latents of `height` x `width`."""
    b, _, channels = tokens.shape
    x = tokens.view(b, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels // 4, height, width)


def image_ids(height: int, width: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """Flux's position ids of the packed latents: (0, row, column) per token."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] += torch.arange(height // 2)[:, None]
    ids[..., 2] += torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


@dataclass(frozen=True)
class Guidance:
    """A pass's guidance values the transformer side needs: Flux dev's distilled value, the pass's CFG scale
    and SD3's skip-layer guidance (applied to the cond rows so that the CFG combination includes it)."""

    distilled_cfg_scale: float | None = 3.5
    cfg_scale: float = 1.0
    skip_layers: SkipLayerGuidance = SkipLayerGuidance()


class FlowAdapter:
    """Calls a Flux / SD3 transformer with what its family needs; converts velocities to x0."""

    prediction_type = "flow"

    def __init__(self, model: LoadedModel, guidance: Guidance, pass_index: int = 0):
        self.model = model
        self.spec = family_spec(model.family)
        self.guidance = guidance
        self.distilled_cfg_scale = guidance.distilled_cfg_scale
        self.addons: list[Any] = []  # U-Net add-ons (ControlNet...) have no DiT counterpart yet
        self.pass_index = pass_index
        self.forwards = 0  # transformer calls, one per step at CFG 1 (asserted by the tests)

    def predict(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        embeds: torch.Tensor,
        pooled: torch.Tensor | None,
        negative_rows: int,
        image_cond: torch.Tensor | None,
        rows: Sequence[Any] | None = None,
        step: int = 0,
        total_steps: int = 0,
    ) -> torch.Tensor:
        model = self.model
        self.forwards += 1
        dtype, device = model.dtype, model.device
        x = x.to(device, dtype)
        embeds = embeds.to(device, dtype)
        pooled = pooled.to(device, dtype)
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(1).expand(x.shape[0]).to(device)
        if self.spec.architecture == "sd3":
            out = self._sd3(x, t.to(dtype), embeds, pooled)
            if negative_rows and self._skips_layers(step, total_steps):
                out = self._skip_layer_guidance(out, x, t.to(dtype), embeds, pooled, negative_rows)
            return out
        h, w = x.shape[-2:]
        guidance = None
        if self.spec.guidance_embeds:
            guidance = torch.full(
                (x.shape[0],), float(self.distilled_cfg_scale), device=device, dtype=torch.float32
            )
        out = model.unet(
            hidden_states=pack(x),
            timestep=(t / 1000).to(dtype),
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype),
            img_ids=image_ids(h, w, device, dtype),
            return_dict=False,
        )[0]
        return unpack(out, h, w)

    def _sd3(self, x, t, embeds, pooled, skip_layers: list[int] | None = None) -> torch.Tensor:
        kwargs = {"skip_layers": skip_layers} if skip_layers else {}
        out = self.model.unet(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            return_dict=False,
            **kwargs,
        )
        return out[0]

    def _skips_layers(self, step: int, total_steps: int) -> bool:
        """diffusers applies SLG with classifier-free guidance on (CFG > 1), inside its step window."""
        return self.guidance.cfg_scale > 1 and self.guidance.skip_layers.applies(step, total_steps)

    def _skip_layer_guidance(self, out, x, t, embeds, pooled, negative_rows: int) -> torch.Tensor:
        """cond += scale / cfg * (cond - cond_skipped): after CFG's uncond + cfg * (cond - uncond) this is
        diffusers' guided + scale * (cond - cond_skipped)."""
        self.forwards += 1
        cond = slice(negative_rows, None)
        slg = self.guidance.skip_layers
        skipped = self._sd3(x[cond], t[cond], embeds[cond], pooled[cond], list(slg.layers))
        out = out.clone()
        out[cond] = out[cond] + (slg.scale / self.guidance.cfg_scale) * (out[cond] - skipped)
        return out

    def sigma(self, timestep: torch.Tensor) -> float:
        return float(timestep) / 1000

    def to_x0(self, x: torch.Tensor, timestep: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return x.float() - self.sigma(timestep) * output.float()

    def from_x0(self, x: torch.Tensor, timestep: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The velocity that `to_x0` maps back to `x0` (a step hook's change of the estimate)."""
        return (x.float() - x0.float()) / max(self.sigma(timestep), 1e-8)

    def input_scale_root_alpha(self, timestep: torch.Tensor) -> float:
        """Flow latents are already k-diffusion's x (x0 + sigma * (noise - x0)): no scaling."""
        return 1.0
