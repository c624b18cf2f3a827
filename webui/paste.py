"""A1111 paste semantics: fill a tab's fields from parsed infotext (keys as A1111's parser returns them).

A field whose key is absent keeps its current value; values that do not fit a field are skipped.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.params import ParamControls
from webui.prompt_row import PromptRow


def parse_infotext(text: str) -> dict[str, Any]:
    from sdwebui.engine import infotext_fields

    return infotext_fields.parse_infotext(text or "")


def pasted_params(text: str) -> dict[str, Any]:
    """Parse an infotext for pasting; extensions' `on_infotext_pasted` callbacks may edit the result."""
    from sdwebui.facade import script_callbacks

    params = parse_infotext(text)
    script_callbacks.infotext_pasted_callback(text or "", params)
    return params


def _number(value: Any, kind: type) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if kind is int else number


def field_updates(
    parsed: dict[str, Any], prompt_row: PromptRow, params: ParamControls, extra_numeric: tuple = ()
) -> dict:
    """{component: new value} for every key present in `parsed`.

    `extra_numeric` adds (infotext key, component, int/float) fields a tab has beyond the shared block,
    e.g. img2img's "Denoising strength".
    """
    updates: dict = {}
    if "Prompt" in parsed:
        updates[prompt_row.prompt] = parsed["Prompt"]
    if "Negative prompt" in parsed:
        updates[prompt_row.negative_prompt] = parsed["Negative prompt"]
    numeric = (
        ("Steps", params.steps, int),
        ("CFG scale", params.cfg_scale, float),
        ("Distilled CFG Scale", params.distilled_cfg_scale, float),
        ("Seed", params.seed, int),
        ("Size-1", params.width, int),
        ("Size-2", params.height, int),
        ("Variation seed", params.subseed, int),
        ("Variation seed strength", params.subseed_strength, float),
        ("Seed resize from-1", params.seed_resize_from_w, int),
        ("Seed resize from-2", params.seed_resize_from_h, int),
        *extra_numeric,
    )
    for key, component, kind in numeric:
        value = _value(parsed, key, component, kind)
        if value is not None:
            updates[component] = value
    if parsed.get("Sampler") in _choices(params.sampler_name):
        updates[params.sampler_name] = parsed["Sampler"]
        schedule = parsed.get("Schedule type", "Automatic")
        if schedule in _choices(params.scheduler):
            updates[params.scheduler] = schedule
    return updates


def hires_enabled(parsed: dict[str, Any]) -> bool:
    """A1111's paste rule for the Hires. fix checkbox: a txt2img infotext with a denoising strength and
    hires keys was made with it."""
    hires_keys = ("Hires upscale", "Hires upscaler", "Hires resize-1")
    return "Denoising strength" in parsed and any(key in parsed for key in hires_keys)


def _value(parsed: dict[str, Any], key: str, component: Any, kind: type) -> Any:
    """The value to paste into `component`; None keeps it. `bool`: the Hires. fix checkbox (A1111 derives
    it from the other keys), `str`: text, or a dropdown choice when it is one of the choices."""
    if kind is bool:
        return hires_enabled(parsed)
    if kind not in (str, int, float):  # a reader of the key's value (ControlNet units: webui.controlnet_ui)
        return kind(parsed[key]) if key in parsed else None
    if key not in parsed:
        return None
    if kind is str:
        text = str(parsed[key])
        if isinstance(component, gr.Dropdown) and text not in _choices(component):
            return _checkpoint_choice(text, _choices(component))
        return text
    return _number(parsed[key], kind)


def _checkpoint_choice(text: str, choices: list[str]) -> str | None:
    """The checkpoint title ("name.safetensors [hash]") an infotext's short title ("name [hash]") names."""
    for choice in choices:
        file_name, _, rest = str(choice).partition(" [")
        short = file_name.rsplit(".", 1)[0] + (f" [{rest}" if rest else "")
        if text == short:
            return choice
    return None


def _choices(dropdown: gr.Dropdown) -> list[str]:
    return [choice[1] if isinstance(choice, tuple) else choice for choice in dropdown.choices or []]


def all_outputs(prompt_row: PromptRow, params: ParamControls, extra_numeric: tuple = ()) -> list:
    return [
        prompt_row.prompt,
        prompt_row.negative_prompt,
        *params.components(),
        *(c for _, c, _ in extra_numeric),
    ]


def as_outputs(updates: dict, outputs: list) -> list:
    return [updates.get(component, gr.update()) for component in outputs]
