"""A1111's `modules.sd_samplers_kdiffusion`: `KDiffusionSampler` and its denoiser, the objects extensions
patch or subclass.

The sampling itself is the engine's loop (sdwebui.engine.loop) over a diffusers scheduler; a job built
through the facade creates `p.sampler` from `sd_samplers.all_samplers_map[p.sampler_name].constructor` after
the scripts' `process_batch` (where A1111 creates it), and at every step the engine calls, where an
extension overrides them (else the engine's own step and guidance run, with no per-step call):
- `p.sampler.callback_state(d)` with A1111's dict (`x`, `i`, `sigma`, `sigma_hat`, `denoised`): a wrapper
  installed on the class (vectorscope CC does) sees the step and may edit `d["x"]` / `d["denoised"]`, and the
  step goes on from what it left (also called when `stop_at` is set);
- `p.sampler.model_wrap_cfg.combine_denoised(...)` (dynamic thresholding's subclass).
"""

from __future__ import annotations

from typing import Any

from sdwebui.facade import shared
from sdwebui.facade.sd_samplers_cfg_denoiser import CFGDenoiser
from sdwebui.facade.sd_samplers_common import InterruptedException

# A1111's k-diffusion function of each sampler (samplers_k_diffusion), by the engine's sampler name
FUNCNAMES: dict[str, str] = {
    "DPM++ 2M": "sample_dpmpp_2m",
    "DPM++ SDE": "sample_dpmpp_sde",
    "DPM++ 2M SDE": "sample_dpmpp_2m_sde",
    "DPM++ 2M SDE Heun": "sample_dpmpp_2m_sde",
    "DPM++ 2S a": "sample_dpmpp_2s_ancestral",
    "DPM++ 3M SDE": "sample_dpmpp_3m_sde",
    "Euler a": "sample_euler_ancestral",
    "Euler": "sample_euler",
    "LMS": "sample_lms",
    "Heun": "sample_heun",
    "DPM2": "sample_dpm_2",
    "DPM2 a": "sample_dpm_2_ancestral",
    "DDIM": "sample_ddim",
    "PLMS": "sample_plms",
    "UniPC": "sample_unipc",
    "LCM": "sample_lcm",
}
_BY_FUNCNAME = {func: name for name, func in reversed(FUNCNAMES.items())}


class CFGDenoiserKDiffusion(CFGDenoiser):
    """A1111 1.6+'s k-diffusion denoiser (dynamic thresholding subclasses it by this name)."""


class KDiffusionSampler:
    """A1111's sampler object: what the engine's loop runs for one batch, as extensions see it."""

    def __init__(self, funcname: str, sd_model: Any, options: dict[str, Any] | None = None):
        self.funcname = funcname
        self.engine_sampler = _BY_FUNCNAME.get(funcname)  # the engine's sampler this stands for
        self.sd_model = sd_model
        self.options = dict(options or {})
        self.config = None  # the SamplerData it was created from (sd_samplers.create_sampler sets it)
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = None
        self.sampler_extra_args: dict[str, Any] = {}
        self.p = None
        self.eta = None
        self.s_min_uncond = None
        self.stop_at = None  # a step after which callback_state stops the sampling
        self.last_latent = None
        self.conditioning_key = "crossattn"

    def callback_state(self, d: dict[str, Any]) -> None:
        """Every step (A1111's k-diffusion callback): `d` holds x, i, sigma, sigma_hat, denoised."""
        step = d["i"]
        if self.stop_at is not None and step > self.stop_at:
            raise InterruptedException
        shared.state.sampling_step = step
        shared.total_tqdm.update()

    def overrides_callback_state(self) -> bool:
        """Whether the engine must call `callback_state` every step: an extension replaced it (on the class,
        a subclass or this instance) or set `stop_at`. Otherwise the engine's progress keeps
        `shared.state.sampling_step`, and its interrupt stops the job, as this method would."""
        return (
            self.stop_at is not None
            or "callback_state" in vars(self)
            or type(self).callback_state is not _OWN_CALLBACK_STATE
        )

    def initialize(self, p: Any) -> dict[str, Any]:
        """Bind to the job's p (A1111 does it when sampling starts); returns k-diffusion's extra kwargs."""
        self.p = p
        cfg = self.model_wrap_cfg
        cfg.p, cfg.steps = p, getattr(p, "steps", None)
        cfg.step, cfg.image_cfg_scale = 0, getattr(p, "image_cfg_scale", None)
        self.eta = getattr(p, "eta", None)
        self.s_min_uncond = getattr(p, "s_min_uncond", None)
        return {}

    def sample(self, p: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(_RUN_BY_ENGINE)

    sample_img2img = sample


_OWN_CALLBACK_STATE = KDiffusionSampler.callback_state  # before any extension can wrap it

_RUN_BY_ENGINE = (
    "KDiffusionSampler: the app's engine runs the sampling loop; run a job with processing.process_images "
    "(callback_state and model_wrap_cfg.combine_denoised are called from it)"
)


def constructor_for(name: str):
    def construct(model: Any) -> KDiffusionSampler:
        sampler = KDiffusionSampler(FUNCNAMES.get(name, f"sample_{name.lower()}"), model)
        sampler.engine_sampler = name  # exact, where two names share a function (DPM++ 2M SDE [Heun])
        return sampler

    return construct  # A1111: SamplerData(name, lambda model: KDiffusionSampler(funcname, model), ...)


samplers_k_diffusion = [(name, func, [], {}) for name, func in FUNCNAMES.items()]
