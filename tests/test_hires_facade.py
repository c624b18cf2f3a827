"""Hires. fix from an extension: `StableDiffusionProcessingTxt2Img(enable_hr=True, ...)` through the facade's
`process_images` runs both passes, with A1111's before_hr and process_before_every_sampling for the second one,
and a request with hires fix shows its fields on `p`."""

from __future__ import annotations

import numpy as np

from modules import processing, scripts
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.hires import HiresFix
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings


class HiresProbe(scripts.Script):
    calls: list = []

    def title(self):
        return "Hires probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def before_hr(self, p, *args):
        HiresProbe.calls.append(("before_hr", p.is_hr_pass, p.hr_upscaler))

    def process_before_every_sampling(self, p, *args, **kwargs):
        HiresProbe.calls.append(("sampling", p.is_hr_pass, tuple(kwargs["x"].shape[2:])))


def test_enable_hr_from_an_extension_runs_both_passes_with_before_hr(tiny_sd1_model):
    classes = [scripts.ScriptClassData(HiresProbe, "/x/probe.py", "/x", None, "probe")]
    runner = scripts.ScriptRunner(classes)
    runner.ensure_ui()

    def engine(req, hooks):
        return generate(tiny_sd1_model, req, JobContext(), EngineSettings(save_images=False), hooks)

    p = processing.StableDiffusionProcessingTxt2Img(
        prompt="a", seed=1, steps=2, width=64, height=64, sampler_name="Euler", enable_hr=True,
        hr_scale=1.5, hr_upscaler="Latent (nearest)", denoising_strength=0.5, hr_second_pass_steps=1,
    )  # fmt: skip
    p.scripts, p.script_args, p.engine_run = runner, [0], engine
    HiresProbe.calls = []
    processed = processing.process_images(p)
    assert processed.images[0].size == (96, 96)
    assert HiresProbe.calls == [
        ("sampling", False, (8, 8)),
        ("before_hr", True, "Latent (nearest)"),
        ("sampling", True, (12, 12)),
    ]
    assert "Hires upscaler: Latent (nearest)" in processed.infotexts[0]
    p.enable_hr = False  # a script may switch it off: one pass
    assert np.asarray(processing.process_images(p).images[0]).shape == (64, 64, 3)


def test_a_request_with_hires_shows_its_fields_on_p():
    hires = HiresFix(hr_scale=1.5, hr_upscaler="Lanczos", denoising_strength=0.3, hr_checkpoint_name="b")
    p = processing.processing_from_request(Txt2ImgRequest(prompt="x", hires=hires, refiner_checkpoint="r"))
    assert (p.enable_hr, p.hr_scale, p.hr_upscaler, p.denoising_strength) == (True, 1.5, "Lanczos", 0.3)
    assert p.hr_sampler_name == "Use same sampler" and p.hr_checkpoint_name == "b"
    assert (p.refiner_checkpoint, p.refiner_switch_at) == ("r", 0.8)
    back = p.to_request()
    assert back.hires == hires and back.refiner_checkpoint == "r"
    assert processing.processing_from_request(Txt2ImgRequest()).enable_hr is False
