"""A1111's `modules.sd_models` for extensions: the checkpoint list, name lookup, and model (re)loading.

Everything reads the app's ModelProvider bound by `shared.bind` (the ModelManager in production): the
lists are live views of what it discovered, loads go through its `load()` (so `on_model_loaded` fires and
`shared.sd_model` is the loaded model), as a job of the app's queue when called from outside a job. `shared.sd_model` is our LoadedModel view, not A1111's LDM object.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from sdwebui.config import paths as _paths
from sdwebui.facade import bound, shared
from sdwebui.facade.live import LiveDict
from sdwebui.models import discovery
from sdwebui.models import model as _model

model_dir = "Stable-diffusion"
# A1111's legacy 8-hex "hash": sha256 of 64 KiB read at offset 1 MiB (the full-file sha256 is `sha256`)
_LEGACY_OFFSET, _LEGACY_SIZE = 0x100000, 0x10000


def model_hash(filename: str) -> str:
    """A1111's old short model hash of a file, "NOFILE" when it cannot be read."""
    try:
        with open(filename, "rb") as handle:
            handle.seek(_LEGACY_OFFSET)
            return hashlib.sha256(handle.read(_LEGACY_SIZE)).hexdigest()[:8]
    except OSError:
        return "NOFILE"


class CheckpointInfo:
    """A1111's checkpoint record over one of ours: `title` ("name [shorthash]"), `name` (path relative to
    its folder, with extension), `model_name` (the same without extension, "/" as "_"), `name_for_extra`,
    `hash` (legacy 8 hex), `sha256`, `shorthash`, `filename` (absolute path), `ids` (names it is known by).

    `CheckpointInfo(filename)` describes a file the way discovery would; only listed files can be loaded.
    """

    def __init__(self, filename: str | os.PathLike[str], info: _model.CheckpointInfo | None = None):
        info = info or discovery.checkpoint_info(Path(filename))
        self._info = info
        self.filename = info.filename
        self.is_safetensors = Path(info.filename).suffix.lower() == ".safetensors"
        self.name = info.title.split(" [")[0]
        self.name_for_extra = Path(self.name).stem if not info.is_diffusers_folder else Path(self.name).name
        self.model_name = os.path.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]
        self.sha256 = info.sha256
        self.shorthash = info.shorthash
        self.title = info.title
        self.short_title = (
            f"{self.name_for_extra} [{self.shorthash}]" if self.shorthash else self.name_for_extra
        )
        self.metadata: dict[str, Any] = {}
        self._legacy_hash: str | None = None

    @property
    def hash(self) -> str:
        if self._legacy_hash is None:
            self._legacy_hash = model_hash(self.filename)
        return self._legacy_hash

    @property
    def ids(self) -> list[str]:
        names = [self.model_name, self.title, self.name, self.name_for_extra]
        if self.shorthash:
            names += [self.shorthash, self.sha256, f"{self.name} [{self.shorthash}]", self.short_title]
        return [n for n in names if n]

    def calculate_shorthash(self) -> str | None:
        """Hash the file (cached by the app's hash cache when bound) and return the 10-hex short hash."""
        if self.sha256 is None and not self._info.is_diffusers_folder:
            manager = getattr(bound.models(), "manager", None)
            if manager is not None and hasattr(manager, "hash_of"):
                hashed = manager.hash_of(self._info)
                self.__init__(hashed.filename, hashed)
        return self.shorthash

    def __repr__(self) -> str:
        return f"CheckpointInfo({self.title!r})"


# --- the live lists --------------------------------------------------------------------------------------
_views: dict[str, CheckpointInfo] = {}  # by title: keeps the same record across syncs (its legacy hash)


def _internal_infos() -> list[_model.CheckpointInfo]:
    models = bound.models()
    return list(models.checkpoints()) if models is not None else []


def _version() -> Hashable:
    return id(bound.models()), tuple((i.title, i.filename) for i in _internal_infos())


def _records() -> list[CheckpointInfo]:
    records = []
    for info in _internal_infos():
        view = _views.get(info.title)
        if view is None or view.filename != info.filename:
            view = _views[info.title] = CheckpointInfo(info.filename, info)
        records.append(view)
    return records


def _build_list() -> dict[str, CheckpointInfo]:
    return {record.title: record for record in _records()}


def _build_aliases() -> dict[str, CheckpointInfo]:
    aliases: dict[str, CheckpointInfo] = {}
    for record in reversed(_records()):  # the first listed wins a shared alias
        for name in [record.filename, *record.ids]:
            aliases[name] = record
    return aliases


checkpoints_list: LiveDict = LiveDict(_version, _build_list)  # title -> CheckpointInfo
checkpoint_aliases: LiveDict = LiveDict(_version, _build_aliases)  # any id -> CheckpointInfo
checkpoints_loaded: dict[str, Any] = {}  # A1111's state-dict cache; the app's ModelManager caches models


def list_models() -> None:
    """Re-scan the checkpoint folders (A1111's refresh button)."""
    models = bound.models()
    if models is not None:
        models.refresh()
    checkpoints_list.sync()
    checkpoint_aliases.sync()


def checkpoint_tiles(use_short: bool = False) -> list[str]:
    """Titles for a checkpoint dropdown, in the listed order."""
    return [r.short_title if use_short else r.title for r in checkpoints_list.values()]


def get_closet_checkpoint_match(search_string: str) -> CheckpointInfo | None:
    """A1111's lookup (its spelling): an exact id, else the shortest title containing the text, else the same
    without a trailing " [hash]"; None when nothing matches."""
    if not search_string:
        return None
    found = checkpoint_aliases.get(search_string)
    if found is not None:
        return found
    for text in (search_string, search_string.split(" [")[0]):
        matches = sorted(
            (r for r in checkpoints_list.values() if text in r.title), key=lambda r: len(r.title)
        )
        if matches:
            return matches[0]
    return None


def select_checkpoint() -> CheckpointInfo:
    """The checkpoint of the `sd_model_checkpoint` setting, else the first listed; FileNotFoundError if none."""
    wanted = shared.opts.get("sd_model_checkpoint") or ""
    found = checkpoint_aliases.get(wanted) if wanted else None
    if found is not None:
        return found
    first = next(iter(checkpoints_list.values()), None)
    if first is None:
        raise FileNotFoundError(
            f"no checkpoints found; put one in {os.path.join(_paths.models_path, model_dir)}"
        )
    return first


# --- loading ---------------------------------------------------------------------------------------------
def _require_models() -> Any:
    models = bound.models()
    if models is None:
        raise RuntimeError("sd_models: the app's model manager is not bound yet")
    return models


def _current() -> Any:
    return getattr(bound.models(), "current", None)


def reload_model_weights(
    sd_model: Any = None, info: CheckpointInfo | None = None, forced_reload: bool = False
):
    """Make `info` (default: `select_checkpoint()`) the current model through the app's model manager and
    record it as the `sd_model_checkpoint` setting (in memory, as A1111 does); returns `shared.sd_model`."""
    models = _require_models()
    info = info or select_checkpoint()

    def work() -> None:
        current = _current()
        same = current is not None and current.info.filename == info.filename
        if same and not forced_reload:
            return
        if same:
            models.unload()
        loaded = models.load(info.filename, vae=shared.opts.get("sd_vae") or None)
        shared.opts.set("sd_model_checkpoint", loaded.info.title, run_callbacks=False)

    bound.in_queue(work)
    return shared.current_model()


def load_model(checkpoint_info: CheckpointInfo | None = None, already_loaded_state_dict: Any = None):
    """A1111's load_model: loads `checkpoint_info` (default: the selected one); returns `shared.sd_model`."""
    if already_loaded_state_dict is not None:
        raise ValueError(
            "sd_models.load_model: loading from a state dict is not supported; pass a listed file"
        )
    return reload_model_weights(info=checkpoint_info)


def unload_model_weights(sd_model: Any = None, info: CheckpointInfo | None = None):
    """Unload the current model (frees its memory); the next job loads one again. Returns `shared.sd_model`."""
    models = bound.models()
    if models is not None:
        bound.in_queue(models.unload)
    return shared.current_model()


def get_checkpoint_info() -> CheckpointInfo | None:
    """The record of the current model (None before the first load)."""
    current = _current()
    if current is None:
        return None
    return checkpoint_aliases.get(current.info.filename) or CheckpointInfo(
        current.info.filename, current.info
    )


class SdModelData:
    """A1111's `sd_models.model_data`: the current model and whether one was loaded yet."""

    @property
    def sd_model(self) -> Any:
        return shared.current_model()

    def get_sd_model(self) -> Any:
        return shared.current_model()

    @property
    def loaded_sd_models(self) -> list[Any]:
        model = shared.current_model()
        return [model] if model is not None else []

    @property
    def was_loaded_at_least_once(self) -> bool:
        return _current() is not None

    def set_sd_model(self, value: Any, already_loaded: bool = False) -> None:
        """Make `value` (a model of `loaded_sd_models`, or None: unload) the current one."""
        if value is None:
            unload_model_weights()
            return
        info = getattr(value, "sd_checkpoint_info", None)
        if info is None:
            raise ValueError("sd_models.model_data.set_sd_model: not one of the app's models")
        reload_model_weights(info=checkpoint_aliases.get(info.filename) or CheckpointInfo(info.filename))


model_data = SdModelData()
