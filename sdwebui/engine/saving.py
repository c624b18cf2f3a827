"""Saving one finished image of a job the way the user's settings say (folder, name pattern, format, infotext)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from PIL import Image

from sdwebui.engine.hooks import JobState
from sdwebui.engine.requests import Img2ImgRequest, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.model import LoadedModel
from sdwebui.outputs.filename_pattern import FilenameFields
from sdwebui.outputs.image_saving import dated_output_dir, save_image


def filename_fields(
    model: LoadedModel,
    request: Txt2ImgRequest,
    state: JobState,
    index: int,
    image: Image.Image,
    started: dt.datetime,
) -> FilenameFields:
    """The values of A1111's file-name tags for image `index` of the job."""
    info = model.info
    return FilenameFields(
        seed=state.all_seeds[index],
        prompt=state.all_prompts[index],
        prompt_no_styles=request.prompt,
        negative_prompt=state.all_negative_prompts[index],
        styles=list(request.styles),
        steps=request.steps,
        cfg_scale=request.cfg_scale,
        width=request.width,
        height=request.height,
        sampler=request.sampler_name,
        scheduler=request.scheduler,
        model_name=Path(info.name).name,
        model_hash=info.shorthash or "",
        vae_filename=Path(model.vae_name).name if model.vae_name else "",
        clip_skip=request.clip_skip,
        denoising=request.denoising_strength if isinstance(request, Img2ImgRequest) else None,
        batch_index=index % request.batch_size,
        batch_size=request.batch_size,
        iteration=index // request.batch_size,
        n_iter=request.n_iter,
        all_seeds=list(state.all_seeds),
        job_timestamp=started,
        image=image,
    )


def save_generated(
    image: Image.Image,
    infotext: str | None,
    fields: FilenameFields,
    settings: EngineSettings,
    output_kind: str,
) -> Path:
    """Write the image under `<outputs>/<kind>/YYYY-MM-DD/` as samples_format / samples_filename_pattern /
    save_images_add_number / enable_pnginfo say."""
    directory = dated_output_dir(Path(settings.outputs_root), output_kind)
    return save_image(
        image,
        directory,
        fields.seed,
        infotext if settings.enable_pnginfo else None,
        extension=settings.samples_format,
        filename_pattern=settings.filename_pattern,
        fields=fields,
        add_number=settings.add_number,
    )
