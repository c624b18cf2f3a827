"""Every sampler x every schedule type x 1, 2, 21, 30, 50 steps through the engine: a finite, non-blank
image, or an honest UnsupportedScheduleError / SamplerUnavailableError (HTTP 422) for a combination that
cannot run. In CI the tiny SD1 / SD2-v models run every sampler x schedule at 1, 2 and 21 steps (21: the
first count where diffusers repeated timestep 999), tiny SDXL at 1 and 2, and the default model
(zero-terminal-SNR, v-prediction, a far bigger U-Net) every sampler at 1, 2 and 21 steps with its own
schedule: about 1.5 CPU minutes. The rest (30 and 50 steps, the default model's whole matrix) is
`@pytest.mark.slow`: several CPU minutes more.
"""

from __future__ import annotations

import numpy as np
import pytest

from sdwebui.engine import default_model_runs as backends
from sdwebui.engine import samplers as S
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from tests import tiny_models

STEPS = (1, 2, 21, 30, 50)
FAST_STEPS = (1, 2, 21)
HONEST = (S.UnsupportedScheduleError, S.SamplerUnavailableError)


def _generate_all(model, sampler: str, schedule: str, steps_list) -> dict[int, str]:
    """steps -> "" (a good image) or why not; honest refusals are "refused: <message>"."""
    outcome: dict[int, str] = {}
    for steps in steps_list:
        request = Txt2ImgRequest(
            prompt="a red circle",
            seed=1,
            steps=steps,
            width=64,
            height=64,
            cfg_scale=7.0,
            sampler_name=sampler,
            scheduler=schedule,
            do_not_save_samples=True,
        )
        try:
            image = generate(model, request, JobContext(), EngineSettings(save_images=False)).images[0].image
        except HONEST as err:
            outcome[steps] = f"refused: {err}"
            continue
        pixels = np.asarray(image, dtype=np.float32)
        outcome[steps] = (
            "" if np.isfinite(pixels).all() and pixels.std() > 1.0 else f"blank (std {pixels.std()})"
        )
    return outcome


def _check(outcome: dict[int, str], sampler: str, schedule: str) -> None:
    for steps, why in outcome.items():
        if why.startswith("refused: "):
            # an honest refusal names the reason: the combination, a missing package or diffusers' limit
            assert "schedule type" in why or "needs the python package" in why or "NaN" in why, (steps, why)
        else:
            assert why == "", (sampler, schedule, steps, why)


def _combos():
    return [(sampler.name, schedule.label) for sampler in S.SAMPLERS for schedule in S.SCHEDULE_TYPES]


@pytest.fixture(scope="module")
def tiny():
    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = tiny_models.tiny_loaded_model(family)
        return cache[family]

    return get


def _check_tiny(model, sampler: str, schedule: str, steps_list) -> None:
    outcome = _generate_all(model, sampler, schedule, steps_list)
    _check(outcome, sampler, schedule)
    # a combination is refused at every step count or at none, except diffusers' own NaN schedules
    refused = {steps for steps, why in outcome.items() if why.startswith("refused: ") and "NaN" not in why}
    assert refused in (set(), set(steps_list)), outcome


# SDXL has SD1's training schedule (the same scheduler, step for step): in CI it runs 1 and 2 steps only.
FAST_TINY_STEPS = {"sd1": FAST_STEPS, "sd2-v": FAST_STEPS, "sdxl": (1, 2)}


@pytest.mark.parametrize("family", list(FAST_TINY_STEPS))
@pytest.mark.parametrize("sampler,schedule", _combos())
def test_tiny_models_every_sampler_and_schedule(tiny, family, sampler, schedule):
    _check_tiny(tiny(family), sampler, schedule, FAST_TINY_STEPS[family])


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAST_TINY_STEPS))
@pytest.mark.parametrize("sampler,schedule", _combos())
def test_tiny_models_every_sampler_and_schedule_at_more_steps(tiny, family, sampler, schedule):
    _check_tiny(tiny(family), sampler, schedule, tuple(s for s in STEPS if s not in FAST_TINY_STEPS[family]))


@pytest.fixture(scope="module")
def default_model():
    return backends.load()


@pytest.mark.parametrize("sampler", [s.name for s in S.SAMPLERS])
def test_default_model_every_sampler_at_1_2_and_21_steps(default_model, sampler):
    _check(_generate_all(default_model, sampler, "Automatic", (1, 2, 21)), sampler, "Automatic")


@pytest.mark.slow
@pytest.mark.parametrize("sampler,schedule", _combos())
def test_default_model_every_sampler_schedule_and_step_count(default_model, sampler, schedule):
    _check(_generate_all(default_model, sampler, schedule, STEPS), sampler, schedule)
