"""Request and response bodies with A1111's field names and shapes.

Requests are loose on purpose (real clients send extra keys and nulls): unknown keys are ignored and every
field is optional, `None` meaning "the default". Values are checked when mapped onto the engine's typed
requests (sdwebui.api.mapping), which names the field in a 422.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class LooseModel(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class ScriptArgs(LooseModel):
    args: list[Any] | None = None


class GenerationPayload(LooseModel):
    """Fields common to txt2img and img2img (StableDiffusionProcessingAPI)."""

    prompt: str | None = None
    negative_prompt: str | None = None
    styles: list[str] | None = None
    seed: int | None = None
    subseed: int | None = None
    subseed_strength: float | None = None
    seed_resize_from_h: int | None = None
    seed_resize_from_w: int | None = None
    sampler_name: str | None = None
    sampler_index: str | None = Field(default=None, description="deprecated alias of sampler_name")
    scheduler: str | None = None
    batch_size: int | None = None
    n_iter: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    distilled_cfg_scale: float | None = None  # Forge's, for Flux dev's guidance embedding
    width: int | None = None
    height: int | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = None
    do_not_save_grid: bool | None = None
    eta: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = None
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = None
    comments: dict[str, Any] | None = None
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list[Any] | None = None
    send_images: bool | None = None
    save_images: bool | None = None
    alwayson_scripts: dict[str, ScriptArgs | dict[str, Any]] | None = None
    infotext: str | None = None


class Txt2ImgPayload(GenerationPayload):
    enable_hr: bool | None = None
    denoising_strength: float | None = None
    firstphase_width: int | None = None
    firstphase_height: int | None = None
    hr_scale: float | None = None
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = None
    hr_resize_x: int | None = None
    hr_resize_y: int | None = None
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = None
    hr_negative_prompt: str | None = None
    hr_cfg: float | None = None


class Img2ImgPayload(GenerationPayload):
    init_images: list[str] | None = None
    resize_mode: int | None = None
    denoising_strength: float | None = None
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int | None = None
    mask_blur_y: int | None = None
    mask_blur: int | None = None
    mask_round: bool | None = None
    inpainting_fill: int | None = None
    inpaint_full_res: bool | int | None = None
    inpaint_full_res_padding: int | None = None
    inpainting_mask_invert: int | None = None
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool | None = None


class GenerationResponse(BaseModel):
    images: list[str] | None = Field(default=None, description="base64 PNGs with the infotext chunk")
    parameters: dict[str, Any]
    info: str = Field(description="JSON string with A1111's info keys")


class TaskSubmitted(BaseModel):
    task_id: str
    queue_position: int | None
    status_url: str


class TaskStatus(BaseModel):
    task_id: str
    kind: str
    status: str = Field(description="queued, running, done, failed or cancelled")
    queue_position: int | None = None
    progress: float
    eta_relative: float | None = None
    error: str | None = None
    result: GenerationResponse | None = None


class ExtrasBasePayload(LooseModel):
    resize_mode: int | None = None
    show_extras_results: bool | None = None
    gfpgan_visibility: float | None = None
    codeformer_visibility: float | None = None
    codeformer_weight: float | None = None
    upscaling_resize: float | None = None
    upscaling_resize_w: int | None = None
    upscaling_resize_h: int | None = None
    upscaling_crop: bool | None = None
    upscaler_1: str | None = None
    upscaler_2: str | None = None
    extras_upscaler_2_visibility: float | None = None
    upscale_first: bool | None = None
    # extensions' Extras scripts (scripts_postprocessing): {script name: {control name: value}}; not in A1111
    scripts: dict[str, Any] | None = None


class ExtrasSingleImagePayload(ExtrasBasePayload):
    image: str | None = None


class ExtrasFileData(LooseModel):
    data: str | None = None  # base64 image
    name: str | None = None


class ExtrasBatchImagesPayload(ExtrasBasePayload):
    imageList: list[ExtrasFileData] = []  # A1111 spells it so


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str | None = None


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


class RealesrganItem(BaseModel):
    name: str
    path: str | None = None
    scale: int | None = None


class PNGInfoPayload(LooseModel):
    image: str | None = None


class PNGInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = None
    textinfo: str | None = None
    current_task: str | None = None
    queue_size: int = 0


class InternalProgressRequest(LooseModel):
    id_task: str | None = None
    id_live_preview: int | None = -1
    live_preview: bool | None = True


class InternalProgressResponse(BaseModel):
    active: bool
    queued: bool
    completed: bool
    progress: float | None = None
    eta: float | None = None
    live_preview: str | None = None
    id_live_preview: int | None = None
    textinfo: str | None = None
    queue_position: int | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float | None = None
    need_inner_model: bool | None = None


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None
    error: str | None = None  # not in A1111: why a file found in an upscaler folder cannot be used


class LatentUpscalerModeItem(BaseModel):
    name: str


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None
    family: str | None = None  # ours: sd1, sdxl, flux-dev, sd3, ... (None: not a recognisable checkpoint)


class SDModuleItem(BaseModel):
    """Forge's /sdapi/v1/sd-modules: a VAE or text encoder file for forge_additional_modules."""

    model_name: str
    filename: str


class SDVaeItem(BaseModel):
    model_name: str
    filename: str


class PromptStyleItem(BaseModel):
    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class EmbeddingItem(BaseModel):
    step: int | None = Field(None, description="training steps, when the file records them")
    sd_checkpoint: str | None = Field(None, description="hash of the checkpoint it was trained on")
    sd_checkpoint_name: str | None = Field(None, description="name of the checkpoint it was trained on")
    shape: int = Field(description="vector width (SDXL: CLIP-L + bigG, 2048)")
    vectors: int = Field(description="number of vectors (tokens it takes in a prompt)")


class LoraItem(BaseModel):
    """One entry of /sdapi/v1/loras, as A1111's Lora extension lists it."""

    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class MemoryResponse(BaseModel):
    ram: dict[str, Any]
    cuda: dict[str, Any]
    workers: list[dict[str, Any]] | None = None  # per pool worker (--workers): id, ram, cuda


class ScriptsList(BaseModel):
    txt2img: list[str]
    img2img: list[str]


class ValidationErrorItem(BaseModel):
    loc: list[str]
    msg: str
    type: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body of the API (sdwebui.api.errors)."""

    error: str = Field(description="the kind of error, e.g. RequestError, ValidationError, QueueFull")
    detail: str = Field(description="what is wrong, naming the field")
    field: str | None = Field(default=None, description="the request field at fault, if one is")
    errors: list[ValidationErrorItem] | None = Field(default=None, description="every schema violation")
    task_id: str | None = Field(default=None, description="the task that failed or was cancelled")
