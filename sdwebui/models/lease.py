"""A job's lease of a shared model: the job gets its own view with its patches; the shared model is the
same after the job as before it.

    with models.lease(title, vae="other.safetensors") as model:   # model: this job's LoadedModel
        generate(model, ...)

The view is a shallow copy of the shared `LoadedModel` (same modules, its own attributes and `extra`),
so an attribute patch (the VAE override) never reaches the shared model, and a model evicted while a job
runs keeps working for that job. Weight patches change the shared modules in place and are undone, in
reverse order, when the lease ends, also when the job raises or is interrupted.

Two leases of the same model are serialized: a lease holds the model's lock from enter to exit, so a
second lease on another thread waits until the first ends (weights patched in place for one job must never
be seen by another). A nested lease on the same thread (a script's sub-run) enters at once; the job's
record (sdwebui.jobs.generation) suspends the outer lease's patches meanwhile, so none is applied twice.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sdwebui.models.model import CheckpointInfo, LoadedModel
from sdwebui.models.patches import Patch, Undo

log = logging.getLogger(__name__)


class LeaseLocks:
    """One reentrant lock per loaded checkpoint (by file name), owned by that checkpoint's manager."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}

    def lock_for(self, model: Any) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(model.info.filename, threading.RLock())


@dataclass(frozen=True)
class ModelUsed:
    """What a job ran on, kept after the job for its response (without keeping the model's modules)."""

    info: CheckpointInfo
    vae_name: str | None = None
    vae_hash: str | None = None
    is_inpainting: bool = False

    @classmethod
    def of(cls, model: Any) -> ModelUsed:
        # model providers injected by tests may hand out objects with only `info`
        extra = getattr(model, "extra", None) or {}
        return cls(
            info=model.info,
            vae_name=getattr(model, "vae_name", None),
            vae_hash=extra.get("vae_hash"),
            is_inpainting=bool(getattr(model, "is_inpainting", False)),
        )


class ModelLease:
    """Context manager: enter -> the job's model with `patches` applied; exit -> every patch undone."""

    def __init__(
        self,
        shared: LoadedModel,
        patches: Sequence[Patch] = (),
        lock: threading.RLock | None = None,
        key: tuple[Any, ...] = (),
    ):
        self.shared = shared
        self.patches = list(patches)
        # what the lease gives (the shared model, then VAE, patches ...): equal keys give the same model
        self.key = (id(shared), *key)
        self._lock = lock or threading.RLock()
        self._undo: list[Undo] = []
        self.model: LoadedModel | None = None  # the job's view while the lease is held
        self.used: ModelUsed | None = None

    def __enter__(self) -> LoadedModel:
        if self.model is not None:
            raise RuntimeError("a model lease cannot be entered twice")
        self._lock.acquire()
        try:
            view = _view_of(self.shared, bool(self.patches))
            for patch in self.patches:
                self._undo.append(patch.apply(view))
        except BaseException:
            self._restore()
            self._lock.release()
            raise
        self.model = view
        self.used = ModelUsed.of(view)
        return view

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._restore()
        finally:
            self.model = None
            self._lock.release()

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """This lease's patches undone for a while, the lock kept: a nested lease of the same model (a
        script's sub-run with other settings) then sees only its own patches. Re-applied on exit."""
        self._restore()
        try:
            yield
        finally:
            try:
                for patch in self.patches:
                    self._undo.append(patch.apply(self.model))
            except BaseException:
                self._restore()
                raise

    def _restore(self) -> None:
        failure: BaseException | None = None
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except BaseException as exc:  # keep undoing the others; report the first failure
                log.exception("undoing a model patch failed")
                failure = failure or exc
        if failure is not None:
            raise failure


def _view_of(shared: Any, patched: bool) -> Any:
    """A shallow copy of a LoadedModel; other objects (test doubles) are used as they are, unpatched."""
    if dataclasses.is_dataclass(shared):
        return dataclasses.replace(shared, extra=dict(shared.extra))
    if patched:
        raise TypeError(f"cannot patch a {type(shared).__name__}: not a LoadedModel")
    return shared
