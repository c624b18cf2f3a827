"""The UI's one view of the app services: lists for dropdowns, job submission, settings, tokens.

Tabs call this instead of reaching into services, so the tabs stay plain layout + event wiring.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modules.engine.requests import Img2ImgRequest, RequestError, Txt2ImgRequest
from modules.jobs import Job, JobQueue

log = logging.getLogger(__name__)


class UiBackend:
    def __init__(self, services: Any):
        self.services = services
        self._tokenizer = None  # built on first use: every SD family counts with CLIP's BPE

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

    # --- lists for dropdowns ---
    def samplers(self) -> list[str]:
        from modules import samplers

        return samplers.sampler_names()

    def schedulers(self) -> list[str]:
        from modules import samplers

        return [info.label for info in samplers.SCHEDULE_TYPES if info.available]

    def checkpoints(self) -> list[str]:
        return list(self.services.models.checkpoint_titles())

    def refresh_checkpoints(self) -> list[str]:
        self.services.models.refresh()
        return self.checkpoints()

    def current_checkpoint(self) -> str | None:
        return self.services.models.current_title()

    def vaes(self) -> list[str]:
        return ["Automatic", "None", *self.services.models.vae_names()]

    # --- jobs ---
    def submit(self, request: Txt2ImgRequest) -> Job:
        """Validate and queue a generation; RequestError names the bad field."""
        request.validate()
        return self.services.submit_generation(request)

    def set_option(self, key: str, value: Any) -> bool:
        """Change one setting through the job queue (it may load a model) and persist config.json."""
        return bool(self.services.set_options({key: value}))

    def set_options(self, values: dict[str, Any]) -> list[str]:
        return list(self.services.set_options(values))

    # --- prompts ---
    def count_tokens(self, text: str, is_positive: bool = True) -> tuple[int, int]:
        """(tokens, limit): the limit grows in 75-token chunks as A1111's counter does."""
        from modules.conditioning import count_tokens

        if self._tokenizer is None:
            from modules.sd_models.tokenizer import build_clip_tokenizer

            self._tokenizer = build_clip_tokenizer()
        return count_tokens(text, self._tokenizer, is_positive=is_positive)


def describe_error(exc: BaseException) -> str:
    """A readable one-line message for the UI."""
    if isinstance(exc, RequestError):
        return f"Invalid {exc.field}: {exc.reason}"
    return str(exc) or type(exc).__name__


__all__ = ["UiBackend", "describe_error", "Img2ImgRequest", "Txt2ImgRequest"]
