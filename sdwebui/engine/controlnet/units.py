"""The ControlNet unit: sd-webui-controlnet's API unit (`ControlNetUnit`) as a typed record, and its parser.

`parse_unit` reads one entry of `alwayson_scripts.controlnet.args` (a dict with the extension's field names;
enums by name or by their integer index, the extension's legacy aliases too) into a `ControlNetUnit`, raising
`RequestError` naming the field (`args[i].weight`). `ControlNetUnit.serialize` / `parse_infotext` are the
extension's infotext form (`Module: canny, Model: ..., Weight: 1.0, ...`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import io
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from sdwebui.engine.errors import RequestError

ARGS_FIELD = "alwayson_scripts.controlnet.args"
DEFAULT_MAX_PIXELS = 4096 * 4096


class ResizeMode(enum.Enum):
    JUST_RESIZE = "Just Resize"
    CROP_AND_RESIZE = "Crop and Resize"  # the extension's INNER_FIT, its default
    RESIZE_AND_FILL = "Resize and Fill"  # OUTER_FIT


class ControlMode(enum.Enum):
    BALANCED = "Balanced"
    PROMPT = "My prompt is more important"
    CONTROL = "ControlNet is more important"


class HiResOption(enum.Enum):
    BOTH = "Both"
    LOW_RES_ONLY = "Low res only"
    HIGH_RES_ONLY = "High res only"


# older UI labels the extension still accepts
_RESIZE_ALIASES = {
    "Inner Fit (Scale to Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Envelope (Outer Fit)": "Resize and Fill",
}


@dataclass(frozen=True)
class ControlImage:
    """One control image of a unit, with its optional mask (white = the masked part)."""

    image: Image.Image
    mask: Image.Image | None = None


@dataclass(frozen=True)
class ControlNetUnit:
    """Every field of the extension's API unit. `images` empty: the job's init image (img2img) is used."""

    enabled: bool = False
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    images: tuple[ControlImage, ...] = ()  # several: a batch of control images, one per image of a batch
    resize_mode: ResizeMode = ResizeMode.CROP_AND_RESIZE
    low_vram: bool = False
    processor_res: int = -1  # -1: the preprocessor's default
    threshold_a: float = -1.0
    threshold_b: float = -1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: ControlMode = ControlMode.BALANCED
    inpaint_crop_input_image: bool = True
    hr_option: HiResOption = HiResOption.BOTH
    save_detected_map: bool = True
    advanced_weighting: tuple[float, ...] | None = None
    effective_region_mask: Image.Image | None = None
    union_control_type: str = "Unknown"
    pulid_mode: str = "Fidelity"
    ipadapter_input: tuple[str, ...] | None = None  # base64 torch tensors of a precomputed IP-Adapter input

    def serialize(self) -> str:
        """The infotext value of `ControlNet i:` in the extension's format."""
        values = {
            "Module": self.module,
            "Model": self.model,
            "Weight": _number(self.weight),
            "Resize Mode": self.resize_mode.value,
            "Processor Res": str(self.processor_res),
            "Threshold A": _number(self.threshold_a),
            "Threshold B": _number(self.threshold_b),
            "Guidance Start": _number(self.guidance_start),
            "Guidance End": _number(self.guidance_end),
            "Pixel Perfect": str(self.pixel_perfect),
            "Control Mode": self.control_mode.value,
        }
        return ", ".join(f"{key}: {value}" for key, value in values.items())


def _number(value: float) -> str:
    return str(float(value))


# ---- the API's dict form -------------------------------------------------------------------------------------

ImageDecoder = Callable[[Any, str], Image.Image]

_LEGACY_ALIASES = {
    "guidance": "guidance_end",
    "lowvram": "low_vram",
    "input_image": "image",
    "mask_image": "mask",
}
# UI / batch / AnimateDiff fields of the extension's unit: accepted only with their inert default values
_INERT_FIELDS: dict[str, tuple[Any, ...]] = {
    "is_ui": (False,),
    "input_mode": ("simple", "InputMode.SIMPLE", 0),
    "batch_images": (None, "", []),
    "output_dir": ("", None),
    "loopback": (False,),
    "batch_mask_dir": (None, ""),
    "animatediff_batch": (False,),
    "batch_modifiers": ([], None),
    "batch_image_files": ([], None),
    "batch_keyframe_idx": (None, "", []),
    "rgbbgr_mode": (False,),
}
_KNOWN = {f.name for f in dataclasses.fields(ControlNetUnit)} - {"images"} | {"image", "mask", "guessmode"}


def parse_units(
    args: Any, decode: ImageDecoder | None = None, field_name: str = ARGS_FIELD
) -> list[ControlNetUnit]:
    """`alwayson_scripts.controlnet.args` -> units (disabled ones kept, so indexes match the request)."""
    if isinstance(args, Mapping):  # {"args": [...]} passed whole
        args = args.get("args", [])
    if not isinstance(args, (list, tuple)):
        raise RequestError(field_name, "expected a list of ControlNet units")
    return [parse_unit(raw, f"{field_name}[{i}]", decode) for i, raw in enumerate(args)]


def parse_unit(raw: Any, field_name: str, decode: ImageDecoder | None = None) -> ControlNetUnit:
    """One unit in the extension's dict form -> ControlNetUnit; RequestError names `field_name.<field>`."""
    if isinstance(raw, ControlNetUnit):
        return raw
    if not isinstance(raw, Mapping):
        raise RequestError(
            field_name, "expected a ControlNet unit object (field names as sd-webui-controlnet)"
        )
    values = _apply_aliases(dict(raw), field_name)
    _check_fields(values, field_name)
    decode = decode or default_decoder()

    def name(key: str) -> str:
        return f"{field_name}.{key}"

    start = _float(values, "guidance_start", 0.0, name, 0.0, 1.0)
    end = _float(values, "guidance_end", 1.0, name, 0.0, 1.0)
    if start > end:
        raise RequestError(name("guidance_start"), f"guidance_start ({start}) > guidance_end ({end})")
    control_mode = _enum(values, "control_mode", ControlMode, name)
    if values.get("guessmode") is True and "control_mode" not in values:
        control_mode = ControlMode.CONTROL  # the pre-1.1 "Guess Mode" became "ControlNet is more important"
    return ControlNetUnit(
        # absent: enabled, the API's default before v1.1.4 that clients copied from its wiki rely on (the
        # extension's UI record defaults to off; an API unit nobody meant to use would not name a model)
        enabled=_bool(values, "enabled", True, name),
        module=_str(values, "module", "none", name),
        model=_str(values, "model", "None", name),
        weight=_float(values, "weight", 1.0, name, 0.0, 2.0),
        images=_images(values.get("image"), values.get("mask"), name("image"), decode),
        resize_mode=_enum(values, "resize_mode", ResizeMode, name, _RESIZE_ALIASES),
        low_vram=_bool(values, "low_vram", False, name),
        processor_res=int(_float(values, "processor_res", -1, name, -1, 8192, integer=True)),
        threshold_a=_float(values, "threshold_a", -1.0, name),
        threshold_b=_float(values, "threshold_b", -1.0, name),
        guidance_start=start,
        guidance_end=end,
        pixel_perfect=_bool(values, "pixel_perfect", False, name),
        control_mode=control_mode,
        inpaint_crop_input_image=_bool(values, "inpaint_crop_input_image", True, name),
        hr_option=_enum(values, "hr_option", HiResOption, name),
        save_detected_map=_bool(values, "save_detected_map", True, name),
        advanced_weighting=_weights(values.get("advanced_weighting"), name("advanced_weighting")),
        effective_region_mask=_optional_image(values.get("effective_region_mask"), name, decode),
        union_control_type=_str(values, "union_control_type", "Unknown", name),
        pulid_mode=_str(values, "pulid_mode", "Fidelity", name),
        ipadapter_input=_strings(values.get("ipadapter_input"), name("ipadapter_input")),
    )


def _apply_aliases(values: dict[str, Any], field_name: str) -> dict[str, Any]:
    for alias, key in _LEGACY_ALIASES.items():
        if alias in values:
            if key in values and values[key] is not None and values[alias] is not None:
                raise RequestError(f"{field_name}.{alias}", f"given together with '{key}' (its alias)")
            aliased = values.pop(alias)
            if values.get(key) is None:
                values[key] = aliased
    return values


def _check_fields(values: Mapping[str, Any], field_name: str) -> None:
    for key, value in values.items():
        if key in _INERT_FIELDS:
            if value not in _INERT_FIELDS[key]:
                raise RequestError(
                    f"{field_name}.{key}",
                    "the extension's UI/batch-directory mode is not supported over the API",
                )
        elif key not in _KNOWN:
            raise RequestError(f"{field_name}.{key}", "unknown ControlNet unit field")


def _bool(values: Mapping, key: str, default: bool, name: Callable[[str], str]) -> bool:
    value = values.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise RequestError(name(key), f"expected true or false, got {value!r}")


def _str(values: Mapping, key: str, default: str, name: Callable[[str], str]) -> str:
    value = values.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise RequestError(name(key), f"expected a string, got {value!r}")
    return value


def _float(
    values: Mapping,
    key: str,
    default: float,
    name: Callable[[str], str],
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
) -> float:
    value = values.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(name(key), f"expected a number, got {value!r}")
    if integer and value != int(value):
        raise RequestError(name(key), f"expected an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise RequestError(name(key), f"{value} is outside [{low}, {high}]")
    return float(value)


def _enum(values: Mapping, key: str, kind: type[enum.Enum], name: Callable[[str], str], aliases=None):
    """An enum by its label ("Crop and Resize"), its member name, or its integer index (the extension's forms)."""
    members = list(kind)
    value = values.get(key)
    if value is None:
        return members[0] if kind is not ResizeMode else ResizeMode.CROP_AND_RESIZE
    if isinstance(value, kind):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if kind is ResizeMode and value == 3:  # A1111's "Just Resize (Latent upscale)"
            return ResizeMode.JUST_RESIZE
        if 0 <= value < len(members):
            return members[value]
    if isinstance(value, str):
        text = (aliases or {}).get(value, value)
        for member in members:
            if text in (member.value, member.name, f"{kind.__name__}.{member.name}"):
                return member
            if text.lower() == member.value.lower():
                return member
    choices = ", ".join(f"{i} / {m.value!r}" for i, m in enumerate(members))
    raise RequestError(name(key), f"{value!r} is not one of {choices}")


def _weights(value: Any, field_name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise RequestError(field_name, "expected a non-empty list of numbers")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise RequestError(field_name, f"expected numbers, got {item!r}")
    return tuple(float(item) for item in value)


def _strings(value: Any, field_name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(i, str) for i in items):
        raise RequestError(field_name, "expected a base64 string or a non-empty list of them")
    return tuple(items)


def _optional_image(value: Any, name: Callable[[str], str], decode: ImageDecoder) -> Image.Image | None:
    if value is None or (isinstance(value, str) and not value):
        return None
    return decode(value, name("effective_region_mask"))


def _images(image: Any, mask: Any, field_name: str, decode: ImageDecoder) -> tuple[ControlImage, ...]:
    """The extension's image forms: b64 (+ `mask`), {"image", "mask"}, [image, mask], [{"image", "mask"}, ...]."""
    if image is None or (isinstance(image, str) and not image):
        if mask is not None and mask != "":
            raise RequestError(field_name.replace(".image", ".mask"), "a mask without an image")
        return ()
    if isinstance(image, (list, tuple)):
        if not image:
            return ()
        if all(isinstance(item, Mapping) for item in image):
            return tuple(_image_dict(item, f"{field_name}[{i}]", decode) for i, item in enumerate(image))
        if len(image) != 2:
            raise RequestError(field_name, "a list is [image, mask] or a list of {image, mask} objects")
        return (_pair(image[0], image[1], field_name, f"{field_name}[1]", decode),)
    if isinstance(image, Mapping):
        return (_image_dict(image, field_name, decode),)
    return (_pair(image, mask, field_name, field_name.replace(".image", ".mask"), decode),)


def _image_dict(item: Mapping, field_name: str, decode: ImageDecoder) -> ControlImage:
    if item.get("image") is None:
        raise RequestError(f"{field_name}.image", "missing")
    return _pair(item["image"], item.get("mask"), f"{field_name}.image", f"{field_name}.mask", decode)


def _pair(image: Any, mask: Any, image_field: str, mask_field: str, decode: ImageDecoder) -> ControlImage:
    picture = decode(image, image_field)
    if mask is None or (isinstance(mask, str) and not mask):
        return ControlImage(picture)
    mask_picture = decode(mask, mask_field)
    if mask_picture.size != picture.size:
        raise RequestError(
            mask_field, f"mask of {mask_picture.size} does not match the image's {picture.size}"
        )
    return ControlImage(picture, mask_picture)


_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


def default_decoder(max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageDecoder:
    """A decoder for PIL images, numpy arrays (the UI's values) and base64 strings (the API's)."""

    def decode(value: Any, field_name: str) -> Image.Image:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, np.ndarray):
            image = Image.fromarray(np.clip(value, 0, 255).astype(np.uint8))
        elif isinstance(value, str) and value.strip():
            image = _decode_base64(value, field_name)
        else:
            raise RequestError(field_name, "expected a base64-encoded image")
        if image.width * image.height > max_pixels:
            raise RequestError(
                field_name, f"image of {image.width}x{image.height} exceeds {max_pixels} pixels"
            )
        return (
            image.convert("RGBA" if "A" in image.getbands() else "RGB")
            if image.mode not in ("RGB", "L")
            else image
        )

    return decode


def _decode_base64(value: str, field_name: str) -> Image.Image:
    try:
        raw = base64.b64decode(_DATA_URL.sub("", value.strip(), count=1), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(field_name, f"not valid base64: {exc}") from exc
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(field_name, f"not a readable image: {exc}") from exc
    return image


# ---- infotext ------------------------------------------------------------------------------------------------

_INFOTEXT_KEYS = {
    "Module": "module",
    "Model": "model",
    "Weight": "weight",
    "Resize Mode": "resize_mode",
    "Processor Res": "processor_res",
    "Threshold A": "threshold_a",
    "Threshold B": "threshold_b",
    "Guidance Start": "guidance_start",
    "Guidance End": "guidance_end",
    "Pixel Perfect": "pixel_perfect",
    "Control Mode": "control_mode",
}


def parse_infotext(text: str, field_name: str = "ControlNet") -> ControlNetUnit:
    """`Module: canny, Model: x [12345678], Weight: 1.0, ...` -> an enabled unit (no image)."""
    values: dict[str, Any] = {"enabled": True}
    for item in text.split(","):
        key, sep, value = item.strip().partition(": ")
        if not sep or key not in _INFOTEXT_KEYS:
            raise RequestError(field_name, f"not a ControlNet infotext item: {item.strip()!r}")
        values[_INFOTEXT_KEYS[key]] = _infotext_value(value.strip())
    return parse_unit(values, field_name)


def _infotext_value(value: str) -> Any:
    if value in ("True", "False"):
        return value == "True"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def unit_fields_from_infotext(unit: ControlNetUnit) -> Mapping[str, Any]:
    """The pasteable (UI) values of an infotext unit: field name -> value (enums as their labels)."""
    out: dict[str, Any] = {}
    for key in _INFOTEXT_KEYS.values():
        value = getattr(unit, key)
        out[key] = value.value if isinstance(value, enum.Enum) else value
    return out


__all__ = [
    "ARGS_FIELD",
    "ControlImage",
    "ControlMode",
    "ControlNetUnit",
    "HiResOption",
    "ImageDecoder",
    "ResizeMode",
    "default_decoder",
    "parse_infotext",
    "parse_unit",
    "parse_units",
    "unit_fields_from_infotext",
]
