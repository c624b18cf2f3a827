"""User settings the engine reads, as one typed object built by the app from its options store."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sdwebui.engine.face_restoration import FaceRestorationSettings
from sdwebui.engine.flow.slg import SkipLayerGuidance
from sdwebui.engine.memory.settings import MemorySettings
from sdwebui.engine.speed.settings import SpeedSettings
from sdwebui.engine.upscaling import ModelUpscalers
from sdwebui.models.controlnet import ControlNets
from sdwebui.models.embeddings_library import EmbeddingLibrary
from sdwebui.models.model import LoadedModel
from sdwebui.models.patches import Patch


class PromptStyles(Protocol):
    """What the engine needs of the styles database (sdwebui.config.styles.StyleDatabase)."""

    def apply_to_prompt(self, prompt: str, styles: list[str]) -> str: ...
    def apply_to_negative_prompt(self, prompt: str, styles: list[str]) -> str: ...


class PassCheckpoints(Protocol):
    """Other checkpoints a job's passes run on (the SDXL refiner, hr_checkpoint_name), through the app's model
    manager: `use` loads (or reuses, within sd_checkpoints_limit) and leases one for the rest of a batch."""

    def use(
        self, name: str, field_name: str, patches: Sequence[Patch] = ()
    ) -> AbstractContextManager[LoadedModel]:
        """The checkpoint's leased model with `patches` (the job's LoRA networks) applied; RequestError
        naming `field_name` when none is called `name`."""
        ...


@dataclass(frozen=True)
class EngineSettings:
    """What comes from user settings (A1111 option names in comments), not from the request."""

    outputs_root: Path = Path("outputs")  # outdir_samples root: <root>/txt2img-images/YYYY-MM-DD/
    save_images: bool = True  # samples_save
    samples_format: str = "png"  # samples_format: png, jpg, jpeg or webp
    filename_pattern: str = (
        "[seed]"  # samples_filename_pattern (A1111 tags, sdwebui.outputs.filename_pattern)
    )
    add_number: bool = True  # save_images_add_number: the NNNNN- prefix
    enable_pnginfo: bool = True  # enable_pnginfo: infotext in the PNG chunk / EXIF UserComment
    live_preview_every: int = 0  # show_progress_every_n_steps; 0 = no preview latents in StepInfo
    img2img_fix_steps: bool = False  # img2img_fix_steps: run exactly `steps` instead of int(s * steps)
    inpainting_mask_weight: float = 1.0  # inpainting_mask_weight, for 9-channel inpainting models
    img2img_extra_noise: float = 0.0  # img2img_extra_noise: noise added on top of the init latent's (0 = off)
    eta_ancestral: float = 1.0  # eta_ancestral: eta for ancestral samplers when the request has none
    eta_ddim: float = 0.0  # eta_ddim: eta for DDIM when the request has none
    eta_noise_seed_delta: int = 0  # eta_noise_seed_delta (ENSD): step noise from seed + delta
    version: str = ""  # "Version: ..." in the infotext; empty = omitted
    add_model_hash_to_info: bool = True  # add_model_hash_to_info
    add_model_name_to_info: bool = True  # add_model_name_to_info
    add_vae_to_info: bool = True  # add_vae_hash_to_info / add_vae_name_to_info
    # "batch": each batch conditioned, sampled, decoded in turn (A1111's hook order); "job": each stage over
    # all batches before the next one (memory modes: a component moves between devices once per job)
    stage_order: str = "batch"
    s_min_uncond: float = 0.0  # s_min_uncond: below this sigma the uncond forward is skipped ("NGMS")
    speed: SpeedSettings = SpeedSettings()  # fp8 weight storage, channels-last (sdwebui.engine.speed)
    skip_layer_guidance: SkipLayerGuidance = SkipLayerGuidance()  # SD3's SLG (sd3_slg_*; engine/flow/slg.py)
    memory: MemorySettings = MemorySettings()  # memory mode, VAE tiling and precision (sdwebui.engine.memory)
    styles: PromptStyles | None = None  # applied to the request's `styles` (A1111 applies them in processing)
    embeddings: EmbeddingLibrary | None = None  # textual-inversion embeddings written by name in prompts
    upscalers: ModelUpscalers | None = None  # upscaler model files (hires fix); None: plain resamplers only
    face_restoration: FaceRestorationSettings = (
        FaceRestorationSettings()
    )  # restore_faces (GFPGAN / CodeFormer)
    controlnets: ControlNets | None = None  # ControlNet / T2I-Adapter models (models/ControlNet); None: none
    checkpoints: PassCheckpoints | None = None  # refiner / hires checkpoints; None: the job's model only
