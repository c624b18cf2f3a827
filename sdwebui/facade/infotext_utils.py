"""A1111's `modules.infotext_utils` for extensions: parse infotext, override settings, paste-field registries.

Parsing wraps `sdwebui.outputs.infotext` (the same parser the UI's paste uses). A1111's "send to tab" buttons and
paste-field wiring are UI concepts our tabs implement themselves, so `add_paste_fields`,
`register_paste_params_button`, `create_buttons`, `bind_buttons` and `connect_paste_params_buttons` only
record what extensions register (readable in `paste_fields` / `registered_param_bindings`) and wire
nothing: an extension that calls them loads and runs, its extra buttons simply do not paste.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import Any, NamedTuple

from PIL import Image

from sdwebui.engine import infotext_fields
from sdwebui.facade import shared
from sdwebui.outputs import infotext

log = logging.getLogger("webui.extensions")

__all__ = [
    "ParamBinding",
    "PasteField",
    "add_paste_fields",
    "bind_buttons",
    "connect_paste_params_buttons",
    "create_buttons",
    "create_override_settings_dict",
    "get_override_settings",
    "image_from_url_text",
    "infotext_to_setting_name_mapping",
    "paste_fields",
    "parse_generation_parameters",
    "quote",
    "register_paste_params_button",
    "registered_param_bindings",
    "reset",
    "unquote",
]

quote = infotext.quote
unquote = infotext.unquote

# infotext key -> setting name, for settings whose OptionInfo has no `infotext` of its own (A1111's table)
infotext_to_setting_name_mapping: list[tuple[str, str]] = [
    ("Clip skip", "CLIP_stop_at_last_layers"),
    ("Conditional mask weight", "inpainting_mask_weight"),
    ("Model hash", "sd_model_checkpoint"),
    ("ENSD", "eta_noise_seed_delta"),
    ("Eta DDIM", "eta_ddim"),
    ("Eta", "eta_ancestral"),
    ("VAE", "sd_vae"),
    ("RNG", "randn_source"),
    ("NGMS", "s_min_uncond"),
    ("Token merging ratio", "token_merging_ratio"),
]


class PasteField(NamedTuple):
    """A component and the infotext key (or function of the parsed dict) that fills it."""

    component: Any
    target: Any
    api: str | None = None


class ParamBinding:
    """A "send to <tab>" button registration (recorded only; see the module docstring)."""

    def __init__(
        self,
        paste_button: Any,
        tabname: str,
        source_text_component: Any = None,
        source_image_component: Any = None,
        source_tabname: str | None = None,
        override_settings_component: Any = None,
        paste_field_names: list[str] | None = None,
    ):
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = list(paste_field_names or [])


# what extensions registered, per process; reset() clears it when scripts are reloaded
paste_fields: dict[str, dict[str, Any]] = {}
registered_param_bindings: list[ParamBinding] = []


def reset() -> None:
    paste_fields.clear()
    registered_param_bindings.clear()


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None) -> dict[str, Any]:
    """{"Prompt", "Negative prompt", <infotext key>: <value>, ...} as A1111 returns it (sizes split into -1/-2)."""
    res = infotext_fields.parse_infotext(x or "")
    for key in skip_fields or []:
        res.pop(key, None)
    return res


def _setting_names() -> list[tuple[str, str]]:
    labels = getattr(getattr(shared.opts, "_target", None), "data_labels", {}) or {}
    own = [(info.infotext, key) for key, info in labels.items() if getattr(info, "infotext", None)]
    return own + infotext_to_setting_name_mapping


def get_override_settings(params: dict[str, Any], *, skip_fields: list[str] | None = None) -> list[tuple]:
    """(infotext key, setting name, value) for every setting the parsed infotext sets to a non-current value."""
    res = []
    skip = set(skip_fields or [])
    for param_name, setting_name in _setting_names():
        if param_name in skip or setting_name not in shared.opts:
            continue
        value = params.get(param_name)
        if value is None:
            continue
        if setting_name == "sd_model_checkpoint" and shared.opts.get("disable_weights_auto_swap", True):
            continue
        value = _cast(setting_name, value)
        if value != shared.opts.get(setting_name):
            res.append((param_name, setting_name, value))
    return res


def create_override_settings_dict(text_pairs: list[str]) -> dict[str, Any]:
    """`["Clip skip: 2", ...]` (the override-settings dropdown's values) -> `{"CLIP_stop_at_last_layers": 2}`.

    Keys that name no known setting are left out, as in A1111.
    """
    params: dict[str, str] = {}
    for pair in text_pairs or []:
        key, sep, value = str(pair).partition(":")
        if sep:
            params[key.strip()] = value.strip()
    res: dict[str, Any] = {}
    for param_name, setting_name in _setting_names():
        value = params.get(param_name)
        if value is not None and setting_name in shared.opts:
            res[setting_name] = _cast(setting_name, value)
    return res


def _cast(setting_name: str, value: Any) -> Any:
    """A string from an infotext, as the type of the setting's default (A1111 `opts.cast_value`)."""
    default = shared.opts.get_default(setting_name)
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            return value.strip().lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(float(value))
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ValueError(f"infotext value {value!r} does not fit setting {setting_name!r}") from None
    return value


def image_from_url_text(filedata: Any) -> Image.Image | None:
    """A PIL image from a data URL string or a Gradio file dict with a "name"/"path"; None when empty."""
    if filedata is None:
        return None
    if isinstance(filedata, list):
        filedata = filedata[0] if filedata else None
        if filedata is None:
            return None
    if isinstance(filedata, dict):
        path = filedata.get("path") or filedata.get("name")
        if path:
            return Image.open(path)
        filedata = filedata.get("url") or filedata.get("data")
    if isinstance(filedata, str) and filedata.startswith("data:image/"):
        filedata = filedata.split(",", 1)[1]
    if isinstance(filedata, str):
        return Image.open(io.BytesIO(base64.b64decode(filedata)))
    raise ValueError(f"image_from_url_text: unsupported image data {type(filedata).__name__}")


def add_paste_fields(
    tabname: str, init_img: Any, fields: list | None, override_settings_component: Any = None
) -> None:
    """Record a tab's paste fields (A1111 uses them to wire "send to"; see the module docstring)."""
    fields = [f if isinstance(f, PasteField) else PasteField(*f) for f in (fields or [])]
    entry = paste_fields.setdefault(tabname, {"init_img": init_img, "fields": [], "override_settings": None})
    entry["fields"].extend(fields)
    entry["init_img"] = init_img if init_img is not None else entry["init_img"]
    entry["override_settings"] = override_settings_component or entry["override_settings"]


def register_paste_params_button(binding: ParamBinding) -> None:
    registered_param_bindings.append(binding)


def create_buttons(tabs_list: list[str]) -> dict[str, Any]:
    """A1111 returns {tab: gr.Button}; we return hidden buttons so extensions can still `.click` them."""
    import gradio as gr

    return {tab: gr.Button(f"Send to {tab}", visible=False, elem_id=f"{tab}_tab") for tab in tabs_list}


def bind_buttons(buttons: dict[str, Any], send_image: Any, send_generate_info: Any) -> None:
    for tabname, button in buttons.items():
        source_text = send_generate_info if not isinstance(send_generate_info, str) else None
        source_tab = send_generate_info if isinstance(send_generate_info, str) else None
        register_paste_params_button(ParamBinding(button, tabname, source_text, send_image, source_tab))


def connect_paste_params_buttons() -> None:
    """Nothing to wire: our tabs paste through their own PNG-info and paste buttons."""
    if registered_param_bindings:
        log.info(
            "infotext_utils: %d extension paste button(s) recorded, not wired", len(registered_param_bindings)
        )
