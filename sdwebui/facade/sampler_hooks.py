"""The engine's per-step hooks (`sampler_step`, `cfg_combine`) served by A1111's sampler objects.

For a job built through the facade, `p.sampler` is created after the scripts' `process_batch`, as A1111
creates it in `sample()` (sd_samplers.create_sampler of `p.sampler_name`, which an extension may have
pointed at its own `all_samplers_map` entry). The engine keeps running its own sampler for the job: an entry
standing for another engine sampler is logged and not switched to.
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
    """Per job: `start_batch()` creates p.sampler; the engine's hooks call into it at every step."""

    def __init__(self, p: Any, engine_sampler: str | None):
        self.p = p
        self.engine_sampler = engine_sampler

    def start_batch(self) -> None:
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
        cfg = getattr(getattr(self.p, "sampler", None), "model_wrap_cfg", None)
        if cfg is None or not getattr(cfg, "overrides_combine", lambda: True)():
            return  # the engine's own guidance is A1111's combine_denoised
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
