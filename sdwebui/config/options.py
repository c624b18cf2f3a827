"""Typed settings store persisted as config.json, with A1111's OptionInfo for extensions.

One `Options` object per app; the engine never reads it (values are copied into per-job settings).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sdwebui.config import options_controlnet, options_ext20, options_faces, options_flux, options_mem
from sdwebui.config.option_info import OptionInfo
from sdwebui.config.options_lora import lora_templates
from sdwebui.config.paths import is_inside, resolve_output_dir
from sdwebui.engine.requests import MAX_STEPS, JobLimits, RequestError

log = logging.getLogger(__name__)


def options_section(section: tuple[str, str], options: dict[str, OptionInfo]) -> dict[str, OptionInfo]:
    for info in options.values():
        info.section = section
    return options


class OptionError(RequestError):
    """A setting's value is refused; `key` (= `field`) names the option."""

    def __init__(self, key: str, reason: str):
        super().__init__(key, reason)
        self.key = key


class Options:
    """Values over registered defaults. Attribute access (`opts.samples_save`) as A1111 extensions expect."""

    def __init__(self, templates: dict[str, OptionInfo], path: Path | None = None):
        object.__setattr__(self, "data_labels", dict(templates))
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_lock", threading.RLock())
        # output folders as the machine's owner wrote them in config.json (trusted: may lie outside the data dir)
        object.__setattr__(self, "_owner_outdirs", {})

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

    def check(self, key: str, value: Any) -> Any:
        """The value as it would be stored; raises OptionError naming `key` (wrong type, out of range,
        not one of the choices, refused by the option's validator). Unknown keys pass unchanged."""
        info = self.data_labels.get(key)
        return _coerce(key, value, info) if info is not None else value

    # --- persistence ---
    def load(self) -> list[str]:
        """Read config.json. An unreadable file is moved aside (`config.json.bad-<time>`) and the defaults
        are used; a value of the wrong type or out of range is ignored. Returns the warnings, also logged."""
        if self._path is None or not (self._path.exists() or self._path.is_symlink()):
            return []
        loaded, problem = read_json_object(self._path)
        if problem is not None:
            warning = f"{self._path} {problem}; starting with default settings ({keep_aside(self._path)})"
            log.warning("%s", warning)
            return [warning]
        warnings = []
        with self._lock:
            for key, value in loaded.items():
                info = self.data_labels.get(key)
                try:
                    self.data[key] = _coerce(key, value, info) if info else value
                except OptionError as exc:
                    warnings.append(f"{self._path.name}: ignoring {exc} (using the default)")
            self._owner_outdirs.update({k: v for k, v in loaded.items() if is_output_dir_key(k)})
        for warning in warnings:
            log.warning("%s", warning)
        return warnings

    def owner_output_dir(self, key: str) -> Any:
        """The output folder `key` as config.json set it at start-up (None if it did not)."""
        return self._owner_outdirs.get(key)

    def save(self) -> None:
        if self._path is None:
            return
        with self._lock:
            payload = {k: v for k, v in self.data.items() if not self._do_not_save(k)}
        write_json_atomic(self._path, payload)

    def _do_not_save(self, key: str) -> bool:
        info = self.data_labels.get(key)
        return bool(info and info.do_not_save)


def is_output_dir_key(key: str) -> bool:
    return key.startswith("outdir_")


def check_output_dirs(options: Options, values: dict[str, Any], data_dir: Path, prefix: str = "") -> None:
    """A request (POST /options, a settings change, override_settings) may not point an output folder outside
    the data dir; the owner's own config.json value stays allowed. Raises OptionError naming the key
    (`prefix` + key, e.g. "override_settings.outdir_samples")."""
    for key, value in values.items():
        if not is_output_dir_key(key) or not value or value == options.owner_output_dir(key):
            continue
        if not isinstance(value, str) or "\0" in value:
            raise OptionError(prefix + key, f"expected a folder name, got {value!r}")
        if not is_inside(resolve_output_dir(value, data_dir), data_dir):
            raise OptionError(
                prefix + key,
                f"{value!r} is outside the data dir; a request may only choose output folders inside it "
                "(the machine's owner can set others in config.json)",
            )


def read_json_object(path: Path) -> tuple[dict[str, Any], str | None]:
    """(the JSON object, None), or ({}, why the file cannot be used)."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except IsADirectoryError:
        return {}, "is a directory, not a file"
    except UnicodeDecodeError as exc:
        return {}, f"is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except json.JSONDecodeError as exc:
        return {}, f"is not valid JSON ({exc.msg} at line {exc.lineno})"
    except OSError as exc:
        return {}, f"cannot be read ({exc.strerror or exc})"
    if not isinstance(loaded, dict):
        return {}, f"holds a JSON {type(loaded).__name__}, not an object"
    return loaded, None


def keep_aside(path: Path) -> str:
    """set_aside, as words for a warning; a file that cannot be renamed is left where it is."""
    try:
        return f"the file is kept as {set_aside(path).name}"
    except OSError as exc:
        return f"the file could not be renamed ({exc.strerror or exc}) and is left as it is"


def set_aside(path: Path) -> Path:
    """Rename a bad settings file to `<name>.bad-<time>` so it is neither lost nor read again."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.bad-{stamp}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.name}.bad-{stamp}-{counter}")
        counter += 1
    os.replace(path, target)
    return target


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
    value = _coerce_type(key, value, info)
    if value is None:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = info.value_range()
        if (low is not None and value < low) or (high is not None and value > high):
            raise OptionError(key, f"must be from {low} to {high}, got {value!r}")
    choices = info.allowed_choices()
    if isinstance(value, str) and choices is not None and value not in choices:
        raise OptionError(key, f"must be one of {choices}, got {value!r}")
    if info.validator is not None:
        reason = info.validator(value)
        if reason:
            raise OptionError(key, reason)
    return value


def _coerce_type(key: str, value: Any, info: OptionInfo) -> Any:
    default = info.default
    if value is None and isinstance(default, (bool, int, float)):
        raise OptionError(key, f"expected {_KIND[type(default)]}, got null")
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
            if not math.isfinite(value):
                raise OptionError(key, f"expected a finite number, got {value!r}")
            return float(value)
        raise OptionError(key, f"expected a number, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise OptionError(key, f"expected a string, got {value!r}")
    if isinstance(default, list):
        if isinstance(value, list):
            return value
        if isinstance(value, str):  # A1111 accepts comma-separated strings for list options
            return [part.strip() for part in value.split(",") if part.strip()]
        raise OptionError(key, f"expected a list, got {value!r}")
    return value


_KIND = {bool: "true/false", int: "an integer", float: "a number"}


def _sampler_names() -> list[str]:
    from sdwebui.engine import samplers

    return samplers.sampler_names()


def _schedule_labels() -> list[str]:
    from sdwebui.engine import samplers

    return [info.label for info in samplers.SCHEDULE_TYPES if info.available]


def _check_filename_pattern(pattern: Any) -> str | None:
    from sdwebui.outputs.filename_pattern import TAG_NAMES, unknown_tags

    unknown = unknown_tags(str(pattern))
    if unknown:
        return (
            f"unknown file name tag(s) {', '.join(f'[{t}]' for t in unknown)}; known: {', '.join(TAG_NAMES)}"
        )
    return None


def _slider(minimum: float, maximum: float, step: float) -> dict[str, float]:
    return {"minimum": minimum, "maximum": maximum, "step": step}


SECTION_SD = ("sd", "Stable Diffusion")
SECTION_SAVING = ("saving-images", "Saving images")
SECTION_PATHS = ("saving-paths", "Paths for saving")
SECTION_SAMPLER = ("sampler-params", "Sampler parameters")
SECTION_PREVIEW = ("ui", "Live previews")
SECTION_UI = ("ui_alternatives", "User interface")
SECTION_IMG2IMG = ("img2img", "img2img")
SECTION_UPSCALING = ("upscaling", "Upscaling")
SECTION_LIMITS = ("limits", "Limits")
SECTION_EXTRA_NETWORKS = ("extra_networks", "Extra Networks")
LIMIT_PREFIX = "limit_"  # these settings bound what one request may cost; a request cannot override them


def default_templates() -> dict[str, OptionInfo]:
    """The built-in settings, grouped in sections as the Settings tab shows them (in this order)."""
    sections = (
        (SECTION_SD, _sd_templates),
        (SECTION_SAVING, _saving_templates),
        (SECTION_PATHS, _path_templates),
        (SECTION_SAMPLER, _sampler_templates),
        (SECTION_IMG2IMG, _img2img_templates),
        (SECTION_UPSCALING, _upscaling_templates),
        (SECTION_LIMITS, _limit_templates),
        (SECTION_PREVIEW, _preview_templates),
        (SECTION_UI, _ui_templates),
        (SECTION_EXTRA_NETWORKS, _extra_network_templates),
        (SECTION_EXTRA_NETWORKS, lora_templates),
        (options_mem.SECTION_MEMORY, options_mem.mem_templates),
        (options_controlnet.SECTION_CONTROLNET, options_controlnet.controlnet_templates),
        (options_ext20.SECTION_COMPAT, options_ext20.ext20_templates),
        (options_flux.SECTION_FLUX, options_flux.flux_templates),
        (options_faces.SECTION_FACES, options_faces.faces_templates),
    )
    templates: dict[str, OptionInfo] = {}
    for section, build in sections:
        templates.update(options_section(section, build()))
    return templates


def _sd_templates() -> dict[str, OptionInfo]:
    """Checkpoint, VAE and Clip skip."""
    return {
        "sd_model_checkpoint": OptionInfo("", "Stable Diffusion checkpoint"),
        "sd_checkpoints_limit": OptionInfo(
            1,
            "Maximum number of checkpoints loaded at the same time",
            component_args=_slider(1, 10, 1),
        ),
        "sd_vae": OptionInfo("Automatic", "SD VAE"),
        "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", component_args=_slider(1, 12, 1)),
    }


def _extra_network_templates() -> dict[str, OptionInfo]:
    """LoRA (A1111's Lora extension settings)."""
    return {
        "lora_add_hashes_to_infotext": OptionInfo(True, "Add Lora hashes to infotext"),
    }


def _saving_templates() -> dict[str, OptionInfo]:
    """How generated images are saved."""
    return {
        "samples_save": OptionInfo(True, "Always save all generated images"),
        "samples_format": OptionInfo("png", "File format for images", choices=["png", "jpg", "jpeg", "webp"]),
        "samples_filename_pattern": OptionInfo(
            "[seed]", "Images filename pattern", validator=_check_filename_pattern
        ),
        "save_images_add_number": OptionInfo(True, "Add number to filename when saving"),
        "enable_pnginfo": OptionInfo(
            True, "Save text information about generation parameters as chunks to png files"
        ),
    }


def _path_templates() -> dict[str, OptionInfo]:
    """Output folders (relative to the data dir)."""
    return {
        "outdir_samples": OptionInfo(
            "", "Output directory for images; if empty, defaults to three directories below"
        ),
        "outdir_txt2img_samples": OptionInfo("outputs/txt2img-images", "Output directory for txt2img images"),
        "outdir_img2img_samples": OptionInfo("outputs/img2img-images", "Output directory for img2img images"),
        "outdir_extras_samples": OptionInfo(
            "outputs/extras-images", "Output directory for images from extras tab"
        ),
        "outdir_grids": OptionInfo(
            "", "Output directory for grids; if empty, defaults to two directories below"
        ),
        "outdir_txt2img_grids": OptionInfo("outputs/txt2img-grids", "Output directory for txt2img grids"),
        "outdir_img2img_grids": OptionInfo("outputs/img2img-grids", "Output directory for img2img grids"),
    }


def _sampler_templates() -> dict[str, OptionInfo]:
    """Sampler defaults: eta, ENSD, default sampler and schedule type."""
    return {
        "eta_ancestral": OptionInfo(
            1.0, "Eta for k-diffusion samplers", component_args=_slider(0.0, 1.0, 0.01)
        ),
        "eta_ddim": OptionInfo(0.0, "Eta for DDIM", component_args=_slider(0.0, 1.0, 0.01)),
        # A1111's ENSD: step noise of ancestral samplers (and DDIM with eta) from seed + delta
        "eta_noise_seed_delta": OptionInfo(
            0, "Eta noise seed delta", component_args={"minimum": 0, "maximum": 2**31 - 1}, infotext="ENSD"
        ),
        "default_sampler": OptionInfo("Euler a", "Default sampler", choices=_sampler_names),
        "default_scheduler": OptionInfo("Automatic", "Default schedule type", choices=_schedule_labels),
    }


def _img2img_templates() -> dict[str, OptionInfo]:
    """img2img steps and noise."""
    return {
        "img2img_fix_steps": OptionInfo(
            False, "With img2img, do exactly the amount of steps the slider specifies"
        ),
        "initial_noise_multiplier": OptionInfo(
            1.0, "Noise multiplier for img2img", component_args=_slider(0.0, 1.5, 0.001)
        ),
        "img2img_extra_noise": OptionInfo(
            0.0,
            "Extra noise multiplier for img2img (0 = disabled; should be lower than denoising strength)",
            component_args=_slider(0.0, 1.0, 0.01),
        ),
        "inpainting_mask_weight": OptionInfo(
            1.0, "Inpainting conditioning mask strength", component_args=_slider(0.0, 1.0, 0.01)
        ),
    }


def _upscaling_templates() -> dict[str, OptionInfo]:
    """Tiles of the upscaler models (A1111 names): the device holds one tile at a time."""
    return {
        "ESRGAN_tile": OptionInfo(
            192, "Tile size for upscaler models (0 = no tiling)", component_args=_slider(0, 512, 16)
        ),
        "ESRGAN_tile_overlap": OptionInfo(
            8, "Tile overlap for upscaler models, in pixels", component_args=_slider(0, 48, 1)
        ),
    }


def _preview_templates() -> dict[str, OptionInfo]:
    """Live previews during sampling."""
    return {
        "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
        "show_progress_every_n_steps": OptionInfo(
            5,
            "Live preview display period (in sampling steps)",
            component_args=_slider(0, 32, 1),
        ),
        # sdwebui.engine.previews.PREVIEW_METHODS; build_services adds "TAESD" (preview_method_option)
        "show_progress_type": OptionInfo(
            "Approx cheap",
            "Live preview method",
            choices=["Full", "Approx cheap"],
            comment_after="Approx NN is not offered; TAESD is when models/VAE-approx holds "
            "taesd_decoder.pth (SD1/SD2) or taesdxl_decoder.pth (SDXL)",
        ),
    }


def _ui_templates() -> dict[str, OptionInfo]:
    """Quicksettings and UI limits."""
    return {
        "quicksettings_list": OptionInfo(
            ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"], "Quicksettings list"
        ),
        "max_batch_count": OptionInfo(100, "Maximum batch count", component_args=_slider(1, 1000, 1)),
    }


def _limit_templates() -> dict[str, OptionInfo]:
    limits = JobLimits()
    return {
        "limit_prompt_chars": OptionInfo(
            limits.prompt_chars, "Longest prompt / negative prompt (characters)"
        ),
        "limit_prompt_tokens": OptionInfo(limits.prompt_tokens, "Longest prompt / negative prompt (tokens)"),
        "limit_images": OptionInfo(limits.images, "Most images per job (batch count * batch size)"),
        "limit_steps": OptionInfo(limits.steps, f"Most sampling steps per image (at most {MAX_STEPS})"),
        "limit_image_pixels": OptionInfo(
            limits.image_pixels, "Largest image (width * height, also seed resize) in pixels"
        ),
        "limit_job_pixels": OptionInfo(limits.job_pixels, "Most pixels per job (width * height * images)"),
    }


def preview_method_option(info: OptionInfo, models_dir: Path) -> OptionInfo:
    """The `show_progress_type` option with the methods this data dir offers (read at start-up)."""
    from sdwebui.engine.previews import METHOD_TAESD, offered_methods

    choices = list(offered_methods(models_dir))
    if METHOD_TAESD in choices:
        note = "TAESD decodes with the models/VAE-approx decoder of the loaded model's family"
        return replace(info, choices=choices, comment_after=f"Approx NN is not offered. {note}")
    return replace(info, choices=choices)
