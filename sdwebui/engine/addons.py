"""Add-ons inside the one U-Net call (`ModelAdapter.predict`): ControlNet / T2I-Adapter / IP-Adapter style.

An add-on is given in `EngineHooks.unet_addons`. For every U-Net evaluation each add-on's `before_unet`
receives a `UNetCall`: the step, the timestep and its sigma, the U-Net's inputs and, per batch row, its
`RowOwner` (which image of the job, cond or uncond half). It may add ControlNet-style residuals
(`add_residuals`: summed over add-ons, passed to diffusers' `down_block_additional_residuals` /
`mid_block_additional_residual`) and replace `cross_attention_kwargs`.

An add-on may also wrap the U-Net's attention processors (`wrap_attention`, IP-Adapter / reference-only): the
wrappers are installed for one sampling pass and the originals put back after it, even on an error; a
wrapper reads the call being evaluated with `current_unet_call()`.

An add-on may correct the U-Net's output (`after_unet(call, output) -> output`, optional): tile_colorfix and
inpaint_only rewrite the predicted x0 through `call.prediction` (eps / v <-> x0 at the call's noise level).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class RowOwner:
    """Whose row of the U-Net batch this is."""

    image_index: int  # index of the image within the job (n_iter * batch_size images)
    uncond: bool  # True: the negative-prompt (unconditional) half of classifier-free guidance
    weight: float = 1.0  # the AND sub-prompt's weight (1 for uncond rows)


@dataclass(frozen=True)
class Prediction:
    """The U-Net output's parametrisation at one noise level: converts it to the predicted x0 and back.

    `x` is the U-Net's latent input (DDPM-scaled: sqrt(alpha) x0 + sqrt(1 - alpha) eps), latent channels only."""

    kind: str  # the model's prediction_type: "epsilon", "v_prediction" or "sample"
    alpha: float  # alpha_bar at the timestep

    def to_x0(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        a, s = self.alpha**0.5, (1 - self.alpha) ** 0.5
        if self.kind == "v_prediction":
            return a * x - s * output
        if self.kind == "sample":
            return output
        return (x - s * output) / a

    def from_x0(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        a, s = self.alpha**0.5, (1 - self.alpha) ** 0.5
        if self.kind == "v_prediction":
            return (a * x - x0) / s
        if self.kind == "sample":
            return x0
        return (x - a * x0) / s


@dataclass
class UNetCall:
    """One U-Net evaluation as add-ons see it; residual and kwargs fields are theirs to set."""

    step: int  # 0-based step within the pass
    total_steps: int  # steps of the pass
    pass_index: int  # which sampling pass (sdwebui.engine.passes); 0 = the request's own
    timestep: torch.Tensor
    sigma: float  # k-diffusion sigma of the timestep, sqrt((1 - alpha_bar) / alpha_bar)
    x: torch.Tensor  # U-Net input [rows, C, h, w] (inpainting models: with their extra channels)
    encoder_hidden_states: torch.Tensor  # [rows, tokens, dim]
    added_cond_kwargs: dict[str, torch.Tensor] | None  # SDXL text_embeds / time_ids, as diffusers takes them
    rows: list[RowOwner]
    down_block_additional_residuals: list[torch.Tensor] | None = None
    mid_block_additional_residual: torch.Tensor | None = None
    # T2I-Adapter features, added inside the down blocks (diffusers' down_intrablock_additional_residuals)
    down_intrablock_additional_residuals: list[torch.Tensor] | None = None
    cross_attention_kwargs: dict[str, Any] = field(default_factory=dict)
    prediction: Prediction | None = None  # for after_unet's x0 corrections

    def add_residuals(self, down: Sequence[torch.Tensor], mid: torch.Tensor | None = None) -> None:
        """Add ControlNet-style residuals; several add-ons' residuals sum (multi-ControlNet)."""
        down = [d.to(self.x.device) for d in down]
        if self.down_block_additional_residuals is None:
            self.down_block_additional_residuals = down
        else:
            if len(down) != len(self.down_block_additional_residuals):
                raise ValueError(
                    f"add_residuals: {len(down)} down-block residuals, earlier add-ons gave "
                    f"{len(self.down_block_additional_residuals)}"
                )
            self.down_block_additional_residuals = [
                a + b for a, b in zip(self.down_block_additional_residuals, down, strict=True)
            ]
        if mid is not None:
            mid = mid.to(self.x.device)
            current = self.mid_block_additional_residual
            self.mid_block_additional_residual = mid if current is None else current + mid

    def add_adapter_features(self, features: Sequence[torch.Tensor]) -> None:
        """Add T2I-Adapter features (one per down block); several adapters' features sum."""
        features = [f.to(self.x.device) for f in features]
        current = self.down_intrablock_additional_residuals
        if current is None:
            self.down_intrablock_additional_residuals = features
            return
        if len(features) != len(current):
            raise ValueError(
                f"add_adapter_features: {len(features)} features, earlier add-ons gave {len(current)}"
            )
        self.down_intrablock_additional_residuals = [a + b for a, b in zip(current, features, strict=True)]


@runtime_checkable
class UNetAddon(Protocol):
    def before_unet(self, call: UNetCall) -> None:
        """Called before every U-Net evaluation; may add residuals or set cross_attention_kwargs."""

    def wrap_attention(self, name: str, processor: Any) -> Any | None:
        """A processor to use instead of `processor` (the attention layer `name`) for a pass, or None."""


_CURRENT: contextvars.ContextVar[UNetCall | None] = contextvars.ContextVar("unet_call", default=None)


def current_unet_call() -> UNetCall | None:
    """The U-Net call being evaluated in this context (for attention-processor wrappers)."""
    return _CURRENT.get()


def after_unet(addons: Sequence[UNetAddon], call: UNetCall, output: torch.Tensor) -> torch.Tensor:
    """The U-Net's output after every add-on's optional `after_unet` correction, in order."""
    for addon in addons:
        correct = getattr(addon, "after_unet", None)
        if correct is not None:
            output = correct(call, output)
    return output


@contextlib.contextmanager
def evaluating(call: UNetCall) -> Iterator[None]:
    token = _CURRENT.set(call)
    try:
        yield
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def wrapped_attention(unet: torch.nn.Module, addons: Sequence[UNetAddon]) -> Iterator[None]:
    """The add-ons' attention-processor wrappers installed on `unet` while the context is open."""
    original = dict(getattr(unet, "attn_processors", {}) or {})
    wrapped = dict(original)
    for addon in addons:
        wrap = getattr(addon, "wrap_attention", None)
        if wrap is None:
            continue
        for name, processor in wrapped.items():
            replacement = wrap(name, processor)
            if replacement is not None:
                wrapped[name] = replacement
    changed = any(wrapped[name] is not original[name] for name in original)
    if changed:
        unet.set_attn_processor(wrapped)
    try:
        yield
    finally:
        if changed:
            unet.set_attn_processor(original)
