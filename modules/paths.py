"""Where things live. `--data-dir` is the root of everything the app reads and writes (as in A1111).

Public for extensions (A1111 names): `script_path`, `data_path`, `models_path`, via `modules.paths`.
The values are set by `configure()` at start-up; the engine never reads them (it gets paths passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
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
