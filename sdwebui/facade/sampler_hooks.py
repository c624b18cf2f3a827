"""The engine's per-step hooks (`sampler_step`, `cfg_combine`) served by A1111's sampler objects.

For a job built through the facade, `p.sampler` is created after the scripts' `process_batch`, as A1111
creates it in `sample()` (sd_samplers.create_sampler of `p.sampler_name`, which an extension may have
pointed at its own `all_samplers_map` entry). The engine keeps running its own sampler for the job: an entry
standing for another engine sampler is logged and not switched to.

The per-step hooks are installed on the engine's hooks only for a batch whose `p.sampler` has an
extension's override (`callback_state` replaced or `stop_at` set; `model_wrap_cfg.combine_denoised`
replaced), decided when p.sampler is created and again before sampling (scripts may change it in
`process_before_every_sampling`). Without them the engine does no per-step work for A1111's objects;
`shared.state.sampling_step` follows the engine's progress either way.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from sdwebui.engine import hooks as eh
from sdwebui.facade import sd_samplers, shared
from sdwebui.facade.sd_samplers_common import InterruptedException

log = logging.getLogger("webui.extensions")


class SamplerHooks:
    """Per job: `start_batch()` creates p.sampler per batch and installs the per-step hooks it needs."""

    def __init__(self, p: Any, engine_sampler: str | None):
        self.p = p
        self.engine_sampler = engine_sampler
        self._engine_hooks: eh.EngineHooks | None = None

    def start_batch(self, engine_hooks: eh.EngineHooks | None) -> None:
        """Create p.sampler for the batch and install the per-step hooks it needs on `engine_hooks`."""
        self._engine_hooks = engine_hooks
        self._create_sampler()
        self.install()

    def install(self) -> None:
        """Set or clear the engine's per-step hooks after what p.sampler overrides now."""
        hooks = self._engine_hooks
        if hooks is None:
            return
        sampler = getattr(self.p, "sampler", None)
        hooks.sampler_step = self.sampler_step if _overrides_callback_state(sampler) else None
        hooks.cfg_combine = self.cfg_combine if _overrides_combine(sampler) else None

    def _create_sampler(self) -> None:
        p = self.p
        try:
            sampler = sd_samplers.create_sampler(p.sampler_name, p.sd_model)
        except Exception as exc:  # an extension's constructor: the job runs on without it
            log.error("sampler %r for p could not be created: %s", p.sampler_name, exc)
            p.sampler = None
            return
        runs = getattr(sampler, "engine_sampler", None)
        if runs is not None and self.engine_sampler is not None and runs != self.engine_sampler:
            log.warning(
                "p.sampler_name %r stands for sampler %s; the job keeps running %s (a batch cannot switch)",
                p.sampler_name, runs, self.engine_sampler,
            )  # fmt: skip
        if hasattr(sampler, "initialize"):
            sampler.initialize(p)
        p.sampler = sampler

    def sampler_step(self, args: eh.SamplerStepArgs) -> None:
        sampler = getattr(self.p, "sampler", None)
        callback = getattr(sampler, "callback_state", None)
        if callback is None:
            return
        sigma = torch.tensor(args.sigma)
        d = {
            "x": args.x,
            "i": args.sampling_step,
            "sigma": sigma,
            "sigma_hat": sigma,
            "denoised": args.denoised,
        }
        try:
            callback(d)
        except InterruptedException:  # A1111's stop_at: the job ends with what it has
            shared.state.interrupt()
        except Exception:
            log.exception("callback_state of %s failed; skipped", type(sampler).__name__)
            return
        args.x, args.denoised = d["x"], d["denoised"]

    def cfg_combine(self, args: eh.CFGCombineArgs) -> None:
        sampler = getattr(self.p, "sampler", None)
        if not _overrides_combine(sampler):
            return  # the engine's own guidance is A1111's combine_denoised
        cfg = sampler.model_wrap_cfg
        cfg.p, cfg.step, cfg.total_steps = self.p, args.sampling_step, args.total_sampling_steps
        batch = args.uncond.shape[0]
        # A1111's layout: the cond rows, then one uncond row per image; conds_list[i] = [(row, weight)]
        x_out = torch.cat([args.cond, args.uncond])
        conds_list = [[] for _ in range(batch)]
        for row, (owner, weight) in enumerate(zip(args.cond_owner, args.cond_weight, strict=True)):
            conds_list[owner].append((row, weight))
        uncond = args.text_uncond if args.text_uncond is not None else args.uncond
        try:
            args.denoised = cfg.combine_denoised(x_out, conds_list, uncond, args.cfg_scale)
        except Exception:
            log.exception("combine_denoised of %s failed; the engine's guidance is used", type(cfg).__name__)


def _overrides_callback_state(sampler: Any) -> bool:
    """An extension's callback_state (or stop_at) on p.sampler; a sampler class not derived from A1111's,
    which cannot tell, is called whenever it has one."""
    if sampler is None or not callable(getattr(sampler, "callback_state", None)):
        return False
    check = getattr(sampler, "overrides_callback_state", None)
    return bool(check()) if callable(check) else True


def _overrides_combine(sampler: Any) -> bool:
    cfg = getattr(sampler, "model_wrap_cfg", None)
    if cfg is None or not callable(getattr(cfg, "combine_denoised", None)):
        return False
    check = getattr(cfg, "overrides_combine", None)
    return bool(check()) if callable(check) else True
