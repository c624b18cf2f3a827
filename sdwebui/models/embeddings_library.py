"""The textual-inversion embeddings on disk: `embeddings/` under the data dir and `--embeddings-dir`.

Discovery follows sdwebui.models.discovery (regular files really inside the folders, sub-folders allowed, no
symlink leading out); files are read through the safe readers of sdwebui.models.lora.embeddings (a pickle
with code is refused, never run). The folders are read on first use, again when a folder's mtime changed (a
file added, removed or renamed: A1111 re-reads then too) and on `refresh()` (a file rewritten in place); a
file that did not change (same size and mtime) is not read twice. An embedding is named by its file name without
extension, as A1111 names it; for a model it is "loaded" when it has vectors of each text encoder's width,
else "skipped".
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdwebui.models.discovery import list_model_files
from sdwebui.models.lora.embeddings import EMBEDDING_SUFFIXES, Embedding, read_embedding
from sdwebui.models.lora.errors import EmbeddingError
from sdwebui.models.lora.sidecars import UserMetadata, write_user_metadata
from sdwebui.models.model import LoadedModel

log = logging.getLogger(__name__)

MAX_VECTORS = 75  # one prompt chunk: an embedding must fit in one


@dataclass(frozen=True)
class ModelEmbeddings:
    """The library split for one model: usable (`loaded`) and not (`skipped`), by name."""

    loaded: dict[str, Embedding] = field(default_factory=dict)
    skipped: dict[str, Embedding] = field(default_factory=dict)
    slots: tuple[tuple[str, int], ...] = ()  # (encoder key, width) per text encoder of the model

    def vectors_for(self, name: str, encoder_index: int):
        """The (vectors, width) tensor of loaded embedding `name` for the model's text encoder `encoder_index`."""
        key, width = self.slots[encoder_index]
        return self.loaded[name].for_encoder(key, width)


def encoder_slots(model: LoadedModel) -> tuple[tuple[str, int], ...]:
    """Which vectors of an embedding each text encoder takes: SD1/SD2 "", SDXL clip_l + clip_g, refiner clip_g."""
    widths = [int(encoder.config.hidden_size) for encoder in model.text_encoders]
    if model.is_sdxl:
        keys = ("clip_l", "clip_g") if len(widths) == 2 else ("clip_g",)
    else:
        keys = ("",)
    return tuple(zip(keys, widths, strict=False))


@dataclass(frozen=True)
class _Read:
    stamp: tuple[int, int]  # (size, mtime_ns)
    embedding: Embedding | None
    error: str | None


class EmbeddingLibrary:
    """All embeddings found in `dirs` (the first folder's names win over later duplicates)."""

    def __init__(self, dirs: Sequence[Path]):
        self.dirs = [Path(d) for d in dirs]
        self._lock = threading.Lock()
        self._files: dict[Path, _Read] = {}
        self._embeddings: dict[str, Embedding] | None = None
        self._signature: tuple[tuple[str, int], ...] = ()
        self.errors: list[str] = []  # files that could not be read, each naming the file and why

    def refresh(self) -> None:
        """Re-scan the folders: new files are read, changed ones re-read, removed ones dropped."""
        with self._lock:
            signature = self._folders_signature()
            files = list_model_files([d for d in self.dirs if d.is_dir()], EMBEDDING_SUFFIXES)
            found: dict[str, Embedding] = {}
            errors: list[str] = []
            reads: dict[Path, _Read] = {}
            for listed in files:
                read = self._read(listed.path)
                if read is None:
                    continue
                reads[listed.path] = read
                if read.error is not None:
                    errors.append(read.error)
                elif read.embedding.name in found:
                    errors.append(
                        f"{listed.path}: another embedding is already named {read.embedding.name!r}"
                    )
                else:
                    found[read.embedding.name] = read.embedding
            self._files, self._embeddings, self.errors = reads, found, errors
            self._signature = signature
        for error in errors:
            log.warning("embedding not loaded: %s", error)

    def _read(self, path: Path) -> _Read | None:
        try:
            info = path.stat()
        except OSError:
            return None
        if info.st_size == 0:  # A1111 skips empty files (a download in progress)
            return None
        stamp = (info.st_size, info.st_mtime_ns)
        known = self._files.get(path)
        if known is not None and known.stamp == stamp:
            return known
        try:
            return _Read(stamp, read_embedding(path), None)
        except EmbeddingError as error:
            return _Read(stamp, None, str(error))

    def _folders_signature(self) -> tuple[tuple[str, int], ...]:
        """The mtimes of the folders and their sub-folders (links not followed): cheap, no file is opened."""
        stamps = []
        for root in self.dirs:
            for folder, _, _ in os.walk(root):
                try:
                    stamps.append((folder, os.stat(folder).st_mtime_ns))
                except OSError:
                    continue
        return tuple(stamps)

    def all(self) -> dict[str, Embedding]:
        """Every readable embedding by name (read on first use and after a folder changed)."""
        if self._embeddings is None or self._folders_signature() != self._signature:
            self.refresh()
        return dict(self._embeddings or {})

    def for_model(self, model: LoadedModel) -> ModelEmbeddings:
        slots = encoder_slots(model)
        loaded, skipped = {}, {}
        for name, embedding in self.all().items():
            fits = all(embedding.for_encoder(key, width) is not None for key, width in slots)
            (loaded if fits and embedding.vectors <= MAX_VECTORS else skipped)[name] = embedding
        return ModelEmbeddings(loaded, skipped, slots)

    def counted(self, model: LoadedModel | None) -> dict[str, Embedding]:
        """The embeddings a token counter replaces: those of `model`, or every one when no model is loaded."""
        return self.all() if model is None else self.for_model(model).loaded

    def save_user_metadata(self, name: str, metadata: UserMetadata) -> Path | None:
        """Write ``name.json`` beside the listed embedding `name` (the card's edit dialog); None if unlisted."""
        embedding = self.all().get(name)
        return write_user_metadata(embedding.path, metadata) if embedding is not None else None
