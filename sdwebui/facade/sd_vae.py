"""A1111's `modules.sd_vae` for extensions: the standalone VAE files and the VAE of the current model.

`vae_dict` (name -> file) is a live view of the VAEs the app's model manager discovered; `reload_vae_weights`
swaps the current model's VAE through the manager (the next job applies its own `sd_vae` setting again, as
A1111's processing does). `base_vae` is the checkpoint's own VAE module (a diffusers AutoencoderKL), not
A1111's state dict.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

from sdwebui.facade import bound, shared
from sdwebui.facade.live import LiveDict

unspecified = object()  # A1111's marker: "use the sd_vae setting"
vae_ignore_keys = {"model_ema.decay", "model_ema.num_updates"}
VAE_AUTOMATIC, VAE_NONE = "Automatic", "None"


def _files() -> list[tuple[str, Path]]:
    models = bound.models()
    files = getattr(models, "vae_files", None)
    return list(files()) if files is not None else []


def _version() -> Hashable:
    return id(bound.models()), tuple(_files())


vae_dict: LiveDict = LiveDict(_version, lambda: {name: str(path) for name, path in _files()})


def refresh_vae_list() -> None:
    """Re-scan the model folders (checkpoints and VAEs)."""
    models = bound.models()
    if models is not None:
        models.refresh()
    vae_dict.sync()


def _current() -> Any:
    return getattr(bound.models(), "current", None)


def _loaded_vae_file() -> str | None:
    current = _current()
    name = getattr(current, "vae_name", None)
    return vae_dict.get(name) if name else None


def _base_vae() -> Any:
    current = _current()
    if current is None:
        return None
    return current.extra.get("own_vae", current.vae)


def __getattr__(name: str) -> Any:  # computed on access: the current model changes under us
    if name == "loaded_vae_file":
        return _loaded_vae_file()
    if name == "base_vae":
        return _base_vae()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _vae_name(vae_file: Any) -> str:
    """A1111 passes a file path (or None = the checkpoint's own); we also accept a listed VAE name."""
    if vae_file is unspecified:
        return str(shared.opts.get("sd_vae") or VAE_AUTOMATIC)
    if vae_file is None or vae_file == VAE_NONE:
        return VAE_NONE
    text = str(vae_file)
    for name, path in vae_dict.items():
        if text in (name, path) or Path(text).resolve() == Path(path):
            return name
    if text == VAE_AUTOMATIC:
        return VAE_AUTOMATIC
    raise FileNotFoundError(f"VAE {text!r} is not one of the listed VAE files: {sorted(vae_dict)}")


def reload_vae_weights(sd_model: Any = None, vae_file: Any = unspecified):
    """Put `vae_file` (default: the `sd_vae` setting) on the current model; returns `shared.sd_model`."""
    models = bound.models()
    if models is None:
        raise RuntimeError("sd_vae: the app's model manager is not bound yet")
    name = _vae_name(vae_file)

    def work() -> None:
        current = _current()
        models.load(current.info.title if current is not None else None, vae=name)

    bound.in_queue(work)
    return shared.current_model()


def find_vae_near_checkpoint(checkpoint_file: str) -> str | None:
    """A VAE file named like the checkpoint (`<name>.vae.pt`, ...) among the listed ones."""
    stem = Path(checkpoint_file).with_suffix("").name
    for path in vae_dict.values():
        if Path(path).name.split(".")[0] == stem:
            return path
    return None
