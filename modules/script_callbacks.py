"""A1111's `modules.script_callbacks`: global callback lists, registered by extension scripts.

Part of the public extension facade (with `modules.scripts`, `modules.shared`, ...). Callbacks are tagged with
the script file that registered them, so reloading scripts removes exactly theirs. A callback that raises is
logged with its script's name and skipped; the others still run.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Set by the script loader while an extension file is imported: the file callbacks are attributed to.
current_script_file: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_script_file", default=None
)


@dataclass
class ImageSaveParams:
    image: Any  # PIL image; a callback may replace it
    p: Any  # the processing object (may be None when saved outside a generation)
    filename: str  # path the image is saved to (before extension changes)
    pnginfo: dict[str, Any]  # {"parameters": infotext}; a callback may change it


@dataclass
class CFGDenoiserParams:
    x: Any  # latent batch fed to the model; replaceable
    image_cond: Any
    sigma: Any  # here: the scheduler timestep tensor (our loop is timestep-based)
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None


@dataclass
class CFGDenoisedParams:
    x: Any  # model output batch; replaceable
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any = None


@dataclass
class AfterCFGCallbackParams:
    x: Any  # guided output; replaceable
    sampling_step: int
    total_sampling_steps: int


@dataclass
class ImageGridLoopParams:
    imgs: list[Any]
    cols: int
    rows: int


@dataclass
class ScriptCallback:
    script: str  # file that registered it
    callback: Callable[..., Any]
    name: str | None = None


CALLBACK_KINDS = (
    "callbacks_app_started",
    "callbacks_model_loaded",
    "callbacks_ui_tabs",
    "callbacks_ui_train_tabs",
    "callbacks_ui_settings",
    "callbacks_before_image_saved",
    "callbacks_image_saved",
    "callbacks_extra_noise",
    "callbacks_cfg_denoiser",
    "callbacks_cfg_denoised",
    "callbacks_cfg_after_cfg",
    "callbacks_before_component",
    "callbacks_after_component",
    "callbacks_image_grid",
    "callbacks_infotext_pasted",
    "callbacks_script_unloaded",
    "callbacks_before_ui",
    "callbacks_on_reload",
    "callbacks_list_optimizers",
    "callbacks_list_unets",
    "callbacks_before_token_counter",
)

callback_map: dict[str, list[ScriptCallback]] = {kind: [] for kind in CALLBACK_KINDS}


def _caller_file() -> str:
    current = current_script_file.get()
    if current:
        return current
    this = os.path.abspath(__file__)
    for frame in inspect.stack()[2:]:
        if os.path.abspath(frame.filename) != this:
            return frame.filename
    return "unknown"


def add_callback(
    callbacks: list[ScriptCallback], fun: Callable[..., Any], *, name: str | None = None
) -> None:
    if not callable(fun):
        raise TypeError(f"callback must be callable, got {fun!r}")
    callbacks.append(ScriptCallback(_caller_file(), fun, name))


def remove_callbacks_for_script(script_file: str) -> None:
    for kind in CALLBACK_KINDS:
        callback_map[kind] = [cb for cb in callback_map[kind] if cb.script != script_file]


def remove_current_script_callbacks() -> None:
    remove_callbacks_for_script(_caller_file())


def remove_callbacks_for_function(callback_func: Callable[..., Any]) -> None:
    for kind in CALLBACK_KINDS:
        callback_map[kind] = [cb for cb in callback_map[kind] if cb.callback != callback_func]


def clear_callbacks() -> None:
    for kind in CALLBACK_KINDS:
        callback_map[kind].clear()


def _run(kind: str, *args: Any) -> list[Any]:
    results = []
    for cb in list(callback_map[kind]):
        try:
            results.append(cb.callback(*args))
        except Exception:
            log.exception(
                "extension callback %s (%s) from %s failed; skipped", kind, cb.name or "", cb.script
            )
    return results


# --- calling (used by the app and the facade) ---
def app_started_callback(demo: Any, app: Any) -> None:
    _run("callbacks_app_started", demo, app)


def model_loaded_callback(sd_model: Any) -> None:
    _run("callbacks_model_loaded", sd_model)


def ui_tabs_callback() -> list[Any]:
    tabs = []
    for result in _run("callbacks_ui_tabs"):
        tabs += result or []
    return tabs


def ui_train_tabs_callback(params: Any) -> None:
    _run("callbacks_ui_train_tabs", params)


def ui_settings_callback() -> None:
    _run("callbacks_ui_settings")


def before_image_saved_callback(params: ImageSaveParams) -> None:
    _run("callbacks_before_image_saved", params)


def image_saved_callback(params: ImageSaveParams) -> None:
    _run("callbacks_image_saved", params)


def cfg_denoiser_callback(params: CFGDenoiserParams) -> None:
    _run("callbacks_cfg_denoiser", params)


def cfg_denoised_callback(params: CFGDenoisedParams) -> None:
    _run("callbacks_cfg_denoised", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams) -> None:
    _run("callbacks_cfg_after_cfg", params)


def before_component_callback(component: Any, **kwargs: Any) -> None:
    for cb in list(callback_map["callbacks_before_component"]):
        try:
            cb.callback(component, **kwargs)
        except Exception:
            log.exception("extension callback before_component from %s failed; skipped", cb.script)


def after_component_callback(component: Any, **kwargs: Any) -> None:
    for cb in list(callback_map["callbacks_after_component"]):
        try:
            cb.callback(component, **kwargs)
        except Exception:
            log.exception("extension callback after_component from %s failed; skipped", cb.script)


def image_grid_callback(params: ImageGridLoopParams) -> None:
    _run("callbacks_image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    _run("callbacks_infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    _run("callbacks_script_unloaded")


def before_ui_callback() -> None:
    _run("callbacks_before_ui")


def on_reload_callback() -> None:
    _run("callbacks_on_reload")


def has_callbacks(kind: str) -> bool:
    return bool(callback_map[kind])


# --- registering (what extensions call) ---
def on_app_started(callback: Callable[[Any, Any], None], *, name: str | None = None) -> None:
    """callback(demo, app) after the server started; `app` is the FastAPI app."""
    add_callback(callback_map["callbacks_app_started"], callback, name=name)


def on_before_reload(callback: Callable[[], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_on_reload"], callback, name=name)


def on_model_loaded(callback: Callable[[Any], None], *, name: str | None = None) -> None:
    """callback(sd_model) after a checkpoint is loaded."""
    add_callback(callback_map["callbacks_model_loaded"], callback, name=name)


def on_ui_tabs(callback: Callable[[], list[Any]], *, name: str | None = None) -> None:
    """callback() -> [(gr.Blocks, title, elem_id), ...]: extra top-level tabs."""
    add_callback(callback_map["callbacks_ui_tabs"], callback, name=name)


def on_ui_train_tabs(callback: Callable[[Any], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_ui_train_tabs"], callback, name=name)


def on_ui_settings(callback: Callable[[], None], *, name: str | None = None) -> None:
    """callback() that calls `shared.opts.add_option(...)`; run before the Settings tab is built."""
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name)


def on_before_image_saved(callback: Callable[[ImageSaveParams], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_before_image_saved"], callback, name=name)


def on_image_saved(callback: Callable[[ImageSaveParams], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_image_saved"], callback, name=name)


def on_extra_noise(callback: Callable[[Any], None], *, name: str | None = None) -> None:
    """Accepted for compatibility; the engine does not call it yet."""
    add_callback(callback_map["callbacks_extra_noise"], callback, name=name)


def on_cfg_denoiser(callback: Callable[[CFGDenoiserParams], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_cfg_denoiser"], callback, name=name)


def on_cfg_denoised(callback: Callable[[CFGDenoisedParams], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_cfg_denoised"], callback, name=name)


def on_cfg_after_cfg(callback: Callable[[AfterCFGCallbackParams], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_cfg_after_cfg"], callback, name=name)


def on_before_component(callback: Callable[..., None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_before_component"], callback, name=name)


def on_after_component(callback: Callable[..., None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_after_component"], callback, name=name)


def on_image_grid(callback: Callable[[ImageGridLoopParams], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_image_grid"], callback, name=name)


def on_infotext_pasted(callback: Callable[[str, dict], None], *, name: str | None = None) -> None:
    """callback(infotext, params) after pasting an infotext; may edit `params`."""
    add_callback(callback_map["callbacks_infotext_pasted"], callback, name=name)


def on_script_unloaded(callback: Callable[[], None], *, name: str | None = None) -> None:
    """callback() before the script's module is unloaded (reload of scripts)."""
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name)


def on_before_ui(callback: Callable[[], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_before_ui"], callback, name=name)


def on_list_optimizers(callback: Callable[[list], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_list_optimizers"], callback, name=name)


def on_list_unets(callback: Callable[[list], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_list_unets"], callback, name=name)


def on_before_token_counter(callback: Callable[[Any], None], *, name: str | None = None) -> None:
    add_callback(callback_map["callbacks_before_token_counter"], callback, name=name)
