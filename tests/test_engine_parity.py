"""The engine's txt2img equals diffusers.StableDiffusionPipeline on the same tiny SD1 weights.

Both get the same scheduler config, the same initial noise and the same prompt embeddings (ours, passed as
prompt_embeds, so this compares the loops, not the text encoders). For "Euler a" the pipeline also gets the
engine's per-image CPU generators in the state they are in after drawing the initial noise, so its ancestral
noise is the same stream and the comparison is exact too.
"""

from __future__ import annotations

import numpy as np
import pytest
from diffusers import StableDiffusionPipeline

from modules.rng import ImageRNG
from sdwebui.engine import samplers
from sdwebui.engine.conditioning import PromptEncoder
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings


@pytest.mark.parametrize(
    ("family", "sampler"), [("sd1", "Euler"), ("sd1", "Euler a"), ("sd1", "DPM++ 2M"), ("sd2-v", "DPM++ 2M")]
)
def test_txt2img_matches_stable_diffusion_pipeline(tiny_model_factory, family, sampler):
    model = tiny_model_factory(family)  # sd2-v: v-prediction through the same loop
    req = Txt2ImgRequest(
        prompt="a cat",
        negative_prompt="blurry",
        sampler_name=sampler,
        seed=5,
        batch_size=2,
        steps=4,
        cfg_scale=6.0,
        width=64,
        height=64,
    )
    ours = generate(model, req, JobContext(), EngineSettings(save_images=False))

    pipe = StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoders[0],
        tokenizer=model.tokenizers[0],
        unet=model.unet,
        scheduler=samplers.create_scheduler(sampler, "Automatic", model.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    rng = ImageRNG([5, 6], (4, 8, 8))
    noise = rng.first()
    encoder = PromptEncoder(model)
    theirs = pipe(
        prompt_embeds=encoder.encode(["a cat"] * 2).embeds,
        negative_prompt_embeds=encoder.encode(["blurry"] * 2).embeds,
        latents=noise,
        generator=rng.generators,
        num_inference_steps=4,
        guidance_scale=6.0,
        height=64,
        width=64,
        output_type="np",
    ).images
    for image, reference in zip(ours.pil_images, theirs, strict=True):
        ours_float = np.asarray(image, dtype=np.float32) / 255
        assert np.abs(ours_float - reference).max() <= 1.5 / 255
