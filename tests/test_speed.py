"""Speed settings through `generate` on the tiny models: s_min_uncond skips the uncond forward below its sigma."""

from __future__ import annotations

import numpy as np

from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings


def run_counting_rows(model, **settings) -> tuple[list[int], object]:
    rows: list[int] = []
    handle = model.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        request = Txt2ImgRequest(
            prompt="a cat",
            negative_prompt="blurry",
            seed=3,
            steps=6,
            width=64,
            height=64,
            sampler_name="Euler",
        )
        result = generate(model, request, JobContext(), EngineSettings(save_images=False, **settings))
    finally:
        handle.remove()
    return rows, result


def test_s_min_uncond_skips_the_uncond_forward_below_the_sigma(tiny_sd1_model):
    rows, plain = run_counting_rows(tiny_sd1_model)
    assert rows == [2] * 6  # batched CFG: uncond + cond in one forward per step
    rows, skipped = run_counting_rows(tiny_sd1_model, s_min_uncond=1.0)
    # Euler's 6 sigmas from ~14.6 down: the low-noise tail runs the cond row alone
    assert rows[0] == 2 and rows[-1] == 1 and 0 < rows.count(1) < 6
    assert "NGMS: 1," in skipped.images[0].infotext and "NGMS" not in plain.images[0].infotext
    first, second = (np.asarray(r.images[0].image, dtype=np.int16) for r in (plain, skipped))
    assert not np.array_equal(first, second)
    rows, _ = run_counting_rows(tiny_sd1_model, s_min_uncond=100.0)
    assert rows == [1] * 6
