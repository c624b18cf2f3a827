"""The typed record of one txt2img / img2img job: what was asked, the lease it holds, what it ran on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from sdwebui.engine.context import JobContext
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.models.lease import ModelLease, ModelUsed
from sdwebui.models.model import LoadedModel


@dataclass
class GenerationJob:
    """Lives on `Job.generation`; the result stays the engine's GenerationResult on `Job.result`."""

    request: Txt2ImgRequest  # as submitted (an Img2ImgRequest for img2img)
    kind: str  # "txt2img" or "img2img"
    stack: str = ""  # the worker stack it was submitted to
    ctx: JobContext | None = None  # set when the job starts
    lease: ModelLease | None = None  # the lease held right now (None before and after the job)
    ran_on: ModelUsed | None = None  # the model of the last (sub-)run, for the response's info
    payload: Any = None  # the API payload (sdwebui.api.models), kept for the deferred async response

    @property
    def model(self) -> LoadedModel | None:
        """The job's model while it runs (its live previews decode with it)."""
        return self.lease.model if self.lease is not None else None

    @contextmanager
    def holding(self, lease: ModelLease) -> Iterator[LoadedModel]:
        """Enter `lease` for this job. A script's sub-run asking for what the job already holds (same
        checkpoint, VAE and patches) reuses the held model; another lease nests, and the outer one is the
        job's again when it ends. A nested lease of the same shared model runs with the outer lease's
        patches suspended, so each (sub-)run sees exactly its own patches, none applied twice."""
        outer = self.lease
        if outer is not None and outer.model is not None and outer.key == lease.key:
            yield outer.model
            return
        same_model = outer is not None and outer.model is not None and outer.shared is lease.shared
        with outer.suspended() if same_model else nullcontext(), lease as model:
            self.lease, self.ran_on = lease, lease.used
            try:
                yield model
            finally:
                self.lease = outer
