"""Where things live. `--data-dir` is the root of everything the app reads and writes (as in A1111).

Public for extensions (A1111 names): `script_path`, `data_path`, `models_path`, via `modules.paths`.
The values are set by `configure()` at start-up; the engine never reads them (it gets paths passed in).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[2]
EMBEDDED_MODELS_DIR = REPO_DIR / "models" / "default"


@dataclass(frozen=True)
class DataPaths:
    data_dir: Path

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def checkpoints_dir(self) -> Path:
        return self.models_dir / "Stable-diffusion"

    @property
    def vae_dir(self) -> Path:
        return self.models_dir / "VAE"

    @property
    def text_encoder_dir(self) -> Path:
        return self.models_dir / "text_encoder"

    @property
    def embeddings_dir(self) -> Path:
        return self.data_dir / "embeddings"

    @property
    def extensions_dir(self) -> Path:
        return self.data_dir / "extensions"

    @property
    def builtin_extensions_dir(self) -> Path:
        return REPO_DIR / "extensions-builtin"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "config.json"

    @property
    def ui_config_file(self) -> Path:
        return self.data_dir / "ui-config.json"

    @property
    def styles_file(self) -> Path:
        return self.data_dir / "styles.csv"

    @property
    def cache_file(self) -> Path:
        return self.data_dir / "cache.json"

    def output_dir(self, value: str | Path | None) -> Path:
        """An output folder setting as a path: empty = outputs/, relative = under the data dir."""
        return resolve_output_dir(value, self.data_dir) if value else self.outputs_dir

    def redact(self, text: str) -> str:
        """`text` (an error message) with server paths relative to the data dir and no memory addresses."""
        return redact(text, self.data_dir)

    def ensure(self) -> None:
        for folder in (self.checkpoints_dir, self.vae_dir, self.extensions_dir, self.outputs_dir):
            folder.mkdir(parents=True, exist_ok=True)


# A1111 module-level names, filled by configure(); extensions import them.
script_path = str(REPO_DIR)
data_path = str(REPO_DIR)
models_path = str(REPO_DIR / "models")
extensions_dir = str(REPO_DIR / "extensions")
extensions_builtin_dir = str(REPO_DIR / "extensions-builtin")


def configure(paths: DataPaths) -> None:
    """Point the A1111 names at the chosen data dir (called once by app start-up)."""
    global data_path, models_path, extensions_dir
    data_path = str(paths.data_dir)
    models_path = str(paths.models_dir)
    extensions_dir = str(paths.extensions_dir)


def resolve_output_dir(value: str | Path, data_dir: Path) -> Path:
    """Where an output folder setting points: `~` expanded, relative to the data dir, `..` folded (lexically:
    a symlink the owner made inside the data dir stays usable)."""
    path = Path(os.path.expanduser(str(value)))
    return Path(os.path.normpath(path if path.is_absolute() else Path(data_dir) / path))


def is_inside(path: Path, folder: Path) -> bool:
    """Lexically: `path` (already normalised, as resolve_output_dir gives) is `folder` or below it."""
    return Path(path).is_relative_to(Path(os.path.normpath(Path(folder).absolute())))


# An absolute POSIX path, alone or as a file:// URL, not inside a word, URL or relative path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:file://)?(/[^\s\0'\"`<>|,;:()\[\]{}]+)")
_ADDRESS = re.compile(r"\s+at 0x[0-9a-fA-F]{6,}|\b0x[0-9a-fA-F]{8,}\b")


def redact(text: str, data_dir: Path) -> str:
    """Paths under the data dir become relative to it, paths under the app folder relative to that, any
    other server path only its last part (`.../name`); `<object at 0x7f...>` addresses are dropped."""
    roots = sorted(
        {Path(data_dir).absolute(), Path(data_dir).resolve(), REPO_DIR}, key=lambda r: -len(str(r))
    )

    def shorten(match: re.Match[str]) -> str:
        path = Path(match.group(1))
        if len(path.parts) < 2 or not os.path.lexists(os.path.join("/", path.parts[1])):
            return match.group(0)  # "/sdapi/v1/..." and other non-paths stay as written
        for root in roots:
            if path == root:
                return "."
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return f".../{path.name}"

    text = _ABSOLUTE_PATH.sub(shorten, str(text))
    return _ADDRESS.sub(lambda m: "" if m.group(0).lstrip().startswith("at") else "0x...", text)
