"""Face restoration model files: GFPGAN (spandrel) and CodeFormer (spandrel_extra_arches), and the RetinaFace
face detector (facexlib's architecture) they need, as A1111 keeps them: `models/GFPGAN`, `models/Codeformer`
(plus `--gfpgan-models-path` / `--codeformer-models-path`), the detector as `detection_Resnet50_Final.pth`.

Only regular files inside the configured folders are used (sdwebui.models.discovery); pickles go through the
safe unpickler. Nothing is ever downloaded: a missing file is an error naming the file and the folders.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdwebui.models import discovery
from sdwebui.models.upscalers import UpscalerLoadError, read_state_dict

GFPGAN = "GFPGAN"
CODEFORMER = "CodeFormer"
RESTORERS = (CODEFORMER, GFPGAN)  # A1111's order in /sdapi/v1/face-restorers
FOLDER_NAMES = {GFPGAN: "GFPGAN", CODEFORMER: "Codeformer"}  # under models/, A1111's spelling
DETECTOR_FILE = "detection_Resnet50_Final.pth"
EXTENSIONS = (".pth", ".safetensors")
# CodeFormer's code is under the S-Lab License 1.0; spandrel_extra_arches ships it with that licence
CODEFORMER_LICENCE = (
    "CodeFormer (sczhou/CodeFormer, via spandrel_extra_arches) is under the S-Lab License 1.0: "
    "non-commercial use only."
)


class FaceRestorerError(UpscalerLoadError):
    """A face restoration file that is missing or cannot be used; `field` names the request field."""


@dataclass(frozen=True)
class FaceRestorerFolders:
    """The folders of each restorer (models/<folder>, then the command-line one); the detector is looked for
    in all of them, GFPGAN's first (where A1111 keeps facexlib's weights)."""

    by_name: dict[str, list[Path]]

    def of(self, name: str) -> list[Path]:
        return self.by_name.get(name, [])

    def all(self) -> list[Path]:
        return [*self.of(GFPGAN), *self.of(CODEFORMER)]


def restorer_folders(
    models_dir: Path, extra: dict[str, str | Path | None] | None = None
) -> FaceRestorerFolders:
    folders = {name: [Path(models_dir) / folder] for name, folder in FOLDER_NAMES.items()}
    for name, path in (extra or {}).items():
        if path:
            folders[name].append(Path(path))
    return FaceRestorerFolders(folders)


def _architecture(name: str) -> Any:
    if name == GFPGAN:
        from spandrel.architectures.GFPGAN import GFPGANArch

        return GFPGANArch()
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormerArch

    return CodeFormerArch()


@dataclass
class _Loaded:
    path: Path
    stamp: tuple[int, int]
    model: torch.nn.Module


@dataclass
class FaceRestorerLibrary:
    """Finds and loads the restorer and detector files; the last model of each kind stays loaded."""

    folders: FaceRestorerFolders
    _loaded: dict[str, _Loaded] = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def _files(self, folders: list[Path]) -> list[discovery.ModelFile]:
        return discovery.list_model_files(folders, EXTENSIONS, self.folders.all())

    def restorer_file(self, name: str, field_name: str) -> Path:
        """A1111's pick: the first file of the restorer's folders with its name in the file name."""
        for model_file in self._files(self.folders.of(name)):
            if name.lower() in Path(model_file.name).name.lower():
                return model_file.path
        where = ", ".join(str(p) for p in self.folders.of(name))
        raise FaceRestorerError(
            f"{name}: no model file found (expected a .pth or .safetensors file with {name!r} in its name, "
            f"e.g. {'GFPGANv1.4.pth' if name == GFPGAN else 'codeformer-v0.1.0.pth'}, in {where})",
            field_name,
        )

    def detector_file(self, field_name: str) -> Path:
        for model_file in self._files(self.folders.all()):
            if Path(model_file.name).name == DETECTOR_FILE:
                return model_file.path
        where = ", ".join(str(p) for p in self.folders.all())
        raise FaceRestorerError(
            f"face detector missing: {DETECTOR_FILE} (facexlib's RetinaFace) is needed in one of {where}",
            field_name,
        )

    def restorer(self, name: str, device: torch.device, field_name: str) -> torch.nn.Module:
        """The GFPGAN / CodeFormer network of the file found for `name`, on `device`, in eval mode."""
        return self._load(name, self.restorer_file(name, field_name), device, field_name)

    def detector(self, device: torch.device, field_name: str) -> Any:
        """facexlib's RetinaFace (ResNet-50) with the user's detector weights, on `device`."""
        return self._load("detector", self.detector_file(field_name), device, field_name)

    def unload(self, name: str) -> None:
        """face_restoration_unload: the model goes back to the CPU after a job."""
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is not None:
                loaded.model.to("cpu")

    def _load(self, kind: str, path: Path, device: torch.device, field_name: str) -> Any:
        with self._lock:
            status = path.stat()
            stamp = (status.st_size, status.st_mtime_ns)
            loaded = self._loaded.get(kind)
            if loaded is None or (loaded.path, loaded.stamp) != (path, stamp):
                self._loaded.pop(kind, None)
                build = _build_detector if kind == "detector" else _build_restorer
                loaded = _Loaded(path, stamp, build(kind, path, field_name))
                self._loaded[kind] = loaded
            model = loaded.model.to(device)
            if kind == "detector":
                model.device = device  # RetinaFace moves its inputs to this
                model.mean_tensor = model.mean_tensor.to(device)
            return model


def _build_restorer(name: str, path: Path, field_name: str) -> torch.nn.Module:
    try:
        state = read_state_dict(path)
    except UpscalerLoadError as error:
        raise FaceRestorerError(str(error), field_name) from None
    arch = _architecture(name)
    if not arch.detect(state):
        raise FaceRestorerError(
            f"{path.name}: not a {name} model (spandrel does not recognise it)", field_name
        )
    try:
        return arch.load(state).model.eval()
    except Exception as error:  # a recognised layout with inconsistent shapes
        raise FaceRestorerError(
            f"{path.name}: spandrel could not build {name}: {error}", field_name
        ) from None


def _build_detector(_kind: str, path: Path, field_name: str) -> Any:
    from facexlib.detection.retinaface import RetinaFace

    try:
        state = read_state_dict(path)
    except UpscalerLoadError as error:
        raise FaceRestorerError(str(error), field_name) from None
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = RetinaFace(network_name="resnet50", half=False, device=torch.device("cpu"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise FaceRestorerError(
            f"{path.name}: not a RetinaFace ResNet-50 detector: {error}", field_name
        ) from None
    return model.eval()


def library_for(models_dir: Path, extra: dict[str, str | Path | None] | None = None) -> FaceRestorerLibrary:
    return FaceRestorerLibrary(restorer_folders(models_dir, extra))
