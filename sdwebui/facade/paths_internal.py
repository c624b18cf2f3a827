"""A1111's `modules.paths_internal` for extensions: where the app and its data live.

The values follow `sdwebui.config.paths` (set by `configure()` at start-up from `--data-dir`), read on each
access so that an extension imported after start-up sees the chosen data dir. `sd_configs_path` holds our
model configs (JSON, one per model family), not A1111's LDM yaml files.
"""

from __future__ import annotations

import os
from typing import Any

from sdwebui.config import paths as _paths
from sdwebui.facade import shared
from sdwebui.models import discovery

_FROM_PATHS = ("script_path", "data_path", "models_path", "extensions_dir", "extensions_builtin_dir")

modules_path = os.path.join(str(_paths.REPO_DIR), "modules")
sd_configs_path = str(_paths.REPO_DIR / "sdwebui" / "models" / "configs")
sd_default_config = os.path.join(sd_configs_path, "sd1.json")
# A1111's default checkpoint file; ours is the embedded default model
default_sd_model_file = str(next(iter(sorted(discovery.DEFAULT_MODEL_DIR.glob("*.safetensors"))), ""))


def _sd_model_file() -> str:
    """`--ckpt` when given, else the embedded default model."""
    return str(getattr(shared.cmd_opts, "ckpt", None) or default_sd_model_file)


def __getattr__(name: str) -> Any:
    if name in _FROM_PATHS:
        return getattr(_paths, name)
    if name == "sd_model_file":
        return _sd_model_file()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_FROM_PATHS, "sd_model_file"})
