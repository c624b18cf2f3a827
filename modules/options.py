"""Typed settings store persisted as config.json, with A1111's OptionInfo for extensions.

One `Options` object per app; the engine never reads it (values are copied into per-job settings).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class OptionInfo:
    """A1111-compatible option description: default value, label, UI component and section."""

    default: Any = None
    label: str = ""
    component: Any = None
    component_args: Any = None
    onchange: Callable[[], None] | None = None
    section: tuple[str, str] | None = None
    refresh: Callable[[], None] | None = None
    comment_before: str = ""
    comment_after: str = ""
    infotext: str | None = None
    restrict_api: bool = False
    category_id: str | None = None
    do_not_save: bool = False
    choices: list[Any] | None = field(default=None, repr=False)  # for dropdown-like options

    def info(self, info: str) -> OptionInfo:
        self.label += f" ({info})"
        return self

    def html(self, html: str) -> OptionInfo:
        self.comment_after += html
        return self

    def link(self, label: str, url: str) -> OptionInfo:
        self.comment_before += f"[{label}]({url})"
        return self

    def needs_restart(self) -> OptionInfo:
        self.comment_after += " (requires restart)"
        return self

    def needs_reload_ui(self) -> OptionInfo:
        self.comment_after += " (requires Reload UI)"
        return self


def options_section(section: tuple[str, str], options: dict[str, OptionInfo]) -> dict[str, OptionInfo]:
    for info in options.values():
        info.section = section
    return options


class OptionError(ValueError):
    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class Options:
    """Values over registered defaults. Attribute access (`opts.samples_save`) as A1111 extensions expect."""

    def __init__(self, templates: dict[str, OptionInfo], path: Path | None = None):
        object.__setattr__(self, "data_labels", dict(templates))
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_lock", threading.RLock())

    # --- attribute access for extensions ---
    def __getattr__(self, key: str) -> Any:
        data = object.__getattribute__(self, "data")
        labels = object.__getattribute__(self, "data_labels")
        if key in data:
            return data[key]
        if key in labels:
            return labels[key].default
        raise AttributeError(f"no option named {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        self.set(key, value)

    # --- typed API ---
    def get(self, key: str, default: Any = None) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            return default

    def set(self, key: str, value: Any, run_callbacks: bool = True) -> bool:
        """Set one option. Unknown keys are stored too (A1111 keeps them), typed keys are checked."""
        with self._lock:
            info = self.data_labels.get(key)
            if info is not None:
                value = _coerce(key, value, info)
            old = self.get(key)
            if old == value and key in self.data:
                return False
            self.data[key] = value
        if run_callbacks and info is not None and info.onchange is not None:
            info.onchange()
        return True

    def add_option(self, key: str, info: OptionInfo) -> None:
        self.data_labels[key] = info

    def items(self) -> dict[str, Any]:
        with self._lock:
            out = {key: info.default for key, info in self.data_labels.items()}
            out.update(self.data)
            return out

    def same_type(self, key: str, value: Any) -> bool:
        info = self.data_labels.get(key)
        return info is None or info.default is None or _coerce_ok(value, info.default)

    # --- persistence ---
    def load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            loaded = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise OptionError("config.json", f"cannot read {self._path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise OptionError("config.json", f"{self._path} does not hold a JSON object")
        with self._lock:
            for key, value in loaded.items():
                info = self.data_labels.get(key)
                try:
                    self.data[key] = _coerce(key, value, info) if info else value
                except OptionError:
                    continue  # a stale value of the wrong type falls back to the default

    def save(self) -> None:
        if self._path is None:
            return
        with self._lock:
            payload = {k: v for k, v in self.data.items() if not self._do_not_save(k)}
        write_json_atomic(self._path, payload)

    def _do_not_save(self, key: str) -> bool:
        info = self.data_labels.get(key)
        return bool(info and info.do_not_save)


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=4, ensure_ascii=False)
    os.replace(tmp, path)


def _coerce_ok(value: Any, default: Any) -> bool:
    try:
        _coerce("", value, OptionInfo(default))
        return True
    except OptionError:
        return False


def _coerce(key: str, value: Any, info: OptionInfo) -> Any:
    default = info.default
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise OptionError(key, f"expected true/false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise OptionError(key, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise OptionError(key, f"expected an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise OptionError(key, f"expected a number, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str):
            if info.choices is not None and value not in info.choices:
                raise OptionError(key, f"must be one of {info.choices}, got {value!r}")
            return value
        raise OptionError(key, f"expected a string, got {value!r}")
    if isinstance(default, list):
        if isinstance(value, list):
            return value
        if isinstance(value, str):  # A1111 accepts comma-separated strings for list options
            return [part.strip() for part in value.split(",") if part.strip()]
        raise OptionError(key, f"expected a list, got {value!r}")
    return value


SECTION_SD = ("sd", "Stable Diffusion")
SECTION_SAVING = ("saving-images", "Saving images")
SECTION_PATHS = ("saving-paths", "Paths for saving")
SECTION_SAMPLER = ("sampler-params", "Sampler parameters")
SECTION_PREVIEW = ("ui", "Live previews")
SECTION_UI = ("ui_alternatives", "User interface")
SECTION_IMG2IMG = ("img2img", "img2img")


def default_templates() -> dict[str, OptionInfo]:
    """The built-in settings, grouped in sections as the Settings tab shows them."""
    templates: dict[str, OptionInfo] = {}
    templates.update(
        options_section(
            SECTION_SD,
            {
                "sd_model_checkpoint": OptionInfo("", "Stable Diffusion checkpoint"),
                "sd_checkpoints_limit": OptionInfo(
                    1, "Maximum number of checkpoints loaded at the same time"
                ),
                "sd_vae": OptionInfo("Automatic", "SD VAE"),
                "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip"),
            },
        )
    )
    templates.update(
        options_section(
            SECTION_SAVING,
            {
                "samples_save": OptionInfo(True, "Always save all generated images"),
                "samples_format": OptionInfo("png", "File format for images", choices=["png"]),
                "samples_filename_pattern": OptionInfo("[seed]", "Images filename pattern"),
                "save_images_add_number": OptionInfo(True, "Add number to filename when saving"),
                "enable_pnginfo": OptionInfo(
                    True, "Save text information about generation parameters as chunks to png files"
                ),
            },
        )
    )
    templates.update(
        options_section(
            SECTION_PATHS,
            {
                "outdir_samples": OptionInfo(
                    "", "Output directory for images; if empty, defaults to three directories below"
                ),
                "outdir_txt2img_samples": OptionInfo(
                    "outputs/txt2img-images", "Output directory for txt2img images"
                ),
                "outdir_img2img_samples": OptionInfo(
                    "outputs/img2img-images", "Output directory for img2img images"
                ),
                "outdir_extras_samples": OptionInfo(
                    "outputs/extras-images", "Output directory for images from extras tab"
                ),
                "outdir_grids": OptionInfo(
                    "", "Output directory for grids; if empty, defaults to two directories below"
                ),
                "outdir_txt2img_grids": OptionInfo(
                    "outputs/txt2img-grids", "Output directory for txt2img grids"
                ),
                "outdir_img2img_grids": OptionInfo(
                    "outputs/img2img-grids", "Output directory for img2img grids"
                ),
            },
        )
    )
    templates.update(
        options_section(
            SECTION_SAMPLER,
            {
                "eta_ancestral": OptionInfo(1.0, "Eta for k-diffusion samplers"),
                "eta_ddim": OptionInfo(0.0, "Eta for DDIM"),
                "default_sampler": OptionInfo("Euler a", "Default sampler"),
                "default_scheduler": OptionInfo("Automatic", "Default schedule type"),
            },
        )
    )
    templates.update(
        options_section(
            SECTION_IMG2IMG,
            {
                "img2img_fix_steps": OptionInfo(
                    False, "With img2img, do exactly the amount of steps the slider specifies"
                ),
                "initial_noise_multiplier": OptionInfo(1.0, "Noise multiplier for img2img"),
                "inpainting_mask_weight": OptionInfo(1.0, "Inpainting conditioning mask strength"),
            },
        )
    )
    templates.update(
        options_section(
            SECTION_PREVIEW,
            {
                "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
                "show_progress_every_n_steps": OptionInfo(
                    5, "Live preview display period (in sampling steps)"
                ),
                # modules.previews.PREVIEW_METHODS; build_services adds "TAESD" (preview_method_option)
                "show_progress_type": OptionInfo(
                    "Approx cheap",
                    "Live preview method",
                    choices=["Full", "Approx cheap"],
                    comment_after="Approx NN is not offered; TAESD is when models/VAE-approx holds "
                    "taesd_decoder.pth (SD1/SD2) or taesdxl_decoder.pth (SDXL)",
                ),
            },
        )
    )
    templates.update(
        options_section(
            SECTION_UI,
            {
                "quicksettings_list": OptionInfo(
                    ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"], "Quicksettings list"
                ),
                "max_batch_count": OptionInfo(100, "Maximum batch count"),
            },
        )
    )
    return templates
