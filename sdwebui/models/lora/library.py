"""The LoRA files on disk (``models/Lora``, ``models/LyCORIS``, ``--lora-dir``) and reading them for a model.

Listing reads only directory entries, safetensors headers, ``name.json`` and looks for a preview; the
tensors are read when a job names the network. Names from a prompt become files only through ``find``, a
match among the listed entries (sdwebui.models.discovery's rules: regular files inside the folders), so
``<lora:../x:1>`` names nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdwebui.models.discovery import list_model_files
from sdwebui.models.hashing import HashCache
from sdwebui.models.lora.errors import LoraError
from sdwebui.models.lora.files import NETWORK_SUFFIXES, FileIdentity, read_safetensors_metadata
from sdwebui.models.lora.keys import ModuleIndex, build_index
from sdwebui.models.lora.network import LoraNetwork, load_network
from sdwebui.models.lora.sidecars import (
    UserMetadata,
    preview_of,
    read_user_metadata,
    write_user_metadata,
)
from sdwebui.models.model import LoadedModel

log = logging.getLogger(__name__)

NETWORKS_PER_MODEL = 16  # read networks kept per model (their tensors are small next to the deltas)


@dataclass(frozen=True)
class LoraEntry:
    """One listed network file."""

    name: str  # file name without extension, as A1111 names it in <lora:name:...>
    alias: str  # ss_output_name, else name
    path: Path  # real location
    relative: str  # path under its folder (sub-folders), with extension
    metadata: dict[str, str]  # the safetensors __metadata__ (empty for pickles)
    user: UserMetadata = field(default_factory=UserMetadata)
    preview: Path | None = None

    @property
    def sd_version(self) -> str:
        """A1111's guess of the model family it was trained for: "SD1", "SD2", "SDXL" or "" (unknown);
        the user metadata's "sd version" wins."""
        if self.user.sd_version in ("SD1", "SD2", "SDXL"):
            return self.user.sd_version
        base = self.metadata.get("ss_base_model_version", "")
        if base.startswith("sdxl_"):
            return "SDXL"
        if self.metadata.get("ss_v2") == "True":
            return "SD2"
        return "SD1" if self.metadata else ""

    def parsed_metadata(self) -> dict[str, Any]:
        """Metadata as A1111's API gives it: JSON-looking values (ss_tag_frequency...) parsed."""
        out: dict[str, Any] = {}
        for key, value in self.metadata.items():
            out[key] = value
            if value[:1] in "{[":
                try:
                    out[key] = json.loads(value)
                except ValueError:
                    pass
        return out


def _entry(path: Path, relative: str) -> LoraEntry:
    metadata: dict[str, str] = {}
    if path.suffix.lower() == ".safetensors":
        try:
            metadata = read_safetensors_metadata(path)
        except LoraError as error:
            log.warning("%s", error)
    name = path.with_suffix("").name
    return LoraEntry(
        name=name,
        alias=metadata.get("ss_output_name") or name,
        path=path,
        relative=relative,
        metadata=metadata,
        user=read_user_metadata(path),
        preview=preview_of(path),
    )


@dataclass
class _ModelNetworks:
    index: ModuleIndex
    networks: OrderedDict[FileIdentity, LoraNetwork] = field(default_factory=OrderedDict)


class LoraLibrary:
    """The listed networks and, per loaded model, its module index and the networks read for it."""

    def __init__(self, dirs: Sequence[Path], hashes: HashCache | None = None):
        self.dirs = [Path(d) for d in dirs]
        self.hashes = hashes  # the app's cache.json: a LoRA's AutoV3 hash is computed once per file version
        self._entries: list[LoraEntry] | None = None
        self._lock = threading.Lock()
        # keyed by the model's U-Net module: an evicted checkpoint's index goes with it
        self._per_model: weakref.WeakKeyDictionary[Any, _ModelNetworks] = weakref.WeakKeyDictionary()

    def refresh(self) -> list[LoraEntry]:
        files = list_model_files(self.dirs, NETWORK_SUFFIXES)
        entries = [_entry(f.path, f.name) for f in files]
        with self._lock:
            self._entries = entries
        return entries

    def entries(self) -> list[LoraEntry]:
        with self._lock:
            entries = self._entries
        return entries if entries is not None else self.refresh()

    def find(self, name: str) -> LoraEntry | None:
        """The entry a prompt names: by file name first, then by alias (A1111's order); None if unlisted."""
        entries = self.entries()
        for matches in (lambda e: e.name == name, lambda e: e.alias == name):
            for entry in entries:
                if matches(entry):
                    return entry
        return None

    def network(self, entry: LoraEntry, model: LoadedModel, keep: int = 0) -> LoraNetwork:
        """The network read and bound to `model`'s modules (LoraError for an unreadable or foreign file);
        `keep` read networks stay cached per model (the lora_in_memory_limit setting; 0: the default 16)."""
        with self._lock:
            slot = self._per_model.get(model.unet)
            if slot is None:
                slot = self._per_model[model.unet] = _ModelNetworks(build_index(model))
        identity = FileIdentity.of(entry.path)
        with self._lock:
            network = slot.networks.get(identity)
            if network is not None:
                slot.networks.move_to_end(identity)
                return network
        network = load_network(entry.path, slot.index, name=entry.name, hashes=self.hashes)
        with self._lock:
            slot.networks[identity] = network
            while len(slot.networks) > (keep if keep > 0 else NETWORKS_PER_MODEL):
                slot.networks.popitem(last=False)
        return network

    def held(self, model: LoadedModel) -> list[str]:
        """The files (resolved paths) whose networks are read and kept for `model`: what a pool worker
        reports holding, so jobs with those LoRAs go to it (sdwebui.jobs.dispatch)."""
        with self._lock:
            slot = self._per_model.get(model.unet)
            return [identity.path for identity in slot.networks] if slot is not None else []

    def save_user_metadata(self, name: str, metadata: UserMetadata) -> LoraEntry:
        """Write ``name.json`` beside the listed network named `name` (its file name, as the cards name it):
        the path comes from the listing, never from the caller. LoraError when no such network is listed."""
        with self._lock:
            entries = list(self._entries or [])
        entry = next((e for e in entries if e.name == name), None)
        if entry is None:
            raise LoraError(f"no LoRA named {name!r} is listed (try refresh)")
        write_user_metadata(entry.path, metadata)
        updated = _entry(entry.path, entry.relative)
        with self._lock:
            if self._entries is not None:
                self._entries = [updated if e.path == entry.path else e for e in self._entries]
        return updated
