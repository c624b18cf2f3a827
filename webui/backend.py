"""The UI's one view of the app services: lists for dropdowns, job submission, settings, tokens.

Tabs call this instead of reaching into services, so the tabs stay plain layout + event wiring.
"""

from __future__ import annotations

import contextvars
import logging
from pathlib import Path
from typing import Any

from sdwebui.config.resolve import RawFields, SettingsSource, resolve
from sdwebui.engine.requests import Img2ImgRequest, RequestError, Txt2ImgRequest
from sdwebui.jobs.queue import Job, JobQueue
from webui.gallery_files import GalleryFiles

log = logging.getLogger(__name__)


class UiBackend:
    def __init__(self, services: Any):
        self.services = services
        self._tokenizer = None  # built on first use: every SD family counts with CLIP's BPE
        self.gallery_files = GalleryFiles()  # gallery images as fully written files (see gallery_files)

    # --- shared objects ---
    @property
    def options(self):
        return self.services.options

    @property
    def jobs(self) -> JobQueue:
        return self.services.jobs

    @property
    def styles(self):
        return self.services.styles

    @property
    def outputs_dir(self) -> Path:
        return Path(self.services.paths.outputs_dir)

    @property
    def dir_config_allowed(self) -> bool:
        from sdwebui.config.flags import ui_dir_config_allowed

        args = getattr(self.services, "args", None)
        return True if args is None else ui_dir_config_allowed(args)

    def extras_dir(self) -> Path:
        """Where the Extras tab saves: the `outdir_extras_samples` setting (relative to the data dir)."""
        configured = self.options.get("outdir_extras_samples", "") or ""
        folder = Path(configured).expanduser() if configured else self.outputs_dir / "extras-images"
        return folder if folder.is_absolute() else Path(self.services.paths.data_dir) / folder

    # --- lists for dropdowns ---
    def samplers(self) -> list[str]:
        from sdwebui.engine import samplers

        return samplers.sampler_names()

    def schedulers(self) -> list[str]:
        from sdwebui.engine import samplers

        return [info.label for info in samplers.SCHEDULE_TYPES if info.available]

    def checkpoints(self) -> list[str]:
        return list(self.services.models.checkpoint_titles())

    def refresh_checkpoints(self) -> list[str]:
        self.services.models.refresh()
        return self.checkpoints()

    def current_checkpoint(self) -> str | None:
        return self.services.models.current_title()

    def effective_checkpoint(self) -> str | None:
        """The loaded checkpoint, else the one the first job will load (--ckpt, else the first found)."""
        current = self.current_checkpoint()
        if current:
            return current
        models = self.services.models
        try:
            infos = list(models.checkpoints())
        except Exception:
            return None
        preferred = getattr(models, "preferred", None)
        wanted = Path(preferred).resolve() if preferred else None
        chosen = next((i for i in infos if wanted is not None and Path(i.path).resolve() == wanted), None)
        chosen = chosen or (infos[0] if infos else None)
        return chosen.title if chosen is not None else None

    def vaes(self) -> list[str]:
        return ["Automatic", "None", *self.services.models.vae_names()]

    # --- jobs ---
    def resolve(self, raw: RawFields) -> Txt2ImgRequest:
        """A tab's fields -> the validated request, through the same resolution as the API: the settings
        (Clip skip, default sampler, noise multiplier...) are applied there; RequestError names a bad field."""
        return resolve(raw, self.options, None, SettingsSource(styles=self.styles)).request

    def submit(self, request: Txt2ImgRequest, script_call: Any = None) -> Job:
        """Validate and queue a generation (with the tab's script selection); RequestError names the bad field.

        Runs in an empty context: inside a Gradio event, Gradio's context variables turn component
        constructors into updates, which breaks scripts that build their ui() headlessly while preparing.
        """
        request.validate()
        return contextvars.Context().run(self.services.submit_generation, request, script_call=script_call)

    def upscaler_models(self) -> Any:
        """The upscaler model files (ESRGAN, ...) jobs can use; None for services without any."""
        upscalers = getattr(self.services, "upscalers", None)
        return upscalers() if upscalers is not None else None

    def native_resolution(self) -> int:
        """Side of the current (or first) checkpoint's native image size: 512 SD1, 768 SD2-v, 1024 SDXL."""
        from webui.model_size import native_resolution

        return native_resolution(self.services.models)

    def family_defaults(self) -> Any:
        """The `FamilyDefaults` (sampler, steps, CFG, distilled CFG) of the model the UI generates with."""
        from webui.model_size import family_defaults

        return family_defaults(self.services.models)

    def set_option(self, key: str, value: Any) -> bool:
        """Change one setting through the job queue (it may load a model) and persist config.json."""
        return bool(self.services.set_options({key: value}))

    def set_options(self, values: dict[str, Any]) -> list[str]:
        return list(self.services.set_options(values))

    # --- prompts ---
    def count_tokens(self, text: str, is_positive: bool = True) -> tuple[int, int]:
        """(tokens, limit): the limit grows in 75-token chunks as A1111's counter does."""
        from sdwebui.engine.conditioning import EmbeddingVocabulary, count_tokens

        if self._tokenizer is None:
            from sdwebui.models.tokenizer import build_clip_tokenizer

            self._tokenizer = build_clip_tokenizer()
        # an embedding's name counts as its vectors (those of the current model)
        library = getattr(self.services, "embeddings", None)
        models = getattr(self.services, "models", None)
        embeddings = library.counted(getattr(models, "current", None)) if library is not None else {}
        vocabulary = EmbeddingVocabulary(self._tokenizer, embeddings) if embeddings else None
        return count_tokens(text, self._tokenizer, is_positive=is_positive, vocabulary=vocabulary)


def describe_error(exc: BaseException) -> str:
    """A readable one-line message for the UI."""
    if isinstance(exc, RequestError):
        return f"Invalid {exc.field}: {exc.reason}"
    message = getattr(exc, "message", None)  # gr.Error keeps its text here
    return str(message or exc) or type(exc).__name__


__all__ = ["UiBackend", "describe_error", "Img2ImgRequest", "Txt2ImgRequest"]
