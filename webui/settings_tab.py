"""Settings tab rendered from the options' sections; Apply saves config.json and takes effect at once.

Also the quicksettings bar (checkpoint, VAE, CLIP skip by default) shown above the tabs.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from sdwebui.config.options import OptionInfo
from webui.backend import UiBackend, describe_error
from webui.progress import error_html

log = logging.getLogger(__name__)

REFRESHABLE = {"sd_model_checkpoint", "sd_vae"}
_TITLE_HASH = re.compile(r" \[[0-9a-f]{8,64}\]$")


@dataclass
class SettingsControls:
    keys: list[str]
    components: list[gr.components.Component]
    apply: gr.Button
    status: gr.HTML
    applied: list[Any] = field(default_factory=list)  # the events after which settings may have changed

    def current_values(self, backend: UiBackend) -> list[Any]:
        return [_current_value(backend, key) for key in self.keys]


def _current_value(backend: UiBackend, key: str) -> Any:
    """A control's value at page load; model lists also get their current choices, because checkpoint titles
    gain their hash (`name [1a2b3c4d5e]`) once it is computed, after the page may have been built."""
    value = displayed_value(backend, key)
    if key not in REFRESHABLE:
        return value
    choices = choices_for(key, backend) or []
    if value not in choices and value not in ("", None):
        choices = [value, *choices]
    return gr.update(value=value, choices=choices)


def _display_value(value: Any) -> Any:
    return ", ".join(map(str, value)) if isinstance(value, list) else value


def displayed_value(backend: UiBackend, key: str) -> Any:
    """What a control shows for an option. An unset checkpoint shows the one in use (e.g. from --ckpt):
    a dropdown value outside its choices would make Gradio refuse every later Apply."""
    value = backend.options.get(key)
    if key == "sd_model_checkpoint" and value not in backend.checkpoints():
        value = backend.effective_checkpoint()
    return _display_value(value)


def choices_for(key: str, backend: UiBackend) -> list[str] | None:
    if key == "sd_model_checkpoint":
        return backend.checkpoints()
    if key == "sd_vae":
        return backend.vaes()
    if key == "default_sampler":
        return backend.samplers()
    if key == "default_scheduler":
        return backend.schedulers()
    if key == "quicksettings_list":
        return None
    info = backend.options.data_labels.get(key)
    choices = info.allowed_choices() if info is not None else None
    return list(choices) if choices else None


def make_component(key: str, info: OptionInfo, backend: UiBackend, elem_prefix: str = "setting_"):
    """A Gradio component for one option: the option's own component when it names one (extensions)."""
    value = displayed_value(backend, key)
    elem_id = f"{elem_prefix}{key}"
    label = info.label or key
    if info.component is not None:
        args = info.component_args() if callable(info.component_args) else dict(info.component_args or {})
        try:
            return info.component(label=label, value=value, elem_id=elem_id, **args)
        except Exception as exc:  # a bad extension option must not break the tab
            log.warning("setting %s: cannot build its component (%s); showing a text box", key, exc)
            return gr.Textbox(label=label, value=str(value), elem_id=elem_id)
    choices = choices_for(key, backend)
    if choices is not None:
        if value not in choices and value not in ("", None):
            choices = [value, *choices]
        return gr.Dropdown(label=label, choices=choices, value=value or None, elem_id=elem_id)
    if isinstance(info.default, bool):
        return gr.Checkbox(label=label, value=bool(value), elem_id=elem_id)
    low, high = info.value_range()
    limits = {"minimum": low, "maximum": high}
    if isinstance(info.default, int):
        return gr.Number(label=label, value=value, precision=0, elem_id=elem_id, **limits)
    if isinstance(info.default, float):
        return gr.Number(label=label, value=value, elem_id=elem_id, **limits)
    return gr.Textbox(label=label, value="" if value is None else str(value), elem_id=elem_id, max_lines=1)


def _coerce_for_option(info: OptionInfo | None, value: Any) -> Any:
    """Gradio hands back floats for Number and strings for lists; turn them into the option's type."""
    if info is None:
        return value
    if isinstance(info.default, bool):
        return bool(value)
    if isinstance(info.default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(info.default, list) and isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def apply_values(backend: UiBackend, keys: list[str], values: list[Any]) -> tuple[list[str], str | None]:
    """Set changed options; returns (changed keys, error message or None)."""
    changes = {}
    for key, value in zip(keys, values, strict=True):
        if key == "sd_model_checkpoint" and _without_hash(value) == _without_hash(
            displayed_value(backend, key)
        ):
            continue  # the model in use (shown before or after its hash was known): not a change
        value = _coerce_for_option(backend.options.data_labels.get(key), value)
        if value != backend.options.get(key):
            changes[key] = value
    if not changes:
        return [], None
    try:
        return backend.set_options(changes), None
    except Exception as exc:
        return [], describe_error(exc)


def _without_hash(title: Any) -> Any:
    """`name.safetensors [1a2b3c4d5e]` -> `name.safetensors` (a title gains its hash once it is computed)."""
    return _TITLE_HASH.sub("", title) if isinstance(title, str) else title


def build_settings_tab(backend: UiBackend) -> SettingsControls:
    sections: dict[tuple[str, str], list[str]] = {}
    for key, info in backend.options.data_labels.items():
        if info.section is None or info.do_not_save:
            continue
        sections.setdefault(tuple(info.section), []).append(key)
    keys: list[str] = []
    components = []
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
    status = gr.HTML(elem_id="settings_result")
    with gr.Tabs(elem_id="settings"):
        for (section_id, title), section_keys in sections.items():
            with gr.Tab(title, id=f"settings_{section_id}", elem_id=f"settings_{section_id}"):
                for key in section_keys:
                    info = backend.options.data_labels[key]
                    if info.comment_before:
                        gr.Markdown(info.comment_before)
                    keys.append(key)
                    components.append(make_component(key, info, backend))
                    if info.comment_after:
                        gr.Markdown(info.comment_after)

    def on_apply(*values):
        changed, error = apply_values(backend, keys, list(values))
        if error:
            return error_html(f"Settings not applied: {error}")
        if not changed:
            return "<span>No settings changed.</span>"
        return f"<span>{len(changed)} setting(s) changed: {html.escape(', '.join(changed))}.</span>"

    applied = apply.click(on_apply, inputs=components, outputs=status)
    return SettingsControls(keys, components, apply, status, [applied])


def build_quicksettings(backend: UiBackend) -> SettingsControls:
    """The top bar: one control per key of the quicksettings_list option; changes apply at once."""
    keys: list[str] = []
    components = []
    with gr.Row(elem_id="quicksettings", elem_classes="quicksettings"):
        for key in backend.options.get("quicksettings_list", []) or []:
            info = backend.options.data_labels.get(key)
            if info is None:
                continue
            component = make_component(key, info, backend, elem_prefix="setting_quick_")
            keys.append(key)
            components.append(component)
            if key in REFRESHABLE:
                refresh = gr.Button("🔄", elem_id=f"refresh_{key}", min_width=40, scale=0, size="sm")
                refresh.click(_refresher(key, backend), outputs=component, show_progress="hidden")
    status = gr.HTML(elem_id="quicksettings_status")
    # start-up problems (a bad config.json set aside, a broken checkpoint skipped), as of each page load
    gr.HTML(value=lambda: notices_html(backend), elem_id="startup_notices")
    applied = [
        component.change(
            _quick_apply(key, backend), inputs=component, outputs=status, show_progress="minimal"
        )
        for key, component in zip(keys, components, strict=True)
    ]
    return SettingsControls(keys, components, gr.Button(visible=False), status, applied)


def notices_html(backend: UiBackend) -> str:
    notices = getattr(backend.services, "all_notices", list)()
    return "".join(error_html(text) for text in notices)


def _refresher(key: str, backend: UiBackend) -> Callable[[], Any]:
    def refresh():
        if key == "sd_model_checkpoint":
            backend.refresh_checkpoints()
        return gr.update(choices=choices_for(key, backend))

    return refresh


def _quick_apply(key: str, backend: UiBackend) -> Callable[[Any], str]:
    def apply(value: Any) -> str:
        _, error = apply_values(backend, [key], [value])
        return error_html(f"{key}: {error}") if error else ""

    return apply
