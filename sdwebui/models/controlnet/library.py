"""The control model files: models/ControlNet/ (and --controlnet-dir), listed as sd-webui-controlnet lists them.

Names are `stem [hash8]` with A1111's legacy short hash (sha256 of 64 KiB at offset 1 MiB), as the extension
shows them; a request may name a model by that title or by its stem alone (case-insensitive, the extension's
rule). Besides single files (.safetensors, .pth, .pt, .ckpt, .bin), diffusers folders (config.json + weights)
are listed under the folder's name. Every entry is probed (safetensors header only, pickles through the safe
unpickler): a file that matches no layout is listed as broken with the reason, and asking for it is an error.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdwebui.models import discovery
from sdwebui.models.controlnet import layouts
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.ip_adapter import IPAdapterError, load_ip_adapter
from sdwebui.models.loader import read_shapes

CONTROL_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
FOLDER_CLASSES = {
    "ControlNetModel": layouts.CONTROLNET,
    "ControlNetUnionModel": layouts.CONTROLNET_UNION,
    "T2IAdapter": layouts.T2I_ADAPTER,
}
_LEGACY_OFFSET, _LEGACY_SIZE = 0x100000, 0x10000
WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
)


class ControlModelError(CheckpointLoadError):
    """A control model that cannot be used (unknown name, broken file); `field` is the request field."""

    def __init__(self, message: str, field: str = "model"):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ControlModelInfo:
    name: str  # file stem, or the diffusers folder's name
    title: str  # "name [hash8]": what model_list shows and infotexts carry
    path: Path  # the file, or the diffusers folder
    layout: layouts.Layout | None = None
    error: str | None = None  # why it cannot be used; None when it can
    sidecar: dict[str, Any] | None = None  # <stem>.json next to a single file: diffusers config values

    @property
    def usable(self) -> bool:
        return self.error is None

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


def legacy_hash(path: Path) -> str:
    """A1111's old 8-hex model hash; for a folder, of its weights file."""
    if path.is_dir():
        weights = _weights_file(path)
        if weights is None:
            return "NOFILE"
        path = weights
    try:
        with open(path, "rb") as handle:
            handle.seek(_LEGACY_OFFSET)
            return hashlib.sha256(handle.read(_LEGACY_SIZE)).hexdigest()[:8]
    except OSError:
        return "NOFILE"


def _weights_file(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _is_control_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and _weights_file(path) is not None


def _probe_folder(folder: Path) -> tuple[layouts.Layout | None, str | None]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        return None, f"unreadable config.json: {exc}"
    kind = FOLDER_CLASSES.get(str(config.get("_class_name")))
    if kind is None:
        known = ", ".join(FOLDER_CLASSES)
        return None, f"config.json names {config.get('_class_name')!r}; supported are {known}"
    if kind == layouts.T2I_ADAPTER:
        base = layouts.SDXL if config.get("adapter_type") == "full_adapter_xl" else layouts.SD1
    elif config.get("addition_embed_type") == "text_time":
        base = layouts.SDXL
    else:
        base = {768: layouts.SD1, 1024: layouts.SD2}.get(config.get("cross_attention_dim"), layouts.SD1)
        if (
            config.get("use_linear_projection")
            and base == layouts.SD1
            and config.get("cross_attention_dim") != 768
        ):
            base = layouts.SD2
    return layouts.Layout(kind, "folder", base), None


def _probe_file(path: Path) -> tuple[layouts.Layout | None, str | None, dict[str, Any] | None]:
    sidecar = None
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            sidecar = json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            return None, f"unreadable sidecar {side.name}: {exc}", None
    try:
        shapes, _ = read_shapes(path)
        return layouts.detect(shapes), None, sidecar
    except CheckpointLoadError as exc:
        return None, str(exc), sidecar
    except layouts.LayoutError as exc:
        nested = _nested_ip_adapter(path)  # the original .bin: {"image_proj": {...}, "ip_adapter": {...}}
        return (nested, None, sidecar) if nested else (None, str(exc), sidecar)


def _nested_ip_adapter(path: Path) -> layouts.Layout | None:
    if path.suffix == ".safetensors":
        return None
    try:
        weights = load_ip_adapter(path)
    except IPAdapterError:
        return None
    base = {768: layouts.SD1, 1024: layouts.SD2, 2048: layouts.SDXL}.get(
        weights.cross_attention_dim, layouts.ANY
    )
    return layouts.Layout(layouts.IP_ADAPTER, "ip_adapter", base)


class ControlNetLibrary:
    """The listing of control models under `dirs`; `refresh()` rescans (model_list?update=true)."""

    def __init__(self, dirs: Sequence[Path]):
        self.dirs = [Path(d) for d in dirs]
        self._lock = threading.Lock()
        self._entries: list[ControlModelInfo] | None = None
        self._probed: dict[tuple[Path, float, int], ControlModelInfo] = {}

    def refresh(self) -> None:
        with self._lock:
            self._entries = None

    def entries(self) -> list[ControlModelInfo]:
        with self._lock:
            if self._entries is None:
                self._entries = self._scan()
            return list(self._entries)

    def usable(self) -> list[ControlModelInfo]:
        return [entry for entry in self.entries() if entry.usable]

    def titles(self) -> list[str]:
        """model_list: the usable models' titles (the extension lists no "None" there)."""
        return [entry.title for entry in self.usable()]

    def find(self, name: str, field: str = "model") -> ControlModelInfo:
        """The entry a unit's `model` names: its title, or its name without the hash (case-insensitive)."""
        wanted = str(name).strip()
        stem = wanted.rsplit(" [", 1)[0] if wanted.endswith("]") else wanted
        entries = self.entries()
        match = next((e for e in entries if e.title == wanted), None)
        match = match or next((e for e in entries if e.name.lower() == stem.lower()), None)
        if match is None:
            valid = ", ".join(e.title for e in entries if e.usable) or "none installed in models/ControlNet"
            raise ControlModelError(f"unknown ControlNet model {name!r}; available: {valid}", field)
        if not match.usable:
            raise ControlModelError(f"ControlNet model {match.title} cannot be used: {match.error}", field)
        return match

    def _scan(self) -> list[ControlModelInfo]:
        seen: set[str] = set()
        found: list[ControlModelInfo] = []
        roots = discovery._real_roots(self.dirs)  # noqa: SLF001 (the one safe-walk rule of discovery)
        for folder in self.dirs:
            keep = lambda p: p.suffix.lower() in CONTROL_EXTENSIONS  # noqa: E731
            for path in sorted(discovery._walk(folder, roots, keep, _is_control_folder), key=_sort_key):  # noqa: SLF001
                name = path.name if path.is_dir() else path.stem
                if name == "None" or name.lower() in seen:  # the extension's rule: first folder wins
                    continue
                seen.add(name.lower())
                found.append(self._probe(path.resolve(), name))
        return found

    def _probe(self, path: Path, name: str) -> ControlModelInfo:
        try:
            stat = path.stat()
            key = (path, stat.st_mtime, stat.st_size)
        except OSError as exc:
            return ControlModelInfo(name, f"{name} [NOFILE]", path, error=str(exc))
        if key in self._probed:
            return self._probed[key]
        title = f"{name} [{legacy_hash(path)}]"
        if path.is_dir():
            layout, error = _probe_folder(path)
            info = ControlModelInfo(name, title, path, layout, error)
        else:
            layout, error, sidecar = _probe_file(path)
            info = ControlModelInfo(name, title, path, layout, error, sidecar)
        self._probed[key] = info
        return info


def _sort_key(path: Path) -> str:
    return path.name.lower()
