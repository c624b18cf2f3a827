"""Generating with the default model for benchmarks and tests: through the engine, as the app does.

``load`` goes through the same loader as user checkpoints. The engine's txt2img/img2img entry
``sdwebui.engine.generate.generate`` is used with A1111-style requests; ``diffusers_generate`` is a
plain diffusers pipeline over the same modules, kept as a reference for comparison.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from sdwebui.models.default_model import CHECKPOINT_PATH, pipeline
from sdwebui.models.model import LoadedModel

DEFAULT_SAMPLER = "Euler"
DEFAULT_STEPS = 20


def load(path: Path = CHECKPOINT_PATH) -> LoadedModel:
    from sdwebui.models.discovery import checkpoint_info
    from sdwebui.models.loader import load_checkpoint

    if not Path(path).is_file():
        raise FileNotFoundError(f"default model checkpoint not found at {path}")
    return load_checkpoint(checkpoint_info(Path(path)))


def _run(model: LoadedModel, request):
    from sdwebui.engine.context import JobContext
    from sdwebui.engine.generate import generate
    from sdwebui.engine.settings import EngineSettings

    return generate(model, request, JobContext(), EngineSettings(save_images=False)).pil_images


def engine_txt2img(
    model: LoadedModel,
    prompts: list[str],
    seeds: list[int],
    negative_prompts: list[str] | None = None,
    cfg_scale: float = 7.0,
    steps: int = DEFAULT_STEPS,
    sampler_name: str = DEFAULT_SAMPLER,
) -> list[Image.Image]:
    """One engine job per (prompt, seed); the image of seed s is the same as the web UI's for seed s."""
    from sdwebui.engine.requests import Txt2ImgRequest

    if len(prompts) != len(seeds):
        raise ValueError(f"prompts ({len(prompts)}) and seeds ({len(seeds)}) must have the same length")
    negatives = negative_prompts or [""] * len(prompts)
    size = model.native_resolution
    images: list[Image.Image] = []
    for prompt, seed, negative in zip(prompts, seeds, negatives, strict=True):
        request = Txt2ImgRequest(
            prompt=prompt,
            negative_prompt=negative,
            seed=seed,
            steps=steps,
            cfg_scale=cfg_scale,
            width=size,
            height=size,
            sampler_name=sampler_name,
            do_not_save_samples=True,
        )
        images += _run(model, request)
    return images


def engine_inpaint(
    model: LoadedModel,
    image: Image.Image,
    mask: Image.Image,
    prompt: str,
    seed: int,
    cfg_scale: float = 7.0,
    steps: int = DEFAULT_STEPS,
    denoising_strength: float = 1.0,
    sampler_name: str = DEFAULT_SAMPLER,
) -> Image.Image:
    """Inpaint the white part of ``mask`` (A1111 img2img inpaint, whole picture, original content)."""
    from sdwebui.engine.requests import Img2ImgRequest

    request = Img2ImgRequest(
        prompt=prompt,
        seed=seed,
        steps=steps,
        cfg_scale=cfg_scale,
        width=image.width,
        height=image.height,
        sampler_name=sampler_name,
        init_images=[image],
        mask=mask,
        mask_blur_x=0,
        mask_blur_y=0,
        denoising_strength=denoising_strength,
        do_not_save_samples=True,
    )
    return _run(model, request)[0]


def diffusers_generate(
    model: LoadedModel,
    prompts: list[str],
    seeds: list[int],
    negative_prompts: list[str] | None = None,
    cfg_scale: float = 7.0,
    steps: int = DEFAULT_STEPS,
) -> list[Image.Image]:
    pipe = pipeline.build_pipeline(model.unet, model.vae, model.text_encoders[0], model.scheduler_config)
    return pipeline.generate(pipe, prompts, seeds, negative_prompts, cfg_scale=cfg_scale, steps=steps)
