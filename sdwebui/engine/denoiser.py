"""The model side of the loop: one adapter around the U-Net and classifier-free guidance over it.

`ModelAdapter` is the only place that knows the model's prediction type (eps or v) and its extra inputs
(SDXL pooled text embeds and size/crop time ids, the 5 extra channels of inpainting U-Nets). Diffusers
schedulers consume the raw prediction (they are built with the model's `prediction_type`), so the loop
never branches on model family; the adapter's `to_x0` serves previews and interrupted decodes.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sdwebui.engine.addons import Prediction, RowOwner, UNetAddon, UNetCall, after_unet, evaluating
from sdwebui.engine.cond_schedule import StepConditioning
from sdwebui.engine.hooks import CFGAfterArgs, CFGCombineArgs, CFGDenoisedArgs, CFGDenoiserArgs, EngineHooks
from sdwebui.models.model import LoadedModel, ModelFamily

REFINER_AESTHETIC_SCORE, REFINER_NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5


@dataclass(frozen=True)
class SizeConditioning:
    """SDXL micro-conditioning (original size, crop top-left, target size), in pixels."""

    height: int
    width: int
    crop_top: int = 0
    crop_left: int = 0

    def time_ids(self, family: ModelFamily, negative: bool) -> list[float]:
        if family == ModelFamily.SDXL_REFINER:
            score = REFINER_NEGATIVE_AESTHETIC_SCORE if negative else REFINER_AESTHETIC_SCORE
            return [self.height, self.width, self.crop_top, self.crop_left, score]
        return [self.height, self.width, self.crop_top, self.crop_left, self.height, self.width]


class ModelAdapter:
    """Calls the U-Net with everything its family needs and converts predictions to x0."""

    def __init__(
        self,
        model: LoadedModel,
        alphas_cumprod: torch.Tensor,
        size: SizeConditioning,
        addons: Sequence[UNetAddon] = (),
        pass_index: int = 0,
    ):
        self.model = model
        self.prediction_type = model.prediction_type
        self._alphas_cumprod = alphas_cumprod.to(torch.float32)
        self._size = size
        self.addons = list(addons)
        self.pass_index = pass_index

    def predict(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        embeds: torch.Tensor,
        pooled: torch.Tensor | None,
        negative_rows: int,
        image_cond: torch.Tensor | None,
        rows: list[RowOwner] | None = None,
        step: int = 0,
        total_steps: int = 0,
    ) -> torch.Tensor:
        """Raw U-Net output for scaled latents `x`; the first `negative_rows` rows are unconditional.
        `rows` (one per row of x), `step` and `total_steps` are what the add-ons (addons.py) see."""
        model = self.model
        if image_cond is not None:
            x = torch.cat([x, image_cond.to(x.dtype)], dim=1)
        added = None
        if model.is_sdxl:
            added = {
                "text_embeds": pooled.to(model.device, model.dtype),
                "time_ids": self._time_ids(x, negative_rows),
            }
        x = x.to(model.device, model.dtype)
        embeds = embeds.to(model.device, model.dtype)
        if not self.addons:
            return model.unet(
                x, timestep, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False
            )[0]
        if rows is None or len(rows) != x.shape[0]:
            raise ValueError(f"U-Net add-ons need one RowOwner per row: {x.shape[0]} rows, got {rows!r}")
        alpha = float(self.alpha_at(timestep))
        call = UNetCall(
            step, total_steps, self.pass_index, timestep, ((1 - alpha) / alpha) ** 0.5, x, embeds, added, rows
        )
        call.prediction = Prediction(self.prediction_type, alpha)
        for addon in self.addons:
            addon.before_unet(call)
        with evaluating(call):
            output = model.unet(
                call.x,
                timestep,
                encoder_hidden_states=call.encoder_hidden_states,
                added_cond_kwargs=call.added_cond_kwargs,
                down_block_additional_residuals=_as_model(call.down_block_additional_residuals, x),
                mid_block_additional_residual=_as_model(call.mid_block_additional_residual, x),
                # a list: the U-Net pops one per down block
                down_intrablock_additional_residuals=_as_list(call.down_intrablock_additional_residuals, x),
                cross_attention_kwargs=call.cross_attention_kwargs or None,
                return_dict=False,
            )[0]
        return after_unet(self.addons, call, output)

    def sigma(self, timestep: torch.Tensor) -> float:
        """k-diffusion sigma of a (possibly fractional) DDPM timestep."""
        alpha = float(self.alpha_at(timestep))
        return ((1 - alpha) / alpha) ** 0.5

    def _time_ids(self, x: torch.Tensor, negative_rows: int) -> torch.Tensor:
        family = self.model.family
        rows = [self._size.time_ids(family, negative=i < negative_rows) for i in range(x.shape[0])]
        return torch.tensor(rows, device=self.model.device, dtype=self.model.dtype)

    def to_x0(self, x_scaled: torch.Tensor, timestep: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Denoised estimate from DDPM-scaled latents (the scheduler's model input) and the prediction."""
        prediction = Prediction(self.prediction_type, float(self.alpha_at(timestep)))
        return prediction.to_x0(x_scaled.float(), output.float())

    def from_x0(self, x_scaled: torch.Tensor, timestep: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The prediction (of the model's type) that `to_x0` maps back to `x0`: how an estimate changed in
        x0 space (extensions' guidance, step callbacks) reaches the scheduler."""
        alpha = self.alpha_at(timestep).to(x_scaled.device)
        x_scaled, x0 = x_scaled.float(), x0.float()
        if self.prediction_type == "v_prediction":
            return (alpha.sqrt() * x_scaled - x0) / (1 - alpha).sqrt()
        if self.prediction_type == "sample":
            return x0
        return (x_scaled - alpha.sqrt() * x0) / (1 - alpha).sqrt()

    def input_scale_root_alpha(self, timestep: torch.Tensor) -> float:
        """sqrt(alpha): the factor between k-diffusion's x (x0 + sigma * eps) and the scheduler's latents."""
        return float(self.alpha_at(timestep)) ** 0.5

    def alpha_at(self, timestep: torch.Tensor) -> torch.Tensor:
        # Karras/exponential schedules give fractional timesteps: interpolate the training schedule.
        t = float(timestep) if not isinstance(timestep, float) else timestep
        t = min(max(t, 0.0), len(self._alphas_cumprod) - 1.0)
        lo = int(t)
        hi = min(lo + 1, len(self._alphas_cumprod) - 1)
        frac = t - lo
        return self._alphas_cumprod[lo] * (1 - frac) + self._alphas_cumprod[hi] * frac


def _as_model(value: Any, like: torch.Tensor) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.to(like.device, like.dtype)
    return tuple(v.to(like.device, like.dtype) for v in value)


def _as_list(value: list[torch.Tensor] | None, like: torch.Tensor) -> list[torch.Tensor] | None:
    return None if value is None else [v.to(like.device, like.dtype) for v in value]


class CFGDenoiser:
    """Classifier-free guidance: uncond + cfg * sum_k w_k (cond_k - uncond), all rows in one U-Net call."""

    def __init__(
        self,
        adapter: ModelAdapter,
        cfg_scale: float,
        hooks: EngineHooks,
        image_indexes: list[int] | None = None,
        s_min_uncond: float = 0.0,
    ):
        self.adapter = adapter
        self.cfg_scale = cfg_scale
        # A1111's "Negative Guidance minimum sigma": below it the uncond rows are not run (the cond prediction
        # alone), a speed-up at low noise where guidance changes little
        self.s_min_uncond = s_min_uncond
        self.hooks = hooks
        self.image_indexes = image_indexes  # job index of each batch row; None = 0..batch-1

    def __call__(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        conds: StepConditioning,
        image_cond: torch.Tensor | None,
        step: int,
        total_steps: int,
    ) -> torch.Tensor:
        batch = x.shape[0]
        skip_uncond = conds.is_plain and (self.cfg_scale == 1.0 or self._below_min_sigma(timestep))
        owners = conds.cond_owner
        x_cond = x[owners]
        ic_cond = image_cond[owners] if image_cond is not None else None
        text_cond, text_uncond = conds.cond, None if skip_uncond else conds.uncond
        if skip_uncond:
            x_in, ic_in, pooled, negative_rows = x_cond, ic_cond, conds.cond_pooled, 0
        else:
            x_in = torch.cat([x, x_cond])
            ic_in = torch.cat([image_cond, ic_cond]) if image_cond is not None else None
            pooled = (
                torch.cat([conds.uncond_pooled, conds.cond_pooled]) if conds.cond_pooled is not None else None
            )
            negative_rows = batch

        if self.hooks.cfg_denoiser is not None:
            args = CFGDenoiserArgs(x_in, ic_in, timestep, step, total_steps, text_cond, text_uncond)
            self.hooks.cfg_denoiser(args)
            # A1111 builds the U-Net's text input from what the hook left: it may replace any of these
            x_in, ic_in, text_cond, text_uncond = args.x, args.image_cond, args.text_cond, args.text_uncond
        embeds = text_cond if skip_uncond else torch.cat([text_uncond, text_cond])
        if embeds.shape[0] != x_in.shape[0]:
            raise ValueError(
                f"cfg_denoiser: {embeds.shape[0]} text_uncond + text_cond rows for {x_in.shape[0]} x"
            )
        rows = self._rows(conds, batch, skip_uncond)
        output = self.adapter.predict(
            x_in, timestep, embeds, pooled, negative_rows, ic_in, rows, step, total_steps
        )
        if self.hooks.cfg_denoised is not None:
            args_denoised = CFGDenoisedArgs(x_in, output, step, total_steps)
            self.hooks.cfg_denoised(args_denoised)
            output = args_denoised.model_output

        guided = None
        if self.hooks.cfg_combine is not None:
            uncond_text = None if skip_uncond else text_uncond
            guided = self._combine_x0(x, x_in, timestep, output, conds, uncond_text, step, total_steps)
        if guided is None:
            guided = self._combine(output, conds, batch, skip_uncond)
        guided = guided.to(x.dtype)
        if self.hooks.cfg_after_cfg is not None:
            args_after = CFGAfterArgs(guided, step, total_steps)
            self.hooks.cfg_after_cfg(args_after)
            guided = args_after.x
        return guided

    def _combine_x0(
        self, x: torch.Tensor, x_in: torch.Tensor, timestep: torch.Tensor, output: torch.Tensor,
        conds: StepConditioning,
        text_uncond: torch.Tensor | None, step: int, total_steps: int,
    ) -> torch.Tensor | None:  # fmt: skip
        """Guidance by the cfg_combine hook, in x0 space (the rows' predictions as denoised estimates);
        None when the hook left it to the engine."""
        batch, skipped = x.shape[0], text_uncond is None
        owners = conds.cond_owner
        x0 = self.adapter.to_x0(x_in, timestep, output)  # x_in: the rows the U-Net saw
        if skipped:  # A1111 puts each image's first cond row where its uncond row would be
            cond, uncond = x0, x0[[owners.index(b) for b in range(batch)]]
        else:
            cond, uncond = x0[batch:], x0[:batch]
        args = CFGCombineArgs(
            cond, uncond, list(owners), list(conds.cond_weight), 1.0 if skipped else self.cfg_scale,
            text_uncond, step, total_steps,
        )  # fmt: skip
        self.hooks.cfg_combine(args)
        if args.denoised is None:
            return None
        if args.denoised.shape != x.shape:
            raise ValueError(
                f"cfg_combine: denoised of shape {tuple(args.denoised.shape)} for x {tuple(x.shape)}"
            )
        return self.adapter.from_x0(x, timestep, args.denoised.to(x.device))

    def _below_min_sigma(self, timestep: torch.Tensor) -> bool:
        if self.s_min_uncond <= 0:
            return False
        alpha = self.adapter.alpha_at(timestep)
        return float(((1 - alpha) / alpha).sqrt()) < self.s_min_uncond

    def _rows(self, conds: StepConditioning, batch: int, skip_uncond: bool) -> list[RowOwner]:
        """The owner of each U-Net row: uncond rows (one per image) first, then the cond rows."""
        indexes = self.image_indexes or list(range(batch))
        cond = [
            RowOwner(indexes[owner], False, weight)
            for owner, weight in zip(conds.cond_owner, conds.cond_weight, strict=True)
        ]
        return cond if skip_uncond else [RowOwner(indexes[i], True) for i in range(batch)] + cond

    def _combine(self, output: torch.Tensor, conds: StepConditioning, batch: int, skip_uncond: bool):
        if skip_uncond:
            return output if conds.cond_owner == list(range(batch)) else output[_inverse(conds.cond_owner)]
        uncond, cond = output[:batch], output[batch:]
        if conds.is_plain and conds.cond_owner == list(range(batch)):
            return uncond + self.cfg_scale * (cond - uncond)
        guided = uncond.clone()
        for row, (owner, weight) in enumerate(zip(conds.cond_owner, conds.cond_weight, strict=True)):
            guided[owner] += self.cfg_scale * weight * (cond[row] - uncond[owner])
        return guided


def _inverse(owners: list[int]) -> list[int]:
    rows = [0] * len(owners)
    for row, owner in enumerate(owners):
        rows[owner] = row
    return rows


class StepInterrupted(Exception):
    """Raised inside a U-Net or VAE forward pass when the running job was interrupted (or skipped)."""


# the stop check of the job running in this context: a hook on a model shared by two workers' jobs must
# only ever stop the job whose forward pass it is in
_STOP_CHECK: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "engine_stop_check", default=None
)


def _check_stop(module: torch.nn.Module, args: tuple) -> None:
    stop = _STOP_CHECK.get()
    if stop is not None and stop():
        raise StepInterrupted


@contextlib.contextmanager
def interrupt_checks(blocks: Iterable[torch.nn.Module], should_stop: Callable[[], bool]) -> Iterator[None]:
    """Forward pre-hooks on `blocks` while the context is open: a long step (a big image on the CPU) stops
    at the next block instead of at the next step. StepInterrupted propagates out of the forward pass."""
    token = _STOP_CHECK.set(should_stop)
    handles = [block.register_forward_pre_hook(_check_stop) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        _STOP_CHECK.reset(token)


def model_blocks(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The down/mid/up blocks of a diffusers U-Net, or of a VAE decoder (its mid and up blocks)."""
    blocks = [*getattr(network, "down_blocks", ()), getattr(network, "mid_block", None)]
    blocks += list(getattr(network, "up_blocks", ()))
    return [block for block in blocks if isinstance(block, torch.nn.Module)]
