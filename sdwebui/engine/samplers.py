"""A1111 sampler names and schedule types -> a fresh diffusers scheduler per job.

One registry table (`SAMPLERS`) maps each A1111 sampler to a diffusers scheduler class and its config;
`SCHEDULE_TYPES` maps A1111's schedule types to diffusers' sigma flags. Nothing here holds state:
`create_scheduler` builds a new scheduler from the model's training schedule every time.

Timestep spacing: A1111's k-diffusion samplers take sigmas from the full training schedule,
`t = linspace(T-1, 0, steps)`, which is diffusers' `timestep_spacing="linspace"`; its DDIM/PLMS use
`range(0, T, T // steps) + 1`, which is diffusers' `"leading"` with `steps_offset=1`. "SGM Uniform" is
diffusers' `"trailing"` (as diffusers' own A1111 table says).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # diffusers costs seconds to import: the registry names its classes, a job imports them
    from diffusers.schedulers.scheduling_utils import SchedulerMixin


class UnknownSamplerError(ValueError):
    """A sampler or schedule type name that is not in the registry; the message lists the valid ones."""


class UnsupportedScheduleError(ValueError):
    """A known sampler and schedule type that diffusers cannot combine, or an unsupported option."""


class SamplerUnavailableError(RuntimeError):
    """A sampler or schedule type whose optional dependency (e.g. scipy) is not installed."""


@dataclass(frozen=True)
class ScheduleTypeInfo:
    name: str  # A1111's id ("karras"), accepted in requests like the label
    label: str  # A1111's display name ("Karras"), written to infotext
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0
    need_inner_model: bool = False
    requires: tuple[str, ...] = ()  # python packages diffusers needs for it

    @property
    def available(self) -> bool:
        return all(_has_package(p) for p in self.requires)


# Eta handling of a sampler: "none" = deterministic, eta meaningless (A1111 ignores it too);
# "fixed" = diffusers bakes in eta=1 (ancestral/SDE); "step" = eta is an argument of scheduler.step (DDIM).
ETA_NONE, ETA_FIXED, ETA_STEP = "none", "fixed", "step"


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    aliases: tuple[str, ...]
    options: Mapping[str, Any]  # A1111's sampler options (default "scheduler", "second_order", ...)
    scheduler_name: str  # the diffusers scheduler class
    config: Mapping[str, Any] = field(default_factory=dict)  # extra config for the diffusers class
    schedules: tuple[str, ...] = ("uniform",)  # schedule type names this diffusers class can honour
    spacing: str | None = "linspace"  # timestep_spacing for Uniform/Karras; None = class has no such option
    eta_mode: str = ETA_NONE
    note: str = ""  # where the diffusers scheduler differs from A1111's sampler
    requires: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return all(_has_package(p) for p in self.requires)

    @property
    def scheduler_class(self) -> type[SchedulerMixin]:
        return getattr(importlib.import_module("diffusers"), self.scheduler_name)

    @property
    def default_schedule(self) -> str:
        """Schedule type name used for "Automatic"."""
        return self.options.get("scheduler", "uniform")


SCHEDULE_TYPES: list[ScheduleTypeInfo] = [
    ScheduleTypeInfo("automatic", "Automatic"),
    ScheduleTypeInfo("uniform", "Uniform", need_inner_model=True),
    ScheduleTypeInfo("karras", "Karras", default_rho=7.0),
    ScheduleTypeInfo("exponential", "Exponential"),
    ScheduleTypeInfo("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), need_inner_model=True),
    ScheduleTypeInfo("beta", "Beta", need_inner_model=True, requires=("scipy",)),
    # Forge's / ComfyUI's "Simple": evenly strided from the top of the schedule (for U-Nets diffusers'
    # "trailing" spacing; for flow-matching models sdwebui.engine.flow.schedules)
    ScheduleTypeInfo("simple", "Simple", need_inner_model=True),
]

_SIGMA_SCHEDULES = ("uniform", "karras", "exponential", "beta", "sgm_uniform", "simple")
_SIGMA_SPACE_SCHEDULES = ("karras", "exponential", "beta")  # built from sigma_min..sigma_max, not timesteps

# A zero-terminal-SNR model has sigma = inf at its last timestep (diffusers clamps it to 4096). Schedules
# spaced in sigma from there spend most steps where the latent is pure noise (Karras, 20 steps: 7 at
# t >= 995, washed-out images). They start instead at EDM's sigma_max (Karras et al. 2022, the paper of
# the Karras schedule), where the signal is already drowned (SNR ~1.6e-4, t ~972 of the default model).
# Uniform and SGM Uniform are spaced in timesteps and still start at the terminal timestep.
ZERO_SNR_SIGMA_MAX = 80.0
_NO_SPACING_SCHEDULES = ("uniform", "karras", "exponential", "beta")  # classes without timestep_spacing
_SDE_NOTE = "noise is drawn per step from the per-image generators, not from a Brownian tree (torchsde)"

SAMPLERS: list[SamplerInfo] = [
    SamplerInfo(
        "DPM++ 2M",
        ("k_dpmpp_2m",),
        {"scheduler": "karras"},
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        _SIGMA_SCHEDULES,
    ),
    SamplerInfo(
        "DPM++ SDE",
        ("k_dpmpp_sde",),
        {"scheduler": "karras", "second_order": True, "brownian_noise": True},
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "lower_order_final": True},
        _NO_SPACING_SCHEDULES,
        spacing=None,
        eta_mode=ETA_FIXED,
        note="diffusers' DPMSolverSDEScheduler needs torchsde; uses DPMSolverSinglestepScheduler "
        f"(sde-dpmsolver++, order 2), the same singlestep 2nd-order SDE solver; {_SDE_NOTE}",
    ),
    SamplerInfo(
        "DPM++ 2M SDE",
        ("k_dpmpp_2m_sde",),
        {"scheduler": "exponential", "brownian_noise": True},
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        _SIGMA_SCHEDULES,
        eta_mode=ETA_FIXED,
        note=_SDE_NOTE,
    ),
    SamplerInfo(
        "DPM++ 2M SDE Heun",
        ("k_dpmpp_2m_sde_heun",),
        {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"},
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
        _SIGMA_SCHEDULES,
        eta_mode=ETA_FIXED,
        note=_SDE_NOTE,
    ),
    SamplerInfo(
        "DPM++ 2S a",
        ("k_dpmpp_2s_a",),
        {"scheduler": "karras", "uses_ensd": True, "second_order": True},
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "lower_order_final": True},
        _NO_SPACING_SCHEDULES,
        spacing=None,
        note="diffusers has no ancestral DPM++ 2S; uses DPMSolverSinglestepScheduler (dpmsolver++, order 2), "
        "the same singlestep 2nd-order solver without the ancestral noise (diffusers' own A1111 mapping)",
    ),
    SamplerInfo(
        "DPM++ 3M SDE",
        ("k_dpmpp_3m_sde",),
        {"scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True},
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        _SIGMA_SCHEDULES,
        eta_mode=ETA_FIXED,
        note=_SDE_NOTE,
    ),
    SamplerInfo(
        "Euler a",
        ("k_euler_a", "k_euler_ancestral"),
        {"uses_ensd": True},
        "EulerAncestralDiscreteScheduler",
        schedules=(
            "uniform",
            "sgm_uniform",
            "simple",
        ),  # diffusers' class has no Karras/exponential/beta sigmas
        eta_mode=ETA_FIXED,
    ),
    SamplerInfo("Euler", ("k_euler",), {}, "EulerDiscreteScheduler", schedules=_SIGMA_SCHEDULES),
    SamplerInfo(
        "LMS", ("k_lms",), {}, "LMSDiscreteScheduler", schedules=_SIGMA_SCHEDULES, requires=("scipy",)
    ),
    SamplerInfo(
        "Heun", ("k_heun",), {"second_order": True}, "HeunDiscreteScheduler", schedules=_SIGMA_SCHEDULES
    ),
    SamplerInfo(
        "DPM2",
        ("k_dpm_2",),
        {"scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True},
        "KDPM2DiscreteScheduler",
        schedules=_SIGMA_SCHEDULES,
    ),
    SamplerInfo(
        "DPM2 a",
        ("k_dpm_2_a",),
        {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True},
        "KDPM2AncestralDiscreteScheduler",
        schedules=_SIGMA_SCHEDULES,
        eta_mode=ETA_FIXED,
    ),
    SamplerInfo(
        "DDIM",
        ("ddim",),
        {},
        "DDIMScheduler",
        {"set_alpha_to_one": False, "clip_sample": False},
        spacing="leading",
        eta_mode=ETA_STEP,
    ),
    SamplerInfo(
        "PLMS",
        ("plms",),
        {},
        "PNDMScheduler",
        {"skip_prk_steps": True, "set_alpha_to_one": False},
        spacing="leading",
        note="PNDMScheduler with skip_prk_steps (the PLMS part only), as diffusers' SD pipelines use it",
    ),
    SamplerInfo("UniPC", ("unipc",), {}, "UniPCMultistepScheduler", schedules=_SIGMA_SCHEDULES),
    SamplerInfo("LCM", ("k_lcm",), {}, "LCMScheduler", spacing="leading"),
]

# A1111 1.5-era aliases of the old combined "<sampler> Karras" entries.
_LEGACY_KARRAS_ALIASES = {
    "k_lms_ka": "LMS",
    "k_dpm_2_ka": "DPM2",
    "k_dpm_2_a_ka": "DPM2 a",
    "k_dpmpp_2s_a_ka": "DPM++ 2S a",
    "k_dpmpp_2m_ka": "DPM++ 2M",
    "k_dpmpp_sde_ka": "DPM++ SDE",
    "k_dpmpp_2m_sde_ka": "DPM++ 2M SDE",
}

# The model's DDPM training schedule; other keys of a checkpoint's scheduler config are another
# scheduler's settings and are deliberately not carried over.
_TRAINING_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}
_OPTIONAL_TRAINING_KEYS = ("trained_betas", "rescale_betas_zero_snr")
_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def _has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _sampler_index() -> dict[str, SamplerInfo]:
    index: dict[str, SamplerInfo] = {}
    for info in SAMPLERS:
        for key in (info.name, *info.aliases):
            index[key.lower()] = info
    return index


def _schedule_index() -> dict[str, ScheduleTypeInfo]:
    index: dict[str, ScheduleTypeInfo] = {}
    for info in SCHEDULE_TYPES:
        for key in (info.name, info.label, *info.aliases):
            index[key.lower()] = info
    return index


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS if s.available]


def find_schedule_type(name: str | None) -> ScheduleTypeInfo:
    """Schedule type by A1111 name, label or alias (case-insensitive); None or "" = Automatic."""
    if name is None or not str(name).strip():
        return SCHEDULE_TYPES[0]
    info = _schedule_index().get(str(name).strip().lower())
    if info is None:
        valid = ", ".join(s.label for s in SCHEDULE_TYPES)
        raise UnknownSamplerError(f"unknown schedule type {name!r}; valid schedule types: {valid}")
    return info


def resolve_sampler(name: str, scheduler: str | None = None) -> tuple[SamplerInfo, str]:
    """(sampler, schedule type label) for a request's `sampler_name` and `scheduler`.

    Accepts names, A1111 aliases (`k_euler_a`) and legacy combined names (`DPM++ 2M Karras`, `k_dpmpp_2m_ka`);
    a schedule named inside the sampler name wins over `scheduler`, as in A1111.
    """
    schedule = find_schedule_type(scheduler)
    key = (name or "").strip().lower()
    samplers = _sampler_index()
    if key in samplers:
        return samplers[key], schedule.label
    if key in _LEGACY_KARRAS_ALIASES:
        return samplers[_LEGACY_KARRAS_ALIASES[key].lower()], "Karras"
    for info in SCHEDULE_TYPES:
        for suffix in (info.label, *info.aliases):
            tail = " " + suffix.lower()
            if key.endswith(tail) and key[: -len(tail)] in samplers:
                return samplers[key[: -len(tail)]], info.label
    valid = ", ".join(sampler_names())
    raise UnknownSamplerError(f"unknown sampler {name!r}; valid samplers: {valid}")


def effective_schedule(sampler: SamplerInfo, schedule_label: str) -> ScheduleTypeInfo:
    """The schedule actually used: "Automatic" means the sampler's A1111 default (Karras for DPM++ 2M)."""
    schedule = find_schedule_type(schedule_label)
    if schedule.name == "automatic":
        schedule = find_schedule_type(sampler.default_schedule)
    return schedule


def infotext_schedule_label(sampler: SamplerInfo, schedule_label: str) -> str:
    """ "Schedule type" as A1111 writes it: the effective label, or "Automatic" for samplers without a default."""
    schedule = find_schedule_type(schedule_label)
    if schedule.name == "automatic" and "scheduler" not in sampler.options:
        return schedule.label
    return effective_schedule(sampler, schedule_label).label


def supported_schedules(sampler_name: str) -> list[str]:
    """Labels of the schedule types the UI may offer for a sampler ("Automatic" first)."""
    sampler, _ = resolve_sampler(sampler_name)
    return ["Automatic"] + [s.label for s in SCHEDULE_TYPES if s.name in sampler.schedules and s.available]


def _schedule_config(sampler: SamplerInfo, schedule: ScheduleTypeInfo) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    if sampler.spacing is not None:
        trailing = schedule.name in ("sgm_uniform", "simple")
        flags["timestep_spacing"] = "trailing" if trailing else sampler.spacing
    if schedule.name == "karras":
        flags["use_karras_sigmas"] = True
    elif schedule.name == "exponential":
        flags["use_exponential_sigmas"] = True
    elif schedule.name == "beta":
        flags["use_beta_sigmas"] = True
    return flags


def training_config(model_scheduler_config: Mapping[str, Any]) -> dict[str, Any]:
    """The DDPM training schedule of a model, validated, with SD defaults for missing keys."""
    config = {k: model_scheduler_config.get(k, v) for k, v in _TRAINING_DEFAULTS.items()}
    for key in _OPTIONAL_TRAINING_KEYS:
        if model_scheduler_config.get(key) is not None:
            config[key] = model_scheduler_config[key]
    if config["prediction_type"] not in _PREDICTION_TYPES:
        raise ValueError(
            f"model scheduler config: prediction_type {config['prediction_type']!r} is not one of {_PREDICTION_TYPES}"
        )
    if config.get("trained_betas") is None and config["beta_schedule"] not in _BETA_SCHEDULES:
        raise ValueError(
            f"model scheduler config: beta_schedule {config['beta_schedule']!r} is not one of {_BETA_SCHEDULES}"
        )
    # A1111's DDIM/PLMS timesteps are range(0, T, T // steps) + 1; SD's configs say steps_offset=1.
    config["steps_offset"] = int(model_scheduler_config.get("steps_offset", 1))
    return config


def _check_eta(sampler: SamplerInfo, eta: float | None) -> None:
    if eta is None or sampler.eta_mode != ETA_FIXED or abs(eta - 1.0) < 1e-9:
        return
    raise UnsupportedScheduleError(
        f"eta={eta:g} is not supported by sampler {sampler.name!r}: diffusers' "
        f"{sampler.scheduler_name} always uses eta=1; leave eta unset or use 1"
    )


def create_scheduler(
    sampler_name: str,
    schedule_type: str | None,
    model_scheduler_config: Mapping[str, Any],
    eta: float | None = None,
) -> SchedulerMixin:
    """A new diffusers scheduler for one job, built from the model's training schedule."""
    sampler, schedule_label = resolve_sampler(sampler_name, schedule_type)
    schedule = effective_schedule(sampler, schedule_label)
    for package in (*sampler.requires, *schedule.requires):
        if not _has_package(package):
            what = sampler.name if package in sampler.requires else f"schedule type {schedule.label!r}"
            raise SamplerUnavailableError(
                f"{what} needs the python package {package!r}, which is not installed"
            )
    if schedule.name not in sampler.schedules:
        valid = ", ".join(supported_schedules(sampler.name))
        raise UnsupportedScheduleError(
            f"sampler {sampler.name!r} does not support schedule type {schedule.label!r} "
            f"(diffusers' {sampler.scheduler_name}); valid schedule types: {valid}"
        )
    _check_eta(sampler, eta)
    zero_snr = bool(model_scheduler_config.get("rescale_betas_zero_snr"))
    _check_zero_snr_schedule(sampler, schedule, zero_snr)
    config = {
        **training_config(model_scheduler_config),
        **sampler.config,
        **_schedule_config(sampler, schedule),
    }
    accepted = _init_parameters(sampler.scheduler_class)
    if config.get("rescale_betas_zero_snr") and "rescale_betas_zero_snr" not in accepted:
        config["trained_betas"] = _zero_terminal_snr_betas(config)
    config = {k: v for k, v in config.items() if k in accepted}
    try:
        key = tuple(sorted(config.items()))
        hash(key)
    except TypeError:  # e.g. trained_betas as a list: build directly
        scheduler = sampler.scheduler_class.from_config(config)
    else:
        # diffusers schedulers keep per-run state: every job gets its own copy of a never-used prototype
        scheduler = copy.deepcopy(_prototype_scheduler(sampler.scheduler_class, key))
    if zero_snr and schedule.name in _SIGMA_SPACE_SCHEDULES:
        # diffusers reads `config.sigma_max` when it builds these schedules (a per-job copy: safe to set)
        scheduler.register_to_config(sigma_max=ZERO_SNR_SIGMA_MAX)
    return scheduler


def _check_zero_snr_schedule(sampler: SamplerInfo, schedule: ScheduleTypeInfo, zero_snr: bool) -> None:
    if zero_snr and schedule.name == "karras" and sampler.scheduler_name == "LMSDiscreteScheduler":
        raise UnsupportedScheduleError(
            f"sampler {sampler.name!r} does not support schedule type 'Karras' on a zero-terminal-SNR model: "
            "diffusers' LMSDiscreteScheduler starts Karras sigmas at the clamped terminal sigma (4096), "
            "which spends most steps on pure noise; use Exponential or another sampler"
        )


def set_timesteps(scheduler: SchedulerMixin, steps: int, device: Any = None) -> None:
    """``scheduler.set_timesteps``, except that one "linspace" step starts from the top of the schedule.

    diffusers' linspace spacing gives a single step t=0 (sigma ~0.03: the output is the noise); A1111's
    k-diffusion schedule, like "trailing", starts a one-step run at sigma_max.
    """
    if steps == 1 and getattr(scheduler.config, "timestep_spacing", None) == "linspace":
        scheduler.register_to_config(timestep_spacing="trailing")  # a per-job copy: safe to change
    scheduler.set_timesteps(steps, device=device)
    if hasattr(scheduler, "set_begin_index"):
        # Without it diffusers finds the step index from the first timestep and, when that timestep
        # repeats, takes its second copy (meant for img2img): the run ends one sigma past the schedule.
        scheduler.set_begin_index(0)
    if not bool(torch.isfinite(scheduler.timesteps).all()):
        # e.g. DPM2 a, 2 Uniform steps on a zero-terminal-SNR model: sigma 4096 -> 0.03 makes diffusers'
        # ancestral sigma_down cancel to 0 in float32, and its midpoint log(0) gives a NaN timestep
        name = type(scheduler).__name__
        raise UnsupportedScheduleError(
            f"{name} cannot build a {steps}-step schedule of this type for this model "
            "(its timesteps come out NaN); use more steps or another schedule type"
        )


@functools.cache
def _zero_terminal_snr_betas_cached(key: tuple) -> tuple[float, ...]:
    from diffusers import DDPMScheduler

    config = dict(key)
    alphas_cumprod = DDPMScheduler.from_config(config).alphas_cumprod.double()
    alphas_cumprod[-1] = 2.0**-24  # as diffusers' Euler: pure noise, but a finite sigma_max (4096)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return tuple((1 - alphas_cumprod / previous).tolist())


def _zero_terminal_snr_betas(config: Mapping[str, Any]) -> list[float]:
    """A zero-terminal-SNR schedule as explicit betas, for schedulers without the option (LMS, PLMS)."""
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "rescale_betas_zero_snr")
    return list(_zero_terminal_snr_betas_cached(tuple((k, config[k]) for k in keys)))


@functools.cache
def _init_parameters(scheduler_class: type[SchedulerMixin]) -> frozenset[str]:
    return frozenset(inspect.signature(scheduler_class.__init__).parameters)


@functools.lru_cache(maxsize=64)
def _prototype_scheduler(
    scheduler_class: type[SchedulerMixin], config: tuple[tuple[str, Any], ...]
) -> SchedulerMixin:
    """Built once per (class, config): `from_config` costs ~1 ms (signature inspection, config freezing)
    against ~0.1 ms for a deep copy. Never handed out itself, so its state is never advanced."""
    return scheduler_class.from_config(dict(config))


def step_kwargs(scheduler: SchedulerMixin, eta: float | None = None, generator: Any = None) -> dict[str, Any]:
    """Extra keyword arguments for `scheduler.step`: per-image generators for stochastic steps, DDIM's eta."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "generator" in accepted and generator is not None:
        kwargs["generator"] = generator
    if "eta" in accepted:
        kwargs["eta"] = 0.0 if eta is None else float(eta)  # A1111's eta_ddim default is 0
    return kwargs


def samplers_for_api() -> list[dict[str, Any]]:
    """A1111's /sdapi/v1/samplers: options as strings, as A1111's pydantic model serialises them."""
    return [
        {"name": s.name, "aliases": list(s.aliases), "options": {k: str(v) for k, v in s.options.items()}}
        for s in SAMPLERS
        if s.available
    ]


def schedulers_for_api() -> list[dict[str, Any]]:
    """A1111's /sdapi/v1/schedulers."""
    return [
        {
            "name": s.name,
            "label": s.label,
            "aliases": list(s.aliases) or None,
            "default_rho": s.default_rho,
            "need_inner_model": s.need_inner_model,
        }
        for s in SCHEDULE_TYPES
        if s.available
    ]
