"""The models one batch's sampling passes run on: the job's own, and the other checkpoints its passes name
(the SDXL refiner, A1111's hr_checkpoint_name), leased through `EngineSettings.checkpoints` (the app's model
manager, so a checkpoint already in RAM within sd_checkpoints_limit is not loaded again) for the rest of the
batch's sampling, with their own prompt encoders: a refiner has other text encoders than its base.

Such a checkpoint gets the job's LoRA networks as a patch of its lease (sdwebui.engine.pass_networks: the
networks the batch activated, applied where they fit; one that fits nothing is named in the infotext). A
pass naming the job's own checkpoint runs on the job's view (its networks, VAE and U-Net add-ons).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack

from sdwebui.engine.conditioning import PromptEncoder
from sdwebui.engine.errors import RequestError
from sdwebui.engine.extra_networks import ACTIVE_KEY
from sdwebui.engine.pass_networks import PassNetworksPatch
from sdwebui.engine.passes import SamplingPass
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.embeddings_library import EmbeddingLibrary
from sdwebui.models.model import LoadedModel


def short_title(model: LoadedModel) -> str:
    """A1111's CheckpointInfo.short_title, as its infotext names a refiner / hires checkpoint."""
    info = model.info
    return f"{info.name} [{info.shorthash}]" if info.shorthash else info.name


def pass_checkpoints(sampling_pass: SamplingPass) -> list[str]:
    """The other checkpoints a pass needs (its own, its refiner's)."""
    names = [sampling_pass.checkpoint] if sampling_pass.checkpoint else []
    return names + ([sampling_pass.refiner.checkpoint] if sampling_pass.refiner is not None else [])


class PassModels:
    """Leases entered on `leases` (the caller's ExitStack) the first time a checkpoint is asked for."""

    def __init__(
        self,
        job_model: LoadedModel,
        settings: EngineSettings,
        clip_skip: int,
        embeddings: EmbeddingLibrary | None,
        leases: ExitStack,
        on_skipped: Callable[[str, LoadedModel], None] = lambda name, model: None,
    ):
        self.job_model = job_model
        self._on_skipped = on_skipped  # (LoRA file, checkpoint): a network that fits nothing there
        self._settings = settings
        self._clip_skip = clip_skip
        self._embeddings = embeddings
        self._leases = leases
        self._held: dict[str, LoadedModel] = {}
        self._encoders: dict[int, PromptEncoder] = {}

    def model(self, name: str | None, field_name: str = "refiner_checkpoint") -> LoadedModel:
        """The job's model for None, else the named checkpoint's leased view."""
        if not name:
            return self.job_model
        if name not in self._held:
            if self._settings.checkpoints is None:
                raise RequestError(field_name, f"cannot switch to checkpoint {name!r}: no model manager")
            view = self._leases.enter_context(self._lease(name, field_name))
            # the job's own checkpoint named again: the job's view (its networks, VAE and add-ons)
            self._held[name] = self.job_model if view.unet is self.job_model.unet else view
        return self._held[name]

    def _lease(self, name: str, field_name: str) -> AbstractContextManager[LoadedModel]:
        checkpoints = self._settings.checkpoints
        assert checkpoints is not None
        active = self.job_model.extra.get(ACTIVE_KEY)
        if active is None or not active.weights:
            return checkpoints.use(name, field_name)
        return checkpoints.use(name, field_name, [PassNetworksPatch(active, self._on_skipped)])

    def encoder(self, model: LoadedModel) -> PromptEncoder:
        """`model`'s own prompt encoder (one per model for the batch: its cache is shared by the passes)."""
        encoder = self._encoders.get(id(model))
        if encoder is None:
            encoder = self._encoders[id(model)] = PromptEncoder(model, self._clip_skip, self._embeddings)
        return encoder
