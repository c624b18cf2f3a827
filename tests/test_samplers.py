import importlib.util

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)

from sdwebui.engine import samplers as S

HAS_SCIPY = importlib.util.find_spec("scipy") is not None

SD_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "skip_prk_steps": True,  # a PNDM setting in SD's own config: must not leak into other schedulers
    "clip_sample": False,
}
V_CONFIG = {**SD_CONFIG, "prediction_type": "v_prediction"}


def _combos():
    for sampler in S.SAMPLERS:
        for schedule in S.SCHEDULE_TYPES:
            yield sampler, schedule


@pytest.mark.parametrize("config", [SD_CONFIG, V_CONFIG], ids=["eps", "v"])
@pytest.mark.parametrize("sampler,schedule", list(_combos()), ids=lambda x: getattr(x, "name", x))
def test_every_sampler_and_schedule_builds_or_explains(sampler, schedule, config):
    effective = S.effective_schedule(sampler, schedule.label)
    missing = [p for p in (*sampler.requires, *effective.requires) if importlib.util.find_spec(p) is None]
    if missing:
        with pytest.raises(S.SamplerUnavailableError, match=missing[0]):
            S.create_scheduler(sampler.name, schedule.label, config)
        return
    if effective.name not in sampler.schedules:
        with pytest.raises(S.UnsupportedScheduleError, match="valid schedule types: Automatic"):
            S.create_scheduler(sampler.name, schedule.label, config)
        return
    scheduler = S.create_scheduler(sampler.name, schedule.label, config)
    assert isinstance(scheduler, sampler.scheduler_class)
    assert scheduler.config.prediction_type == config["prediction_type"]
    assert scheduler.config.num_train_timesteps == 1000
    scheduler.set_timesteps(10)
    assert len(scheduler.timesteps) >= 10
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    x = torch.ones(2, 4, 8, 8) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(x, t)
        assert model_in.shape == x.shape
        x = scheduler.step(
            torch.zeros_like(x), t, x, **S.step_kwargs(scheduler, generator=generators)
        ).prev_sample
    assert torch.isfinite(x).all()


def test_fresh_scheduler_each_call():
    a = S.create_scheduler("Euler", "Automatic", SD_CONFIG)
    b = S.create_scheduler("Euler", "Automatic", SD_CONFIG)
    assert a is not b
    a.set_timesteps(5)
    b.set_timesteps(30)
    assert len(a.timesteps) == 5 and len(b.timesteps) == 30


def test_model_only_settings_do_not_leak():
    scheduler = S.create_scheduler("DPM++ 2M", "Karras", SD_CONFIG)
    assert isinstance(scheduler, DPMSolverMultistepScheduler)
    assert "skip_prk_steps" not in scheduler.config
    assert scheduler.config.use_karras_sigmas is True
    assert scheduler.config.algorithm_type == "dpmsolver++"
    assert scheduler.config.beta_schedule == "scaled_linear"


def test_schedule_flags_and_spacing():
    euler = S.create_scheduler("Euler", "Uniform", SD_CONFIG)
    assert euler.config.timestep_spacing == "linspace"
    assert not euler.config.use_karras_sigmas
    euler.set_timesteps(10)
    assert euler.timesteps[0] == pytest.approx(999)  # full schedule, like A1111's k-diffusion sigmas
    assert S.create_scheduler("Euler", "Exponential", SD_CONFIG).config.use_exponential_sigmas
    assert S.create_scheduler("Euler", "SGM Uniform", SD_CONFIG).config.timestep_spacing == "trailing"
    ddim = S.create_scheduler("DDIM", None, SD_CONFIG)
    assert isinstance(ddim, DDIMScheduler)
    ddim.set_timesteps(10)
    assert ddim.timesteps.tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]  # A1111 DDIM timesteps
    plms = S.create_scheduler("PLMS", None, SD_CONFIG)
    assert isinstance(plms, PNDMScheduler) and plms.config.skip_prk_steps


def test_automatic_uses_a1111_default_schedule():
    assert S.create_scheduler("DPM++ 2M", "Automatic", SD_CONFIG).config.use_karras_sigmas
    assert S.create_scheduler("DPM++ 2M SDE", "Automatic", SD_CONFIG).config.use_exponential_sigmas
    assert not S.create_scheduler("Euler", "Automatic", SD_CONFIG).config.use_karras_sigmas
    dpm = S.SAMPLERS[[s.name for s in S.SAMPLERS].index("DPM++ 2M")]
    euler = S.resolve_sampler("Euler")[0]
    assert S.infotext_schedule_label(dpm, "Automatic") == "Karras"
    assert S.infotext_schedule_label(euler, "Automatic") == "Automatic"
    assert S.infotext_schedule_label(euler, "Karras") == "Karras"


@pytest.mark.parametrize(
    "name,scheduler,expected",
    [
        ("Euler a", None, ("Euler a", "Automatic")),
        ("k_euler_a", "karras", ("Euler a", "Karras")),
        ("k_euler_ancestral", None, ("Euler a", "Automatic")),
        ("k_dpmpp_2m", "Exponential", ("DPM++ 2M", "Exponential")),
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),
        ("DPM++ 2M Karras", "Uniform", ("DPM++ 2M", "Karras")),  # the name's schedule wins, as in A1111
        ("DPM++ 2M SDE Karras", None, ("DPM++ 2M SDE", "Karras")),
        ("DPM++ 2M SDE Exponential", "", ("DPM++ 2M SDE", "Exponential")),
        ("dpm++ sde karras", None, ("DPM++ SDE", "Karras")),
        ("k_dpmpp_2m_ka", None, ("DPM++ 2M", "Karras")),
        ("Euler SGMUniform", None, ("Euler", "SGM Uniform")),
        ("DDIM", "sgm_uniform", ("DDIM", "SGM Uniform")),
        ("UniPC", None, ("UniPC", "Automatic")),
    ],
)
def test_names_aliases_and_legacy_names_resolve(name, scheduler, expected):
    sampler, schedule = S.resolve_sampler(name, scheduler)
    assert (sampler.name, schedule) == expected


def test_unknown_names_list_valid_ones():
    with pytest.raises(S.UnknownSamplerError) as err:
        S.resolve_sampler("Euler b")
    assert "Euler b" in str(err.value) and "Euler a" in str(err.value) and "DPM++ 2M" in str(err.value)
    assert isinstance(err.value, ValueError)
    with pytest.raises(S.UnknownSamplerError, match="valid schedule types: Automatic, Uniform, Karras"):
        S.create_scheduler("Euler", "Fancy", SD_CONFIG)
    with pytest.raises(S.UnknownSamplerError, match="valid samplers"):
        S.create_scheduler("", None, SD_CONFIG)


def test_unsupported_combination_names_alternatives():
    with pytest.raises(S.UnsupportedScheduleError, match="'Euler a' does not support schedule type 'Karras'"):
        S.create_scheduler("Euler a", "Karras", SD_CONFIG)
    assert S.supported_schedules("Euler a") == ["Automatic", "Uniform", "SGM Uniform", "Simple"]
    assert "Karras" in S.supported_schedules("DPM++ 2M")


def test_eta():
    euler_a = S.create_scheduler("Euler a", None, SD_CONFIG, eta=1.0)
    assert isinstance(euler_a, EulerAncestralDiscreteScheduler)
    with pytest.raises(S.UnsupportedScheduleError, match="eta=0.5"):
        S.create_scheduler("Euler a", None, SD_CONFIG, eta=0.5)
    assert isinstance(S.create_scheduler("Euler", None, SD_CONFIG, eta=0.3), EulerDiscreteScheduler)
    ddim = S.create_scheduler("DDIM", None, SD_CONFIG, eta=0.3)
    assert S.step_kwargs(ddim, eta=0.3) == {"eta": 0.3}
    assert S.step_kwargs(ddim) == {"eta": 0.0}
    gens = [torch.Generator()]
    assert S.step_kwargs(euler_a, eta=1.0, generator=gens) == {"generator": gens}
    assert S.step_kwargs(S.create_scheduler("Heun", None, SD_CONFIG), generator=gens) == {}


def test_bad_model_config():
    with pytest.raises(ValueError, match="prediction_type"):
        S.create_scheduler("Euler", None, {**SD_CONFIG, "prediction_type": "flow"})
    with pytest.raises(ValueError, match="beta_schedule"):
        S.create_scheduler("Euler", None, {**SD_CONFIG, "beta_schedule": "cubic"})


def test_missing_training_keys_use_sd_defaults():
    scheduler = S.create_scheduler("Euler", None, {"prediction_type": "v_prediction"})
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_start == pytest.approx(0.00085)
    assert scheduler.config.prediction_type == "v_prediction"


@pytest.mark.skipif(HAS_SCIPY, reason="scipy installed")
def test_scipy_dependent_entries_explain_and_hide():
    with pytest.raises(S.SamplerUnavailableError, match="scipy"):
        S.create_scheduler("LMS", None, SD_CONFIG)
    with pytest.raises(S.SamplerUnavailableError, match="Beta"):
        S.create_scheduler("Euler", "Beta", SD_CONFIG)
    assert "LMS" not in [s["name"] for s in S.samplers_for_api()]
    assert "beta" not in [s["name"] for s in S.schedulers_for_api()]


def test_api_shapes():
    samplers = S.samplers_for_api()
    by_name = {s["name"]: s for s in samplers}
    for required in ("Euler", "Euler a", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE"):
        assert required in by_name
    for required in ("DPM++ 2S a", "DDIM", "PLMS", "UniPC", "LCM"):
        assert required in by_name
    assert by_name["DPM++ 2M"] == {
        "name": "DPM++ 2M",
        "aliases": ["k_dpmpp_2m"],
        "options": {"scheduler": "karras"},
    }
    assert by_name["Heun"]["options"] == {"second_order": "True"}
    schedulers = {s["name"]: s for s in S.schedulers_for_api()}
    assert schedulers["karras"] == {
        "name": "karras",
        "label": "Karras",
        "aliases": None,
        "default_rho": 7.0,
        "need_inner_model": False,
    }
    assert schedulers["sgm_uniform"]["aliases"] == ["SGMUniform"]
    assert list(schedulers)[0] == "automatic"


def test_substitutes_are_documented():
    for name in ("DPM++ SDE", "DPM++ 2S a"):
        assert S.resolve_sampler(name)[0].note


@pytest.mark.parametrize("name", ["LMS", "PLMS", "Euler", "DPM++ 2M", "DDIM"])
def test_zero_terminal_snr_reaches_every_sampler(name):
    """A zero-terminal-SNR model's schedule is used by every sampler: natively, or as explicit betas
    (LMS and PLMS have no option for it), never silently replaced by the plain schedule."""
    config = {
        "beta_schedule": "scaled_linear",
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
    }
    scheduler = S.create_scheduler(
        name, "Uniform", config
    )  # Karras etc. start lower: see test_samplers_zero_snr
    plain = S.create_scheduler(name, "Uniform", {**config, "rescale_betas_zero_snr": False})
    last = scheduler.alphas_cumprod[-1].item()
    assert last < 1e-6 and plain.alphas_cumprod[-1].item() > 1e-3
    if hasattr(scheduler, "sigmas"):
        scheduler.set_timesteps(20)
        assert scheduler.sigmas[0].item() == pytest.approx(4096, rel=1e-3)


@pytest.mark.parametrize("name", ["Euler", "Euler a", "Heun", "LMS", "DPM++ 2M"])
def test_one_step_starts_at_the_top_of_the_schedule(name):
    scheduler = S.create_scheduler(name, None, {})
    S.set_timesteps(scheduler, 1)
    assert scheduler.timesteps[0].item() == pytest.approx(999, abs=1)
    many = S.create_scheduler(name, None, {})
    S.set_timesteps(many, 10)
    reference = S.create_scheduler(name, None, {})
    reference.set_timesteps(10)
    assert torch.equal(many.timesteps, reference.timesteps)  # more steps: spacing unchanged
