"""Saving the images of a job that ran on a remote worker, in the front process.

Workers never write outputs (they run with `do_not_save_samples`); the front saves each image with the
infotext the worker's engine wrote, its own settings and the same file-name fields the engine would use,
so outputs land in one place and a job that a dead worker left half done saves nothing.
"""

from __future__ import annotations

import datetime as dt

from sdwebui.engine.hooks import EngineHooks, ImageSaveArgs, JobState
from sdwebui.engine.requests import GenerationResult, Img2ImgRequest, Txt2ImgRequest
from sdwebui.engine.saving import filename_fields, save_generated
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.lease import ModelUsed

TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"


def save_remote_result(
    result: GenerationResult,
    ran_on: ModelUsed,
    asked: Txt2ImgRequest,
    settings: EngineSettings,
    hooks: EngineHooks | None = None,
) -> None:
    """Save `result`'s images as the engine would have (unless the request or the settings say not to),
    recording each file's path on its image. `asked`: the request as submitted (its own saving flag);
    `hooks`: the extensions' before_image_saved / image_saved, called around each file as in process."""
    if not settings.save_images or asked.do_not_save_samples or not result.images:
        return
    request = result.request or asked
    state = JobState(
        request=request,
        all_prompts=result.prompts,
        all_negative_prompts=result.negative_prompts,
        all_seeds=result.seeds,
        all_subseeds=result.subseeds,
    )
    try:
        started = dt.datetime.strptime(result.job_timestamp, TIMESTAMP_FORMAT)
    except ValueError:
        started = dt.datetime.now()
    kind = "img2img-images" if isinstance(request, Img2ImgRequest) else "txt2img-images"
    hooks = hooks or EngineHooks()
    for index, item in enumerate(result.images):
        args = ImageSaveArgs(state, index, item.image, item.infotext)
        if hooks.before_image_saved is not None:
            hooks.before_image_saved(args)  # may change what is written (not the image the job returns)
        # ModelUsed has what the file-name fields read of a model: its info and VAE name
        fields = filename_fields(ran_on, request, state, index, args.image, started)
        args.path = item.saved_path = str(save_generated(args.image, args.infotext, fields, settings, kind))
        if hooks.image_saved is not None:
            hooks.image_saved(args)
