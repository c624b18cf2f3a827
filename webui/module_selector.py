"""Forge's "VAE / Text Encoder" selector, in the top bar beside the checkpoint dropdown.

Its value is the `forge_additional_modules` setting: file names from models/VAE and models/text_encoder, as
/sdapi/v1/sd-modules lists them (the model manager's `module_files`). Changing it sets the setting, as the
checkpoint dropdown sets `sd_model_checkpoint`; a job reads the setting when it leases its model
(`Services.lease_for_job`), only Flux / SD3 checkpoints use the parts, and their infotext names them
(`Module 1: ae, Module 2: clip_l, ...`). PNG Info's "Send to" puts an infotext's modules back here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from webui.backend import UiBackend, describe_error
from webui.progress import error_html

OPTION = "forge_additional_modules"
_MODULE_KEY = re.compile(r"Module (\d+)")


@dataclass
class ModuleSelector:
    dropdown: gr.Dropdown
    refresh: gr.Button
    status: gr.HTML
    applied: Any  # the change event: the setting may have changed after it


def module_names(backend: UiBackend) -> list[str]:
    """The part files a Flux / SD3 checkpoint may use, named as /sdapi/v1/sd-modules names them."""
    files = getattr(backend.services.models, "module_files", list)()
    return [name for name, _ in files]


def selected(backend: UiBackend) -> list[str]:
    return list(backend.options.get(OPTION) or [])


def current_value(backend: UiBackend) -> Any:
    """The dropdown at page load: the setting as it is now, among the files found now (a chosen file that
    is gone stays shown, so the dropdown does not drop it from the setting)."""
    value, choices = selected(backend), module_names(backend)
    return gr.update(value=value, choices=[*(v for v in value if v not in choices), *choices])


def apply(backend: UiBackend, value: list[str] | None) -> str:
    """Set the setting to the dropdown's value; the error as HTML, or "" (also when nothing changed)."""
    wanted = list(value or [])
    if wanted == selected(backend):
        return ""
    try:
        backend.set_options({OPTION: wanted})
    except Exception as exc:
        return error_html(f"VAE / Text Encoder: {describe_error(exc)}")
    return ""


def pasted_modules(parsed: dict[str, Any], choices: list[str]) -> list[str] | None:
    """The files an infotext's `Module 1`, `Module 2`, ... keys name (written as the file's name up to its
    first dot); None when it has none. A name no listed file has is left out, as paste skips values that
    do not fit (the job then names the part it misses)."""
    numbered = sorted((int(m.group(1)), str(v)) for k, v in parsed.items() if (m := _MODULE_KEY.fullmatch(k)))
    if not numbered:
        return None
    by_stem: dict[str, str] = {}
    for choice in choices:
        by_stem.setdefault(Path(choice).name.split(".")[0], choice)
    return [by_stem[stem] for _, stem in numbered if stem in by_stem]


def paste_update(backend: UiBackend, parsed: dict[str, Any]) -> Any:
    """The dropdown's update for a pasted infotext: its modules, or no change when it names none."""
    modules = pasted_modules(parsed, module_names(backend))
    return gr.update() if modules is None else gr.update(value=modules)


def build_module_selector(backend: UiBackend) -> ModuleSelector:
    with gr.Row(elem_id="quicksettings_modules", equal_height=False):
        initial = current_value(backend)
        dropdown = gr.Dropdown(
            label="VAE / Text Encoder",
            choices=initial["choices"],
            value=initial["value"],
            multiselect=True,
            elem_id=f"setting_quick_{OPTION}",
            min_width=200,
        )
        refresh = gr.Button("🔄", elem_id=f"refresh_{OPTION}", min_width=40, scale=0, size="sm")
    status = gr.HTML(elem_id="quicksettings_modules_status")

    def refreshed() -> Any:
        backend.refresh_checkpoints()  # the checkpoint list's refresh also lists the part files again
        return current_value(backend)

    refresh.click(refreshed, outputs=dropdown, show_progress="hidden")
    applied = dropdown.change(lambda value: apply(backend, value), inputs=dropdown, outputs=status)
    return ModuleSelector(dropdown, refresh, status, applied)


__all__ = ["ModuleSelector", "build_module_selector", "current_value", "paste_update", "pasted_modules"]
