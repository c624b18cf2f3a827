"""reference_only: attention injection from a reference image, no ControlNet model (sd-webui-controlnet's).

Before each U-Net evaluation in the unit's guidance window the add-on runs the U-Net once on the
reference latent noised to the current sigma ("write"): the self-attention (attn1) inputs of the chosen
transformer blocks are kept. In the real evaluation ("read") those blocks attend over their own tokens
and the reference's. Blocks are ranked widest first; block i of n is used while weight > i / n, so
weight 0 changes nothing. Style fidelity (threshold_a, Balanced mode) mixes in, for the uncond rows,
attention without the reference (the extension's "cfg injection" for the other control modes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from sdwebui.engine.addons import UNetCall, current_unet_call
from sdwebui.engine.controlnet.units import ControlMode, ControlNetUnit
from sdwebui.models.model import LoadedModel


def style_fidelity_for(
    mode: ControlMode, threshold_a: float, is_sdxl: bool = False, in_hires: bool = False
) -> float:
    """The style fidelity the extension uses: threshold_a in Balanced mode (cubed on SDXL, whose attention is
    fragile), 1 when ControlNet is more important, 0 when the prompt is (and in a hires pass)."""
    fidelity = max(0.0, min(1.0, float(threshold_a)))
    if is_sdxl:
        fidelity = fidelity**3.0
    if mode == ControlMode.CONTROL:
        return 1.0
    if mode == ControlMode.PROMPT or in_hires:
        return 0.0
    return fidelity


@dataclass(frozen=True)
class ReferenceSettings:
    weight: float = 1.0
    style_fidelity: float = 0.5  # from style_fidelity_for()
    guidance_start: float = 0.0  # fraction of the pass's steps
    guidance_end: float = 1.0
    seed: int = 0  # the noise added to the reference latent


@torch.no_grad()
def encode_image(model: LoadedModel, image: Image.Image) -> torch.Tensor:
    """[1, 4, h, w] scaled latent of an RGB image: the VAE distribution's mean (as the engine's img2img).

    Not through engine.vae: the controlnet package sits below the request records, which vae depends on."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0).permute(
        2, 0, 1
    )[None]
    config = model.vae.config
    dist = model.vae.encode(pixels.to(model.device, model.vae_dtype)).latent_dist
    shift = getattr(config, "shift_factor", None) or 0.0
    return ((dist.mean - shift) * config.scaling_factor).to(torch.float32)


def attention_ranks(unet: torch.nn.Module) -> dict[str, float]:
    """attn1 processor name -> i / n with the transformer blocks sorted widest first (the extension's order)."""
    names = [name for name in unet.attn_processors if name.endswith("attn1.processor")]
    widths = {name: unet.get_submodule(name.removesuffix(".processor")).to_q.in_features for name in names}
    ordered = sorted(names, key=lambda name: -widths[name])  # stable: same width keeps the U-Net's order
    return {name: index / len(ordered) for index, name in enumerate(ordered)}


class ReferenceOnly:
    """A U-Net add-on (sdwebui.engine.addons) for one reference_only unit of one job."""

    def __init__(self, model: LoadedModel, reference: Image.Image, settings: ReferenceSettings):
        self.model = model
        self.reference = reference.convert("RGB")
        self.settings = settings
        self._ranks = attention_ranks(model.unet)
        self._latents: dict[tuple[int, int], torch.Tensor] = {}
        self._bank: dict[str, torch.Tensor] = {}
        self._writing = False
        self._generator = torch.Generator().manual_seed(int(settings.seed))

    def _active(self, call: UNetCall) -> bool:
        if self.settings.weight <= 0:
            return False
        progress = call.step / max(call.total_steps, 1)
        return self.settings.guidance_start <= progress <= self.settings.guidance_end

    def _latent(self, height: int, width: int) -> torch.Tensor:
        """The reference image encoded at the latent size being sampled (cached per size)."""
        if (height, width) not in self._latents:
            image = self.reference.resize((width * 8, height * 8), Image.Resampling.LANCZOS)
            self._latents[(height, width)] = encode_image(self.model, image)
        return self._latents[(height, width)]

    def before_unet(self, call: UNetCall) -> None:
        self._bank = {}
        if not self._active(call):
            return
        latent = self._latent(*call.x.shape[-2:])
        noise = torch.randn(latent.shape, generator=self._generator)
        sigma = call.sigma
        ref_x = ((latent + sigma * noise) / (sigma**2 + 1) ** 0.5).to(call.x)
        ref_x = ref_x.expand(call.x.shape[0], -1, -1, -1)
        if call.x.shape[1] == 9:  # inpainting U-Net: an empty mask and the reference as the masked image
            ref_x = torch.cat(
                [ref_x, torch.zeros_like(ref_x[:, :1]), latent.to(call.x).expand_as(ref_x)], dim=1
            )
        self._writing = True
        try:
            with torch.no_grad():
                self.model.unet(
                    ref_x,
                    call.timestep,
                    encoder_hidden_states=call.encoder_hidden_states,
                    added_cond_kwargs=call.added_cond_kwargs,
                    return_dict=False,
                )
        finally:
            self._writing = False

    def wrap_attention(self, name: str, processor):
        rank = self._ranks.get(name)
        if rank is None or not self.settings.weight > rank:
            return None

        def injected(attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
            if encoder_hidden_states is not None:  # not a self-attention call
                return processor(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
            if self._writing:
                self._bank[name] = hidden_states.detach().clone()
                return processor(attn, hidden_states, None, *args, **kwargs)
            bank = self._bank.pop(name, None)
            if bank is None:
                return processor(attn, hidden_states, None, *args, **kwargs)
            return self._read(processor, attn, hidden_states, bank, args, kwargs)

        return injected

    def _read(self, processor, attn, hidden_states, bank, args, kwargs) -> torch.Tensor:
        context = torch.cat([hidden_states, bank.to(hidden_states)], dim=1)
        with_reference = processor(attn, hidden_states, context, *args, **kwargs)
        fidelity = self.settings.style_fidelity
        call = current_unet_call()
        uncond = [i for i, row in enumerate(call.rows) if row.uncond] if call is not None else []
        if not uncond or fidelity <= 1e-5:
            return with_reference
        mixed = with_reference.clone()
        mixed[uncond] = processor(attn, hidden_states[uncond], None, *args, **kwargs)
        return fidelity * mixed + (1.0 - fidelity) * with_reference


def reference_addon(
    model: LoadedModel, unit: ControlNetUnit, reference: Image.Image, seed: int = 0, in_hires: bool = False
) -> ReferenceOnly:
    """The add-on for an enabled reference_only unit (model "None"): `reference` is its control image (fitted
    to the generation size by the caller); threshold_a -1 means the extension's default fidelity 0.5."""
    threshold_a = unit.threshold_a if unit.threshold_a is not None and unit.threshold_a > -1 else 0.5
    settings = ReferenceSettings(
        weight=unit.weight,
        style_fidelity=style_fidelity_for(unit.control_mode, threshold_a, model.is_sdxl, in_hires),
        guidance_start=unit.guidance_start,
        guidance_end=unit.guidance_end,
        seed=seed,
    )
    return ReferenceOnly(model, reference, settings)
