"""The app's models for jobs: ModelProvider over the model manager (titles, "current or default" loading
with fallback past broken checkpoints), and the refiner / hires checkpoints a job's later passes lease."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sdwebui.engine.requests import RequestError, Txt2ImgRequest
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.lease import ModelLease
from sdwebui.models.model import CheckpointInfo, LoadedModel
from sdwebui.models.patches import Patch
from sdwebui.models.provider import ModelProvider

log = logging.getLogger(__name__)


class ManagedModels:
    """ModelProvider over sdwebui.models.manager.ModelManager (titles, "current or default" loading)."""

    def __init__(self, manager: Any, preferred: str | None = None):
        self.manager = manager
        self.preferred = preferred
        # called with the model after a load that changed the current model (the extensions' on_model_loaded)
        self.load_listeners: list[Callable[[LoadedModel], None]] = []
        self.notices: list[str] = []  # checkpoints skipped because they cannot be loaded

    @property
    def current(self) -> LoadedModel | None:
        """The model the last load made current (what `shared.sd_model` shows); None before the first load."""
        return self.manager.current

    def checkpoints(self) -> list[CheckpointInfo]:
        return self.manager.checkpoints()

    def checkpoint_titles(self) -> list[str]:
        return [info.title for info in self.checkpoints()]

    def refresh(self) -> None:
        self.manager.refresh()

    def current_title(self) -> str | None:
        current = self.manager.current
        return current.info.title if current is not None else None

    def load(
        self, title: str | None = None, vae: str | None = None, modules: Sequence[str] = ()
    ) -> LoadedModel:
        """Load by title; without one, the default model: --ckpt, else the checkpoints in their listed order,
        the embedded model last, skipping (and reporting) any that cannot be loaded. Not "the current model":
        that may be another job's override. `vae`: "Automatic", "None" or a VAE name (None = "Automatic").
        `modules`: Forge's additional modules (VAE / text encoder files) of a Flux / SD3 checkpoint."""
        previous = self.manager.current
        model = self._load(title, vae or "Automatic", tuple(modules))
        if model is not previous:
            for listener in list(self.load_listeners):
                listener(model)
        return model

    def _load(self, title: str | None, vae: str, modules: tuple[str, ...] = ()) -> LoadedModel:
        if title:
            return self.manager.load(title, vae=vae, modules=modules)
        candidates: list[str | CheckpointInfo] = list(self.checkpoints())
        if self.preferred:
            candidates.insert(0, str(Path(self.preferred).resolve()))
        if not candidates:
            raise RuntimeError("no checkpoint found: put one in models/Stable-diffusion or pass --ckpt")
        failures: list[str] = []
        for candidate in candidates:
            try:
                model = self.manager.load(candidate, vae=vae, modules=modules)
            except (CheckpointLoadError, OSError) as exc:
                if names_the_vae(exc):
                    raise  # the request's VAE is unknown: no other checkpoint fixes that
                failures.append(str(exc))
                log.warning("skipping a checkpoint that cannot be loaded: %s", exc)
                continue
            if failures:
                self._notice(
                    f"Loaded {model.info.title} instead of a checkpoint that cannot be loaded: "
                    + "; ".join(failures)
                )
            return model
        raise CheckpointLoadError("no checkpoint can be loaded: " + "; ".join(failures))

    def _notice(self, text: str) -> None:
        log.warning("%s", text)
        if text not in self.notices:
            self.notices.append(text)

    def lease(
        self,
        title: str | None = None,
        vae: str | None = None,
        *,
        base_vae: str | None = None,
        patches: Sequence[Patch] = (),
    ) -> ModelLease:
        """A per-job lease (sdwebui.models.lease) of `title` (None: the default model, as `load`), loaded
        with its own VAE `base_vae` (the `sd_vae` setting); `vae` and `patches` apply to the job only."""
        return self.lease_of(self.load(title, vae=base_vae), vae=vae, patches=patches)

    def lease_of(
        self, model: LoadedModel, vae: str | None = None, patches: Sequence[Patch] = ()
    ) -> ModelLease:
        """A per-job lease of a model this provider loaded."""
        return self.manager.lease(model, vae=vae, patches=patches)

    def unload(self) -> None:
        self.manager.unload()

    def vae_names(self) -> list[str]:
        return self.manager.vae_names()

    def vae_files(self) -> list[tuple[str, Path]]:
        return self.manager.vae_files()

    def module_files(self) -> list[tuple[str, Path]]:
        return self.manager.module_files()

    def set_limit(self, max_loaded: int) -> None:
        self.manager.set_limit(max_loaded)


class PassCheckpointLeases:
    """The engine's PassCheckpoints over a stack's models: the refiner / hires checkpoint of a job is loaded
    through the model manager (kept in RAM within sd_checkpoints_limit) and leased like the job's own model."""

    def __init__(self, models: ModelProvider, base_vae: str | None):
        self.models = models
        self.base_vae = base_vae

    def find(self, name: str, field_name: str) -> str:
        """The title of the listed checkpoint `name` names (also A1111's infotext "name [hash]")."""
        wanted = name.strip()
        infos = self.models.checkpoints()
        for info in infos:
            names = {info.title, info.name, Path(info.filename).name, Path(info.filename).stem}
            names |= {
                info.title.split(" [")[0],
                f"{info.name} [{info.shorthash}]",
                info.shorthash or info.title,
            }
            if wanted in names:
                return info.title
        bare = wanted.split(" [")[0]  # "name [hash]" of a file not hashed yet
        for info in infos:
            if bare and bare in (info.name, Path(info.filename).stem):
                return info.title
        raise RequestError(field_name, f"unknown checkpoint {name!r}; available: {[i.title for i in infos]}")

    def check(self, request: Txt2ImgRequest) -> None:
        """A 4xx naming the field for a refiner / hires checkpoint the app does not list, before queueing."""
        if request.refiner_checkpoint:
            self.find(request.refiner_checkpoint, "refiner_checkpoint")
        hires_fix = getattr(request, "hires", None)
        if hires_fix is not None and hires_fix.hr_checkpoint_name:
            self.find(hires_fix.hr_checkpoint_name, "hr_checkpoint_name")

    @contextlib.contextmanager
    def use(self, name: str, field_name: str, patches: Sequence[Patch] = ()) -> Iterator[LoadedModel]:
        """The checkpoint leased with `patches` (the job's LoRA networks, sdwebui.engine.pass_networks)."""
        model = self.models.load(self.find(name, field_name), vae=self.base_vae)
        with self.models.lease_of(model, patches=patches) as view:
            yield view


def names_the_vae(exc: Exception) -> bool:
    """A load failure caused by the VAE name (sd_vae) or the chosen modules, not by the checkpoint file."""
    return getattr(exc, "field", None) in ("sd_vae", "forge_additional_modules")
