"""Upscaler model files (ESRGAN, RealESRGAN, SwinIR, DAT, HAT, ...): discovery, probing and loading through
spandrel, which detects the architecture and its hyperparameters from the state dict.

Safety as for checkpoints (sdwebui.models.discovery): only regular files inside the configured folders are
listed, a requested name is looked up among them only, and pickles (.pth/.pt/.ckpt) go through the safe
unpickler, never spandrel's or torch's own loading. A file spandrel does not recognise is listed as broken with
the reason; asking for it is a clear error, never a crash.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdwebui.models import discovery
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.safe_pickle import load_pickled_checkpoint

log = logging.getLogger(__name__)

# A1111's folder names under models/, in its listing order
UPSCALER_FAMILIES = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT")
UPSCALER_EXTENSIONS = (".pth", ".pt", ".safetensors", ".ckpt")
# names the plain resamplers and the latent modes use; a file with such a stem gets its folder as prefix
RESERVED_NAMES = frozenset({"none", "lanczos", "nearest"})


class UpscalerLoadError(CheckpointLoadError):
    """An upscaler file that cannot be used; `field` names the request field that asked for it."""

    def __init__(self, message: str, field: str = "upscaler_1"):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class UpscalerFolder:
    family: str  # "ESRGAN", "RealESRGAN", ...
    path: Path


@dataclass(frozen=True)
class UpscalerInfo:
    """One discovered upscaler file and what probing it found (architecture and scale, or why it is broken)."""

    name: str  # what lists show and requests use: the file stem (folder-qualified when taken)
    path: Path  # real location
    family: str
    architecture: str | None = None
    scale: int | None = None
    error: str | None = None  # why the file cannot be used; None when it can

    def names(self) -> tuple[str, ...]:
        return (self.name, str(self.path), self.path.name)

    @property
    def usable(self) -> bool:
        return self.error is None


def upscaler_folders(
    models_dir: Path, extra: dict[str, str | Path | None] | None = None
) -> list[UpscalerFolder]:
    """models/<family>/ for each family, then each family's extra folder (A1111's --esrgan-models-path, ...)."""
    folders = [UpscalerFolder(f, Path(models_dir) / f) for f in UPSCALER_FAMILIES]
    for family, path in (extra or {}).items():
        if path:
            folders.append(UpscalerFolder(family, Path(path)))
    return folders


def read_state_dict(path: Path) -> dict[str, Any]:
    """The file's tensors, unwrapped as spandrel expects (params_ema, module. prefixes, ...); pickles through
    the safe unpickler (code in a pickle is refused, never run)."""
    import spandrel

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as error:  # safetensors raises its own error types for garbage
            raise UpscalerLoadError(f"{path.name}: not a readable safetensors file: {error}") from None
    else:
        try:
            state = load_pickled_checkpoint(path)
        except CheckpointLoadError as error:
            raise UpscalerLoadError(str(error).replace(str(path), path.name)) from None
    if not isinstance(state, dict):
        raise UpscalerLoadError(f"{path.name}: holds a {type(state).__name__}, not a state dict")
    return spandrel.canonicalize_state_dict(state)


def describe(path: Path) -> Any:
    """The spandrel ImageModelDescriptor of an upscaler file, on the CPU in fp32. Raises UpscalerLoadError
    for anything that is not a 1- or 3-channel image-to-image model."""
    import spandrel

    state = read_state_dict(path)
    try:
        model = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise UpscalerLoadError(f"{path.name}: not an architecture spandrel recognises") from None
    except Exception as error:  # a recognised layout with inconsistent shapes
        raise UpscalerLoadError(f"{path.name}: spandrel could not build the model: {error}") from None
    if not isinstance(model, spandrel.ImageModelDescriptor) or model.purpose not in ("SR", "Restoration"):
        kind = getattr(model, "purpose", type(model).__name__)
        raise UpscalerLoadError(f"{path.name}: a {model.architecture.name} model for {kind}, not an upscaler")
    if model.input_channels not in (1, 3) or model.output_channels != model.input_channels:
        raise UpscalerLoadError(
            f"{path.name}: {model.input_channels} -> {model.output_channels} channels; only RGB or grey models"
        )
    return model.eval()


@dataclass
class _Loaded:
    path: Path
    stamp: tuple[int, int]  # size and mtime when read: a replaced file is read again
    model: Any


def _stamp(path: Path) -> tuple[int, int]:
    try:
        status = path.stat()
    except OSError as error:
        raise UpscalerLoadError(f"{path.name}: cannot be read: {error.strerror} (refresh the list)") from None
    return status.st_size, status.st_mtime_ns


@dataclass
class UpscalerLibrary:
    """The upscaler files of the configured folders. Listing probes each new or changed file once (a CPU load,
    kept only as architecture + scale + error); `load` keeps the last model used per device for the next call."""

    folders: list[UpscalerFolder]
    _probed: dict[tuple[Path, int, int], UpscalerInfo] = field(default_factory=dict, repr=False)
    _loaded: dict[str, _Loaded] = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def entries(self) -> list[UpscalerInfo]:
        """Every file found now, usable or broken, in folder order: the folders are listed on each call (a file
        dropped in shows up without a restart); only new or changed files are probed."""
        with self._lock:
            return self._scan()

    def usable(self) -> list[UpscalerInfo]:
        return [e for e in self.entries() if e.usable]

    def find(self, name: str, field: str = "upscaler_1") -> UpscalerInfo:
        """The usable entry a request names (among listed files only); a broken one is an error with its reason."""
        try:
            entry = discovery.find_listed(name, self.entries(), UpscalerInfo.names, "upscaler", field)
        except discovery.NotListedError as error:
            raise UpscalerLoadError(str(error), field) from None
        if entry.error is not None:
            raise UpscalerLoadError(f"upscaler {entry.name!r} cannot be used: {entry.error}", field)
        return entry

    def load(self, entry: UpscalerInfo, device: torch.device, half: bool = False) -> Any:
        """The model of `entry` on `device` (fp16 when `half` and the architecture supports it); the last one
        used per device stays loaded for the next call (a hires fix or a batch uses the same one)."""
        with self._lock:
            stamp = _stamp(entry.path)
            loaded = self._loaded.get(str(device))
            if loaded is None or (loaded.path, loaded.stamp) != (entry.path, stamp):
                self._loaded.pop(str(device), None)  # free the previous one before reading the next
                loaded = _Loaded(entry.path, stamp, describe(entry.path))
                self._loaded[str(device)] = loaded
            dtype = torch.float16 if half and loaded.model.supports_half else torch.float32
            return loaded.model.to(device=device, dtype=dtype)

    def _scan(self) -> list[UpscalerInfo]:
        roots = [f.path for f in self.folders]
        found: list[UpscalerInfo] = []
        taken: set[str] = set()
        for folder in self.folders:
            for model_file in discovery.list_model_files([folder.path], UPSCALER_EXTENSIONS, roots):
                if any(e.path == model_file.path for e in found):
                    continue  # the same file reached from two configured folders
                entry = self._probe(model_file, folder.family, taken)
                taken.add(entry.name.lower())
                found.append(entry)
        live = {e.path for e in found}
        self._probed = {key: info for key, info in self._probed.items() if key[0] in live}
        return found

    def _probe(self, model_file: discovery.ModelFile, family: str, taken: set[str]) -> UpscalerInfo:
        stem = model_file.name.rsplit(".", 1)[0]
        name = stem if stem.lower() not in taken | RESERVED_NAMES else f"{family}/{stem}"
        try:
            key = (model_file.path, *_stamp(model_file.path))
        except UpscalerLoadError as error:
            return UpscalerInfo(name, model_file.path, family, error=str(error))
        cached = self._probed.get(key)
        if cached is None:
            try:
                model = describe(model_file.path)
                cached = UpscalerInfo(
                    name, model_file.path, family, model.architecture.name, int(model.scale)
                )
            except UpscalerLoadError as error:
                log.warning("upscaler file listed as broken: %s", error)
                cached = UpscalerInfo(name, model_file.path, family, error=str(error))
            self._probed[key] = cached
        return UpscalerInfo(name, cached.path, family, cached.architecture, cached.scale, cached.error)


def library_for(models_dir: Path, extra: dict[str, str | Path | None] | None = None) -> UpscalerLibrary:
    return UpscalerLibrary(upscaler_folders(models_dir, extra))
