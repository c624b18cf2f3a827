"""A1111's `modules.scripts`: the `Script` base class, script loading and the per-tab `ScriptRunner`.

Public extension API. Script arguments are positional as in A1111: `script_args[0]` is the 1-based index of
the selectable script to run (0 = none); each script owns `script_args[args_from:args_to]`, one value per
component its `ui()` returned. Alwayson scripts come first (in load order), then the selectable ones.
The runner calls hooks for alwayson scripts; an exception in one is logged with the script's file and
extension and skipped. `modules.processing` maps these hooks onto the engine's `EngineHooks`.
"""

from __future__ import annotations

import contextvars
import importlib.util
import inspect
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdwebui.config import paths
from sdwebui.engine.requests import RequestError
from sdwebui.facade import bound, script_callbacks

# Gradio keeps the Blocks being built in a process-wide attribute (`Context.root_block`) beside its
# contextvars, so two threads building Blocks at once attach components to each other's ("'Dropdown' object
# has no attribute 'page'"). Every Blocks build of the app (the page, headless script UIs) holds this lock.
BLOCKS_BUILD_LOCK = threading.RLock()

log = logging.getLogger("webui.extensions")

AlwaysVisible = object()


class PostprocessImageArgs:
    def __init__(self, image: Any):
        self.image = image


class PostprocessBatchListArgs:
    def __init__(self, images: list[Any]):
        self.images = images


@dataclass
class OnComponent:
    component: Any


class MaskBlendArgs:
    """Argument of `Script.on_mask_blend` (A1111 names); set `blended_latent` to change the result."""

    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        self.current_latent = current_latent
        self.nmask = nmask
        self.init_latent = init_latent
        self.mask = mask
        self.blended_latent = blended_latent
        self.denoiser = denoiser
        self.is_final_blend = denoiser is None
        self.sigma = sigma


class Script:
    """Base class of extension scripts. Override what you need; every hook gets `p` and your ui() values."""

    name: str | None = None
    filename: str | None = None
    args_from: int | None = None
    args_to: int | None = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname: str | None = None
    group: Any = None
    create_group = True
    infotext_fields: list[Any] | None = None
    paste_field_names: list[str] | None = None
    api_info: dict[str, Any] | None = None
    section: str | None = None
    controls: list[Any] | None = None
    sorting_priority = 0
    setup_for_ui_only = False
    on_before_component_elem_id: list[tuple[str, Any]] | None = None  # (elem_id, callback), A1111 names
    on_after_component_elem_id: list[tuple[str, Any]] | None = None

    def title(self) -> str:
        raise NotImplementedError()

    def ui(self, is_img2img: bool) -> list[Any] | None:
        """Create Gradio components; their values are passed to the hooks as `*args`."""

    def show(self, is_img2img: bool) -> Any:
        """False: hidden; True: in the Script dropdown; AlwaysVisible: always on, ui() in an accordion."""
        return True

    def run(self, p, *args):
        """Selectable scripts: replace the normal run; return a `Processed`."""

    def setup(self, p, *args):
        """Before anything is processed, before `p` is fully set up."""

    def before_process(self, p, *args):
        """Before seeds and prompts are resolved (`p.all_prompts` not set yet)."""

    def process(self, p, *args):
        """Once, after `p.all_prompts`/`p.all_seeds` are resolved; may rewrite them."""

    def before_process_batch(self, p, *args, **kwargs):
        """kwargs: batch_number, prompts, seeds, subseeds. May change `p.all_prompts` for this batch."""

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        """kwargs: batch_number, prompts, seeds, subseeds; `p.prompts` etc. hold this batch's values."""

    def process_before_every_sampling(self, p, *args, **kwargs):
        """kwargs: x (start latents), noise. Before each sampling run (hires pass included)."""

    def before_hr(self, p, *args):
        """Before the hires-fix pass (not run: hires fix is not implemented by the engine)."""

    def postprocess_batch(self, p, *args, **kwargs):
        """kwargs: images (tensor B x 3 x H x W in 0..1), batch_number."""

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, *args, **kwargs):
        """pp.images: list of 3 x H x W tensors in 0..1; may be replaced. kwargs: batch_number."""

    def on_mask_blend(self, p, mba: MaskBlendArgs, *args):
        """Inpainting: after each step's blend; set mba.blended_latent to change it."""

    def post_sample(self, p, ps, *args):
        pass

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        """Per image; set pp.image to replace it."""

    def postprocess_maskoverlay(self, p, ppmo, *args):
        pass

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess(self, p, processed, *args):
        """Once, after all images are done."""

    def before_component(self, component, **kwargs):
        """Before each component of this script's tab is created (kwargs: its constructor's, e.g. elem_id)."""

    def after_component(self, component, **kwargs):
        """After each component of this script's tab is created."""

    def on_before_component(self, callback, *, elem_id):
        """callback(OnComponent) before the component `elem_id` of this tab is created (call in show())."""
        self.on_before_component_elem_id = [*(self.on_before_component_elem_id or []), (elem_id, callback)]

    def on_after_component(self, callback, *, elem_id):
        """callback(OnComponent) after the component `elem_id` of this tab is created (call in show())."""
        self.on_after_component_elem_id = [*(self.on_after_component_elem_id or []), (elem_id, callback)]

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        """A1111 element id: script_<tab>_<title>_<item_id>."""
        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"


class ScriptBuiltinUI(Script):
    setup_for_ui_only = True


# the Script methods a generation calls with p (the others build UI or describe the script)
PROCESSING_HOOKS = (
    "setup", "before_process", "process", "before_process_batch", "after_extra_networks_activate",
    "process_batch", "process_before_every_sampling", "before_hr", "postprocess_batch", "postprocess_batch_list",
    "on_mask_blend", "post_sample", "postprocess_image", "postprocess_maskoverlay",
    "postprocess_image_after_composite", "postprocess",
)  # fmt: skip


def sees_processing(script: Script) -> bool:
    """Whether the script overrides a hook a generation calls with p (an AlwaysVisible script with only a
    ui(), or only component callbacks, does not)."""
    return any(getattr(type(script), name) is not getattr(Script, name) for name in PROCESSING_HOOKS)


# --- loading ---
_current_basedir: contextvars.ContextVar[str] = contextvars.ContextVar("basedir", default=paths.script_path)


def basedir() -> str:
    """The folder of the extension whose script is being loaded (A1111: call it at import time)."""
    return _current_basedir.get()


@dataclass
class ScriptClassData:
    script_class: type
    path: str
    basedir: str
    module: Any
    extension: str = ""


@dataclass
class ScriptFile:
    basedir: str
    filename: str
    path: str


def list_scripts(scriptdirname: str, extension: str, *, include_extensions: bool = True) -> list[ScriptFile]:
    """A1111's listing: the app's own `<script_path>/<scriptdirname>/*<extension>`, then (unless told not
    to) those of the enabled extensions in load order; only files that exist."""
    own = Path(paths.script_path) / scriptdirname
    found = [ScriptFile(paths.script_path, p.name, str(p)) for p in sorted(own.glob(f"*{extension}"))]
    manager = bound.extension_manager()
    if include_extensions and manager is not None:
        found += [
            ScriptFile(str(ext.path), p.name, str(p))
            for ext, p in manager.ordered_script_files(scriptdirname, extension)
        ]
    return [f for f in found if os.path.isfile(f.path)]


def list_files_with_name(filename: str) -> list[str]:
    """`filename` in the app's folder and in every enabled extension's folder, where it exists (A1111 uses
    this for `style.css`-like files)."""
    manager = bound.extension_manager()
    dirs = [paths.script_path] + ([str(ext.path) for ext in manager.active()] if manager is not None else [])
    return [str(Path(d) / filename) for d in dirs if (Path(d) / filename).is_file()]


scripts_data: list[ScriptClassData] = []
postprocessing_scripts_data: list[ScriptClassData] = []
loaded_modules: dict[str, Any] = {}


def load_module(path: str, module_name: str) -> Any:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _module_name(extension: str, path: Path) -> str:
    """A1111's name for a script module, its file name ("xyz_grid.py": extensions find the X/Y/Z plot by
    `script_class.__module__`); a unique one when another loaded script has that file name."""
    if path.name not in sys.modules:
        return path.name
    safe = re.sub(r"\W", "_", f"{extension}_{path.stem}")
    return f"webui_extension_scripts.{safe}"


def unload_scripts() -> None:
    """Run on_script_unloaded callbacks, drop all callbacks and loaded script modules."""
    script_callbacks.script_unloaded_callback()
    for path in list(loaded_modules):
        script_callbacks.remove_callbacks_for_script(path)
    script_callbacks.clear_callbacks()
    for module in loaded_modules.values():
        sys.modules.pop(module.__name__, None)
    loaded_modules.clear()
    scripts_data.clear()
    postprocessing_scripts_data.clear()


def load_scripts(manager: Any) -> list[ScriptClassData]:
    """Import the `scripts/*.py` of enabled extensions in metadata order and collect Script classes.

    A script that fails to import is logged with its extension's name and skipped.
    """
    global scripts_txt2img, scripts_img2img, scripts_postproc
    from sdwebui.facade import scripts_postprocessing

    unload_scripts()
    if not manager.extensions:
        manager.discover()
    for ext, path in manager.ordered_script_files("scripts", ".py"):
        base = str(ext.path)
        saved_path = list(sys.path)
        sys.path.insert(0, base)
        tokens = (_current_basedir.set(base), script_callbacks.current_script_file.set(str(path)))
        try:
            module = load_module(str(path), _module_name(ext.name, path))
            loaded_modules[str(path)] = module
            _register_classes(module, str(path), base, ext.name)
        except Exception:
            log.exception("extension %s: error loading script %s; skipped", ext.name, path.name)
            script_callbacks.remove_callbacks_for_script(str(path))
        finally:
            sys.path[:] = saved_path
            _current_basedir.reset(tokens[0])
            script_callbacks.current_script_file.reset(tokens[1])
    scripts_txt2img = ScriptRunner(scripts_data, is_img2img=False)
    scripts_img2img = ScriptRunner(scripts_data, is_img2img=True)
    scripts_postproc = scripts_postprocessing.ScriptPostprocessingRunner(postprocessing_scripts_data)
    return scripts_data


def _register_classes(module: Any, path: str, base: str, extension: str) -> None:
    """A1111's rule: every Script (or ScriptPostprocessing) subclass in the module's namespace, defined there
    or imported into it (`from pkg.ui import Script`: dynamic prompts, aspect ratio helper), in namespace
    order. Our own base classes are skipped (A1111 would list an imported `Script` as a broken script)."""
    from sdwebui.facade import scripts_postprocessing

    for obj in list(module.__dict__.values()):
        if not inspect.isclass(obj) or obj in _BASE_CLASSES:
            continue
        if issubclass(obj, Script):
            scripts_data.append(ScriptClassData(obj, path, base, module, extension))
        elif issubclass(obj, scripts_postprocessing.ScriptPostprocessing) or _is_postprocessing(obj):
            if obj is not scripts_postprocessing.ScriptPostprocessing:
                postprocessing_scripts_data.append(ScriptClassData(obj, path, base, module, extension))


_BASE_CLASSES = (Script, ScriptBuiltinUI)


def _is_postprocessing(cls: type) -> bool:
    """A class built on another copy of ScriptPostprocessing (a vendored base of the same name)."""
    return any(base.__name__ == "ScriptPostprocessing" for base in cls.__mro__[1:])


def _script_label(script: Script) -> str:
    return f"{os.path.basename(script.filename or '?')}"


# --- running ---
class ScriptRunner:
    """Scripts of one tab (txt2img or img2img), their UI components and argument positions."""

    def __init__(self, classes: list[ScriptClassData] | None = None, is_img2img: bool = False):
        self.is_img2img = is_img2img
        self.scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.titles: list[str] = []
        self.title_map: dict[str, Script] = {}
        self.inputs: list[Any] = [None]
        self.default_args: list[Any] = [0]
        self._ui_ready = False
        self._extension_of: dict[int, str] = {}
        self.initialize_scripts(classes or [], is_img2img)

    def initialize_scripts(self, classes: list[ScriptClassData], is_img2img: bool) -> None:
        for data in classes:
            try:
                script = data.script_class()
                script.filename = data.path
                script.is_txt2img = not is_img2img
                script.is_img2img = is_img2img
                script.tabname = "img2img" if is_img2img else "txt2img"
                visibility = script.show(is_img2img)
            except Exception:
                log.exception("extension %s: script %s failed to initialize", data.extension, data.path)
                continue
            self._extension_of[id(script)] = data.extension
            if visibility is AlwaysVisible:
                script.alwayson = True
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)
        self.alwayson_scripts.sort(key=lambda s: s.sorting_priority)  # stable: load order otherwise

    # --- UI and argument positions ---
    def _title(self, script: Script) -> str:
        try:
            return script.title()
        except Exception:
            log.exception("script %s: title() failed", _script_label(script))
            return f"{_script_label(script)} [error]"

    def setup_ui(self) -> list[Any]:
        """Create every script's components (call inside the tab's gr.Blocks); returns A1111's `inputs`.

        `inputs[0]` is the Script dropdown (type="index"), the rest the scripts' components in arg order.
        """
        import gradio as gr

        self.title_map = {self._title(s).lower(): s for s in self.scripts}
        self.titles = [self._title(s) for s in self.selectable_scripts]
        self.inputs = [None]
        self.default_args = [0]
        for script in self.alwayson_scripts:
            with gr.Group(visible=True) as group:
                self._create_script_ui(script)
            script.group = group
        dropdown = gr.Dropdown(
            label="Script",
            elem_id=f"{'img2img' if self.is_img2img else 'txt2img'}_script_list",
            choices=["None", *self.titles],
            value="None",
            type="index",
        )
        self.inputs[0] = dropdown
        groups = []
        for script in self.selectable_scripts:
            with gr.Group(visible=False) as group:
                self._create_script_ui(script)
            script.group = group
            groups.append(group)

        def select_script(index):
            index = index or 0
            return [gr.update(visible=(i + 1 == index)) for i in range(len(groups))]

        if groups:
            dropdown.change(select_script, inputs=[dropdown], outputs=groups)
        self._ui_ready = True
        return self.inputs

    def _create_script_ui(self, script: Script) -> None:
        script.args_from = script.args_to = len(self.inputs)
        try:
            controls = script.ui(script.is_img2img)
        except Exception:
            log.exception("extension %s: ui() of %s failed", self.extension_of(script), _script_label(script))
            controls = None
        controls = list(controls or [])
        script.controls = controls
        script.name = self._title(script).lower()
        api_args = []
        for control in controls:
            info: dict[str, Any] = {"label": getattr(control, "label", None) or ""}
            for name in ("value", "minimum", "maximum", "step"):
                # a callable value (Gradio calls it at page load: adetailer's) is listed by what it returns
                value = _default_value(control) if name == "value" else getattr(control, name, None)
                if value is not None and not callable(value):
                    info[name] = value
            choices = getattr(control, "choices", None)
            if choices is not None:
                info["choices"] = [c[0] if isinstance(c, tuple) else c for c in choices]
            api_args.append(info)
            self.default_args.append(_default_value(control))
        script.api_info = {
            "name": script.name,
            "is_img2img": script.is_img2img,
            "is_alwayson": script.alwayson,
            "args": api_args,
        }
        self.inputs += controls
        script.args_to = len(self.inputs)

    def ensure_ui(self) -> None:
        """Headless (API only): build the components in a throwaway Blocks to learn positions and defaults."""
        import gradio as gr

        def build() -> None:
            with gr.Blocks():
                self.setup_ui()

        with BLOCKS_BUILD_LOCK:  # also: two first API requests at once build the script UIs once
            if self._ui_ready:
                return
            # A fresh context: inside a Gradio event, Blocks() would otherwise attach to the running app's.
            contextvars.Context().run(build)

    def extension_of(self, script: Script) -> str:
        return self._extension_of.get(id(script), "?")

    # --- name lookups and argument placement (as A1111's API does) ---
    def selectable_script(self, name: str) -> tuple[Script, int]:
        for i, script in enumerate(self.selectable_scripts):
            if self._title(script).lower() == name.lower():
                return script, i
        raise ScriptNotFound("script_name", f"selectable script {name!r} not found")

    def any_script(self, name: str) -> Script:
        for script in self.scripts:
            if self._title(script).lower() == name.lower():
                return script
        raise ScriptNotFound("alwayson_scripts", f"always on script {name!r} not found")

    def resolve_script_args(
        self,
        script_name: str | None = None,
        script_args: list[Any] | None = None,
        alwayson_scripts: dict[str, Any] | None = None,
    ) -> list[Any]:
        """API fields -> the full positional list, defaults where not given (A1111 `init_script_args`)."""
        self.ensure_ui()
        args = list(self.default_args)
        if script_name:
            script, index = self.selectable_script(script_name)
            given = list(script_args or [])
            args[script.args_from : script.args_to] = given  # noqa: E203 (A1111 replaces the slice)
            args[0] = index + 1
            # A1111 lets a short list shrink the slice; keep positions stable by padding with defaults
            missing = (script.args_to - script.args_from) - len(given)
            if missing > 0:
                pos = script.args_from + len(given)
                args[pos:pos] = self.default_args[pos : pos + missing]
            elif missing < 0:  # A1111 would shift every later script's arguments; never drop them silently
                raise ScriptArgsError(
                    f"{self._title(script)} takes {script.args_to - script.args_from} values, got {len(given)}"
                )
        for name, entry in (alwayson_scripts or {}).items():
            script = self.any_script(name)
            if not script.alwayson:
                raise ScriptNotFound(
                    "alwayson_scripts", "Cannot have a selectable script in the always on scripts params"
                )
            if isinstance(entry, (list, tuple)):  # already unwrapped by the caller
                values = entry
            else:
                values = entry.get("args") if isinstance(entry, dict) else getattr(entry, "args", None)
            if values is None:
                continue
            if not isinstance(values, (list, tuple)):
                raise ScriptNotFound("alwayson_scripts", f"{name}: 'args' must be a list")
            for i in range(min(script.args_to - script.args_from, len(values))):
                args[script.args_from + i] = values[i]
        return args

    # --- component hooks (sdwebui.extensions.component_hooks calls them while this tab is built) ---
    def before_component(self, component: Any, **kwargs: Any) -> None:
        self._component_hook(component, kwargs, "on_before_component_elem_id", "before_component")

    def after_component(self, component: Any, **kwargs: Any) -> None:
        self._component_hook(component, kwargs, "on_after_component_elem_id", "after_component")

    def _component_hook(self, component: Any, kwargs: dict[str, Any], by_id: str, method: str) -> None:
        elem_id = kwargs.get("elem_id")
        calls = [
            (script, callback, (OnComponent(component),), {})
            for script in self.scripts
            for wanted, callback in getattr(script, by_id) or []
            if elem_id is not None and wanted == elem_id
        ]
        calls += [(script, getattr(script, method), (component,), kwargs) for script in self.scripts]
        for script, callback, args, kw in calls:
            try:
                callback(*args, **kw)
            except Exception:
                log.exception(
                    "extension %s: %s of %s failed", self.extension_of(script), method, _script_label(script)
                )

    # --- hooks for alwayson scripts ---
    def ordered_scripts(self) -> list[Script]:
        return list(self.alwayson_scripts)

    def _each(self, hook: str, p: Any, *extra: Any, **kwargs: Any) -> None:
        for script in self.ordered_scripts():
            args = p.script_args[script.args_from : script.args_to] if script.args_from is not None else []
            try:
                getattr(script, hook)(p, *extra, *args, **kwargs)
            except Exception:
                log.exception(
                    "extension %s: %s.%s failed; skipped",
                    self.extension_of(script),
                    _script_label(script),
                    hook,
                )

    def setup_scrips(self, p: Any, *, is_ui: bool = True) -> None:  # A1111's spelling
        for script in self.ordered_scripts():
            if not is_ui and script.setup_for_ui_only:
                continue
            args = p.script_args[script.args_from : script.args_to]
            try:
                script.setup(p, *args)
            except Exception:
                log.exception("extension %s: setup failed; skipped", self.extension_of(script))

    setup_scripts = setup_scrips

    def before_process(self, p):
        self._each("before_process", p)

    def process(self, p):
        self._each("process", p)

    def before_process_batch(self, p, **kwargs):
        self._each("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._each("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._each("process_before_every_sampling", p, **kwargs)

    def postprocess_batch(self, p, images, **kwargs):
        self._each("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, **kwargs):
        self._each("postprocess_batch_list", p, pp, **kwargs)

    def postprocess_image(self, p, pp: PostprocessImageArgs):
        self._each("postprocess_image", p, pp)

    def on_mask_blend(self, p, mba: MaskBlendArgs):
        self._each("on_mask_blend", p, mba)

    def before_hr(self, p):
        self._each("before_hr", p)

    def postprocess(self, p, processed):
        self._each("postprocess", p, processed)

    def run(self, p, *args):
        """Run the selected script (`args[0]` = 1-based index); None when no script is selected."""
        index = args[0] if args else 0
        if not index:
            return None
        if not isinstance(index, int) or not 0 < index <= len(self.selectable_scripts):
            raise ScriptNotFound("script_name", f"no selectable script with index {index}")
        script = self.selectable_scripts[index - 1]
        script_args = args[script.args_from : script.args_to]
        return script.run(p, *script_args)

    # --- API listings ---
    def titles_for_api(self) -> list[str]:
        """A1111's GET /scripts: the name (lowercased title) of every script of the tab, alwayson included,
        in load order (clients test `"controlnet" in scripts["txt2img"]`)."""
        self.ensure_ui()
        return [s.name for s in self.scripts if s.name is not None]

    def infos_for_api(self) -> list[dict[str, Any]]:
        self.ensure_ui()
        return [s.api_info for s in self.scripts if s.api_info is not None]


class ScriptNotFound(RequestError):
    """An unknown script name or misplaced script; `field` names the request field (API answers 422)."""


class ScriptArgsError(RequestError):
    """Raise it from a script for arguments it cannot use: the job fails and the API answers 422 naming
    `field` (a selectable script's `script_args`, or `alwayson_scripts`), instead of a 500."""

    def __init__(self, reason: str, field_name: str = "script_args"):
        super().__init__(field_name, reason)


def _default_value(control: Any) -> Any:
    value = getattr(control, "value", None)
    if value is None and type(control).__name__ in ("Textbox", "TextArea", "Code"):
        return ""
    if callable(value):
        try:
            return value()
        except Exception:
            return None
    return value


scripts_txt2img = ScriptRunner()
scripts_img2img = ScriptRunner(is_img2img=True)
scripts_postproc: Any = (
    None  # the Extras scripts (scripts_postprocessing.ScriptPostprocessingRunner), once loaded
)


def runner_for(is_img2img: bool) -> ScriptRunner:
    return scripts_img2img if is_img2img else scripts_txt2img


def script_info_for_api() -> list[dict[str, Any]]:
    """Body of GET /sdapi/v1/script-info."""
    return scripts_txt2img.infos_for_api() + scripts_img2img.infos_for_api()
