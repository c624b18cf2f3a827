"""T5's tokenizer, offline: no package on the registry ships T5's sentencepiece vocabulary, so it is read
from the user's model folder, beside the T5 weights (Hugging Face's own file names: `spiece.model`, or
`tokenizer.json`), as diffusers folders carry it in `tokenizer_2/` / `tokenizer_3/`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sdwebui.models.errors import CheckpointLoadError

TOKENIZER_FILES = ("spiece.model", "tokenizer.json")


class MissingTokenizerError(CheckpointLoadError):
    field = "forge_additional_modules"


def tokenizer_folder(weights: Path) -> Path | None:
    """The folder holding T5's vocabulary for these weights: `<stem>/` beside them, else their folder."""
    for folder in (weights.parent / weights.name.split(".")[0], weights.parent):
        if any((folder / name).is_file() for name in TOKENIZER_FILES):
            return folder
    return None


def load_t5_tokenizer(weights: Path) -> Any:
    folder = tokenizer_folder(weights)
    if folder is None:
        raise MissingTokenizerError(
            f"T5 tokenizer not found for {weights.name}: put T5's '{TOKENIZER_FILES[0]}' (from the "
            f"google/t5-v1_1-xxl or a Flux/SD3 diffusers repo's tokenizer_2 folder) at "
            f"{weights.parent / TOKENIZER_FILES[0]}"
        )
    return _cached(str(folder.resolve()))


@functools.lru_cache(maxsize=4)
def _cached(folder: str) -> Any:
    import transformers

    try:
        return transformers.T5Tokenizer.from_pretrained(folder, local_files_only=True, legacy=False)
    except Exception as error:  # a corrupt or foreign vocabulary file
        raise MissingTokenizerError(f"{folder}: unreadable T5 tokenizer: {error}") from None
