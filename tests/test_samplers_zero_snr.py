"""Samplers on the shipped zero-terminal-SNR, v-prediction default model, through the engine and over HTTP.

The default model's last timestep has sigma = inf (diffusers clamps it to 4096). That once made DPM++ 2M & co.
raise IndexError above 20 steps, DPM2 give NaN blamed on half precision, and Karras wash images out.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import torch

from sdwebui.engine import default_model_runs as backends
from sdwebui.engine import samplers as S
from sdwebui.engine import vae
from sdwebui.engine.conditioning import MAX_EMPHASIS
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import RequestError, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.default_model import CHECKPOINT_PATH
from sdwebui.models.default_model.attributes import read_attributes
from tests.api_server import start_server

DEFAULT_CONFIG = json.loads(CHECKPOINT_PATH.with_suffix(".json").read_text())["scheduler"]
SIGMA_SPACE = ("karras", "exponential", "beta")
FORMERLY_INDEX_ERROR = (
    "DPM++ 2M",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 3M SDE",
    "DPM++ SDE",
    "DPM++ 2S a",
)


@pytest.fixture(scope="module")
def model():
    return backends.load()


def run(model, **fields):
    request = Txt2ImgRequest(
        **{
            "prompt": "a red circle",
            "seed": 1,
            "width": 64,
            "height": 64,
            "do_not_save_samples": True,
            **fields,
        }
    )
    return generate(model, request, JobContext(), EngineSettings(save_images=False))


def _sigma_space_combos():
    for sampler in S.SAMPLERS:
        for name in SIGMA_SPACE:
            schedule = S.find_schedule_type(name)
            if name in sampler.schedules and sampler.available and schedule.available:
                yield sampler.name, schedule.label


@pytest.mark.parametrize("sampler,schedule", list(_sigma_space_combos()))
@pytest.mark.parametrize("steps", [20, 50])
def test_sigma_space_schedules_spend_no_steps_on_pure_noise(sampler, schedule, steps):
    """Karras/Exponential/Beta on a zero-SNR model start at EDM's sigma_max, not at the clamped 4096
    (which put 7 of 20 DPM++ 2M Karras steps at t >= 995, where the latent is pure noise)."""
    try:
        scheduler = S.create_scheduler(sampler, schedule, DEFAULT_CONFIG)
    except S.UnsupportedScheduleError as err:  # LMS + Karras: diffusers cannot take a sigma_max there
        assert sampler == "LMS" and schedule == "Karras" and "zero-terminal-SNR" in str(err)
        return
    S.set_timesteps(scheduler, steps)
    assert float(scheduler.sigmas[0]) == pytest.approx(S.ZERO_SNR_SIGMA_MAX, rel=1e-3)
    timesteps = scheduler.timesteps.float()
    assert int((timesteps >= 990).sum()) == 0, timesteps[:8].tolist()
    assert float(timesteps.min()) < 50  # the schedule still reaches the clean end


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M", "UniPC"])
def test_timestep_schedules_still_start_at_the_terminal_timestep(sampler):
    scheduler = S.create_scheduler(sampler, "Uniform", DEFAULT_CONFIG)
    S.set_timesteps(scheduler, 20)
    assert float(scheduler.timesteps[0]) == pytest.approx(999)
    assert float(scheduler.sigmas[0]) == pytest.approx(4096, rel=1e-3)


def test_plain_models_keep_their_own_sigma_max():
    scheduler = S.create_scheduler("DPM++ 2M", "Karras", {"prediction_type": "epsilon"})
    S.set_timesteps(scheduler, 20)
    assert float(scheduler.sigmas[0]) == pytest.approx(14.61, rel=1e-3)


@pytest.mark.skipif(not S.find_schedule_type("beta").available, reason="the Beta schedule needs scipy")
@pytest.mark.parametrize("sampler", FORMERLY_INDEX_ERROR)
def test_repeated_first_timestep_runs_the_whole_schedule(sampler):
    """diffusers rounds the first two Beta timesteps to one value; the step index must start at 0 (it started
    at the second copy and stepped past the end: IndexError, as Karras did before its sigma_max fix)."""
    scheduler = S.create_scheduler(sampler, "Beta", DEFAULT_CONFIG)
    S.set_timesteps(scheduler, 21)
    timesteps = scheduler.timesteps.tolist()
    assert timesteps[0] == timesteps[1]  # the case under test
    x = torch.randn(1, 4, 8, 8) * scheduler.init_noise_sigma
    generator = torch.Generator().manual_seed(0)
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(x, t)
        x = scheduler.step(0.1 * model_in, t, x, **S.step_kwargs(scheduler, generator=generator)).prev_sample
    assert scheduler.step_index == len(timesteps)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("sampler", [*FORMERLY_INDEX_ERROR, "DPM2", "DPM2 a"])
def test_formerly_failing_samplers_make_images_at_21_steps(model, sampler):
    image = run(model, sampler_name=sampler, steps=21).images[0].image
    pixels = np.asarray(image, dtype=np.float32)
    assert np.isfinite(pixels).all() and pixels.std() > 10


def test_dpmpp_2m_karras_does_not_wash_out(model):
    """3 of 6 images came out nearly white (purple background lost) with the clamped sigma_max."""
    prompt = "a large green triangle in the center, purple background"
    found = [
        read_attributes(
            run(model, prompt=prompt, seed=seed, sampler_name="DPM++ 2M", steps=20).images[0].image
        )
        for seed in range(1, 7)
    ]
    assert sum(f.background == "purple" for f in found) >= 5, found
    assert sum(f.colour == "green" for f in found) >= 5, found


def test_a_schedule_diffusers_cannot_build_is_an_honest_4xx(model):
    """DPM2 a, 2 Uniform steps: diffusers' ancestral sigma_down cancels to 0 in float32 (NaN timestep)."""
    with pytest.raises(S.UnsupportedScheduleError, match="NaN"):
        run(model, sampler_name="DPM2 a", scheduler="Uniform", steps=2)


def test_nan_hint_names_half_precision_only_when_it_was_half():
    nan = torch.full((1, 4, 8, 8), float("nan"))
    with pytest.raises(vae.NaNLatentsError, match="float32, so this is not a half-precision") as err:
        vae.check_finite(nan, "U-Net", torch.float32)
    assert "--no-half" not in str(err.value)
    with pytest.raises(vae.NaNLatentsError, match="--no-half"):
        vae.check_finite(nan, "U-Net", torch.float16)
    with pytest.raises(vae.NaNLatentsError, match="--no-half-vae"):
        vae.check_finite(nan, "VAE", torch.float16)
    with pytest.raises(vae.NaNLatentsError):
        vae.check_finite(torch.full((1,), float("inf")), "U-Net", torch.float32)
    vae.check_finite(torch.zeros(1), "U-Net", torch.float32)


def test_extreme_emphasis_is_a_request_error_not_nan(model):
    with pytest.raises(RequestError, match="emphasis weight 4.97e\\+20 of 'a'") as err:
        run(model, prompt="(" * 500 + "a" + ")" * 500, steps=1)
    assert err.value.field == "prompt"
    # the bound itself works
    image = run(model, prompt=f"(a red circle:{MAX_EMPHASIS:g})", steps=1).images[0].image
    assert np.isfinite(np.asarray(image, dtype=np.float32)).all()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("zero-snr-api")
    with start_server(data_dir, ["--use-cpu", "all", "--ckpt", str(CHECKPOINT_PATH)]) as srv:
        yield srv


def _txt2img(server, **fields):
    body = {"prompt": "a red circle", "seed": 1, "width": 64, "height": 64, "steps": 21, **fields}
    return requests.post(server.api + "/txt2img", json=body, timeout=300)


def test_api_formerly_500_samplers_answer_200(server):
    answer = _txt2img(server, sampler_name="DPM++ 2M", scheduler="Karras")
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["images"]) == 1
    info = json.loads(answer.json()["info"])
    assert info["sampler_name"] == "DPM++ 2M" and info["steps"] == 21


def test_api_request_faults_are_4xx_with_a_true_message(server):
    answer = _txt2img(server, sampler_name="DPM2 a", scheduler="Uniform", steps=2)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "scheduler" and "NaN" in answer.json()["detail"]
    answer = _txt2img(server, prompt="(" * 500 + "a" + ")" * 500, steps=1)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["field"] == "prompt" and "emphasis" in body["detail"] and "half" not in body["detail"]
