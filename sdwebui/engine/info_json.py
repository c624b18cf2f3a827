"""A1111's "info" JSON of a generation, built in one place: the API's `info` string and the facade's
`Processed.js()` are both an `InfoJson` record, so their keys, order and values agree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sdwebui.engine.requests import GenerationResult, Img2ImgRequest, Txt2ImgRequest

VERSION = "sdwebui-0.1.0"
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"  # A1111's job_timestamp


@dataclass(frozen=True)
class ModelNames:
    """The checkpoint (and separate VAE) a job ran on, as the info JSON names them."""

    sd_model_name: str | None = None
    sd_model_hash: str | None = None
    sd_vae_name: str | None = None
    sd_vae_hash: str | None = None
    is_inpainting: bool = False


@dataclass
class InfoJson:
    """A1111's info keys in A1111's order (plus `interrupted`, which our API has always sent)."""

    prompt: str
    all_prompts: list[str]
    negative_prompt: str
    all_negative_prompts: list[str]
    seed: int
    all_seeds: list[int]
    subseed: int
    all_subseeds: list[int]
    subseed_strength: float
    width: int | None
    height: int | None
    sampler_name: str
    cfg_scale: float
    steps: int
    batch_size: int
    restore_faces: bool
    face_restoration_model: str | None
    sd_model_name: str | None
    sd_model_hash: str | None
    sd_vae_name: str | None
    sd_vae_hash: str | None
    seed_resize_from_w: int
    seed_resize_from_h: int
    denoising_strength: float | None
    extra_generation_params: dict[str, Any]
    index_of_first_image: int
    infotexts: list[str]
    styles: list[str]
    job_timestamp: str
    clip_skip: int
    is_using_inpainting_conditioning: bool
    version: str = VERSION
    interrupted: bool = False
    # the job's memory high-water marks: ram_peak_rss, and cuda_peak_allocated / _reserved on CUDA (bytes)
    peak_memory: dict[str, int] = dataclasses.field(default_factory=dict)
    memory_mode: str | None = None  # the memory plan the job ran with (auto, medvram, lowvram ...)
    worker: str | None = None  # the pool worker that ran the job (our addition; left out without a pool)

    def dumps(self) -> str:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if values["worker"] is None:
            del values["worker"]
        return json.dumps(values, default=str)

    @classmethod
    def from_attributes(cls, source: Any, **values: Any) -> InfoJson:
        """From an object with A1111's attribute names (the facade's Processed); `values` win."""
        names = [f.name for f in dataclasses.fields(cls)]
        found = {name: getattr(source, name) for name in names if hasattr(source, name)}
        return cls(**{**found, **values})


def from_result(
    result: GenerationResult, request: Txt2ImgRequest, model: ModelNames, job_timestamp: str | None = None
) -> InfoJson:
    """The info of an engine result: first-image values plus the per-image lists."""
    first = result.images[0] if result.images else None
    is_img2img = isinstance(request, Img2ImgRequest)
    stamp = job_timestamp or result.job_timestamp or dt.datetime.now().strftime(TIMESTAMP_FORMAT)
    return InfoJson(
        prompt=first.prompt if first else request.prompt,
        all_prompts=result.prompts,
        negative_prompt=first.negative_prompt if first else request.negative_prompt,
        all_negative_prompts=result.negative_prompts,
        seed=first.seed if first else request.seed,
        all_seeds=result.seeds,
        subseed=first.subseed if first else request.subseed,
        all_subseeds=result.subseeds,
        subseed_strength=request.subseed_strength,
        width=request.width,
        height=request.height,
        sampler_name=request.sampler_name,
        cfg_scale=request.cfg_scale,
        steps=request.steps,
        batch_size=request.batch_size,
        restore_faces=request.restore_faces,
        face_restoration_model=None,
        sd_model_name=model.sd_model_name,
        sd_model_hash=model.sd_model_hash,
        sd_vae_name=model.sd_vae_name,
        sd_vae_hash=model.sd_vae_hash,
        seed_resize_from_w=request.seed_resize_from_w,
        seed_resize_from_h=request.seed_resize_from_h,
        denoising_strength=request.denoising_strength if is_img2img else None,
        extra_generation_params=dict(request.extra_generation_params),
        index_of_first_image=0,
        infotexts=result.infotexts,
        styles=list(request.styles),
        job_timestamp=stamp,
        clip_skip=request.clip_skip,
        is_using_inpainting_conditioning=model.is_inpainting and is_img2img,
        interrupted=result.interrupted,
        peak_memory=dict(result.peak_memory),
        memory_mode=result.memory_mode,
    )
