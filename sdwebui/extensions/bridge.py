"""Wiring of the extension system into the app: start-up, reload ("Apply and restart UI"), job running.

`attach_extensions(services)` is called once after `build_services(args)`: it binds `modules.shared` to the
app, runs pending install.py files, imports the scripts of enabled extensions, lets them add settings
(`on_ui_settings`) and installs `ExtensionScripts` as `services.scripts` (the job queue's script hook).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdwebui.config import paths
from sdwebui.engine.context import JobContext, StepInfo
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.requests import GenerationResult, RequestError, Txt2ImgRequest
from sdwebui.extensions.manager import ExtensionManager
from sdwebui.facade import (
    extra_networks,
    processing,
    script_callbacks,
    scripts,
    scripts_postprocessing,
    shared,
    upscaler,
)

log = logging.getLogger("webui.extensions")

# the app's engine run for one job: (request, hooks, ctx) -> result, on the job's model (sdwebui.services)
EngineRun = Callable[[Txt2ImgRequest, EngineHooks | None, JobContext], GenerationResult]
JobWork = Callable[[Txt2ImgRequest, JobContext, Any], GenerationResult]


class ExtensionScripts:
    """Implements the `ScriptRunner` protocol of sdwebui.services over the loaded A1111 scripts."""

    def titles(self, kind: str) -> list[str]:
        return scripts.runner_for(kind == "img2img").titles_for_api()

    def script_info(self) -> list[dict[str, Any]]:
        return scripts.script_info_for_api()

    def prepare(self, call: Any, run: EngineRun) -> JobWork:
        """Check the script names now (RequestError -> HTTP 422) and return the job's work function:
        work(request, ctx, model) with the job's JobContext and the model it runs on."""
        is_img2img = call.kind == "img2img"
        runner = scripts.runner_for(is_img2img)
        script_args = runner.resolve_script_args(call.script_name, call.script_args, call.alwayson_scripts)
        return lambda request, ctx, model: run_job(
            runner, request, script_args, run, ctx, model, job=call.kind
        )

    def saving_hooks(self, request: Txt2ImgRequest, ran_on: Any) -> EngineHooks | None:
        """on_before_image_saved / on_image_saved for the images of a job a pool worker ran (`ran_on`: its
        ModelUsed): they run where the front saves them, with the `p` the job would have had in process;
        None when no callback listens (no p is built)."""
        if not any(script_callbacks.has_callbacks(name) for name in processing.CALLBACKS_WITH_P):
            return None
        return _SavingElsewhere(request, ran_on).hooks()


class _SavingElsewhere:
    """The image-saving callbacks of a job that ran in another process: its `p` built from the request the
    worker ran, with the job's prompts and seeds, and `opts` as the job saw them (its overrides)."""

    def __init__(self, request: Txt2ImgRequest, ran_on: Any):
        p = processing.processing_from_request(request)
        p.is_api = True
        p.sd_model_name, p.sd_model_hash = ran_on.info.name, ran_on.info.shorthash
        p.sd_vae_name, p.sd_vae_hash = ran_on.vae_name, ran_on.vae_hash
        self.p, self.callbacks = p, processing.callback_hooks(p)

    def hooks(self) -> EngineHooks:
        before, saved = self.callbacks.before_image_saved, self.callbacks.image_saved
        return EngineHooks(
            before_image_saved=(lambda args: self._call(before, args)) if before else None,
            image_saved=(lambda args: self._call(saved, args)) if saved else None,
        )

    def _call(self, hook: Callable[[Any], None], args: Any) -> None:
        p, state = self.p, args.state
        p.all_prompts, p.all_negative_prompts = state.all_prompts, state.all_negative_prompts
        p.all_seeds, p.all_subseeds = state.all_seeds, state.all_subseeds
        token = shared.push_overrides(p.override_settings)
        try:
            hook(args)
        finally:
            shared.pop_overrides(token)


class ExtensionPostprocessing:
    """Implements sdwebui.services' `PostprocessingSteps` over the loaded `ScriptPostprocessing` scripts."""

    def prepare(self, scripts_args: dict[str, dict[str, Any]]) -> Callable[[Any], tuple[Any, dict[str, Any]]]:
        runner = scripts.scripts_postproc or scripts_postprocessing.ScriptPostprocessingRunner()
        try:
            args = runner.create_args_for_run(scripts_args)
        except scripts_postprocessing.PostprocessingArgsError as error:
            raise RequestError(error.field, error.reason) from None

        def step(image: Any) -> tuple[Any, dict[str, Any]]:
            if not runner.scripts:
                return image, {}
            pp = scripts_postprocessing.PostprocessedImage(image.convert("RGB"))
            runner.run(pp, args)
            return pp.image, dict(pp.info)

        return step


@dataclass
class ExtrasScriptControls:
    """The Extras scripts' components as the Extras tab built them, each with its (script, control) name."""

    components: list[Any]
    keys: list[tuple[str, str]]

    def call_args(self, values: list[Any]) -> dict[str, dict[str, Any]]:
        """The tab's values -> {script name: {control name: value}}, as the API's `scripts` field."""
        args: dict[str, dict[str, Any]] = {}
        for (script, control), value in zip(self.keys, values, strict=False):
            args.setdefault(script, {})[control] = value
        return args


def extras_script_controls() -> ExtrasScriptControls:
    """Build the loaded Extras scripts' `ui()` controls in the Blocks being built (the Extras tab)."""
    runner = scripts.scripts_postproc or scripts_postprocessing.ScriptPostprocessingRunner()
    components = runner.setup_ui()
    keys = [(str(s.name), name) for s in runner.scripts_in_preferred_order() for name in (s.controls or {})]
    return ExtrasScriptControls(components, keys)


def builds_p(runner: scripts.ScriptRunner, script_args: list[Any]) -> bool:
    """Whether a job needs an A1111 `p`: only when something can see one. That is a selected selectable
    script (script_args[0] != 0), an AlwaysVisible script of the tab that overrides a processing hook
    (`scripts.PROCESSING_HOOKS`: process, postprocess_image, ...; enabled or not, as its ui() values are
    its own business), a registered on_before_image_saved / on_image_saved callback (their params carry
    p), or an extra network an extension registered (activated with p per batch). Otherwise the typed request goes straight to the engine, with the other callbacks (cfg_denoiser,
    extra_noise, ...) as its hooks."""
    selected = bool(script_args) and bool(script_args[0])
    return (
        selected
        or any(scripts.sees_processing(script) for script in runner.alwayson_scripts)
        or any(script_callbacks.has_callbacks(name) for name in processing.CALLBACKS_WITH_P)
        or bool(extra_networks.custom_kinds())
    )


def run_job(
    runner: scripts.ScriptRunner,
    request: Txt2ImgRequest,
    script_args: list[Any],
    run: EngineRun,
    ctx: JobContext,
    model: Any,
    job: str = "txt2img",
) -> GenerationResult:
    """One generation as A1111 runs it, inside the job's scope (`shared.state`/`shared.sd_model` are this
    job's): the engine directly when no script can see it (`builds_p`), else setup, then the selected
    script's run() or process_images(p)."""
    state = shared.State(ctx)
    state.begin(job)
    # the engine reports progress to this context: shared.state first, then the job's own listener
    listened = dataclasses.replace(ctx, on_step=lambda info: _progress(state, ctx, info))
    scope = shared.JobScope(state, model, run=lambda req, hooks: run(req, hooks, listened))
    try:
        with shared.job_scope(scope):
            if not builds_p(runner, script_args):
                return _run_without_p(request, scope)
            return _run_with_p(runner, request, script_args, scope)
    finally:
        state.end()


def _progress(state: shared.State, ctx: JobContext, info: StepInfo) -> None:
    state.update_from_step(info)
    ctx.report(info)


def _run_without_p(request: Txt2ImgRequest, scope: shared.JobScope) -> GenerationResult:
    token = shared.push_overrides(request.override_settings)  # callbacks read opts as the job sees them
    try:
        return scope.run(request, processing.callback_hooks())
    finally:
        shared.pop_overrides(token)


def _run_with_p(
    runner: scripts.ScriptRunner, request: Txt2ImgRequest, script_args: list[Any], scope: shared.JobScope
) -> GenerationResult:
    p = processing.processing_from_request(request)
    p.scripts, p.script_args, p.engine_run, p.is_api = runner, list(script_args), scope.run, True
    p.sd_model = shared.current_model()
    if p.sd_model is not None:
        p.sd_model_name, p.sd_model_hash = p.sd_model.info.name, p.sd_model.info.shorthash
    runner.setup_scrips(p, is_ui=False)
    processed = runner.run(p, *p.script_args)
    if processed is None:
        processed = processing.process_images(p)
    return processed.to_result(request)


_last_model: list[Any] = [None]  # the facade's memory of which model on_model_loaded last saw


def _notify_model_loaded(model: Any) -> None:
    """The model provider's load listener: a job that loads another model (an X/Y/Z checkpoint axis) runs
    on it from now on, and on_model_loaded fires for a model the extensions have not seen yet."""
    scope = shared.current_job()
    if scope is not None:
        scope.model = model
    loaded = getattr(model, "loaded_model", model)
    if _last_model[0] is not loaded:
        _last_model[0] = loaded
        script_callbacks.model_loaded_callback(model if loaded is not model else shared.SdModelView(model))


def ui_values_to_call(
    is_img2img: bool, values: list[Any], runner: scripts.ScriptRunner | None = None
) -> dict[str, Any]:
    """The UI's positional values (A1111 `inputs` order) -> ScriptCall fields, by script title.

    `runner` is the one whose setup_ui() built the components (default: the current one). Titles make the
    call survive a script reload: alwayson scripts that are gone are dropped, a gone selectable script
    gives a clear "not found" error when the job is prepared.
    """
    built = runner or scripts.runner_for(is_img2img)
    current = {s.title().lower() for s in scripts.runner_for(is_img2img).alwayson_scripts}
    index = values[0] if values else 0
    name, args = None, []
    if index:
        if not isinstance(index, int) or not 0 < index <= len(built.selectable_scripts):
            raise scripts.ScriptNotFound("script_name", f"no selectable script with index {index!r}")
        script = built.selectable_scripts[index - 1]
        name, args = script.title(), list(values[script.args_from : script.args_to])
    alwayson = {
        s.title(): list(values[s.args_from : s.args_to])
        for s in built.alwayson_scripts
        if s.args_from is not None and s.title().lower() in current
    }
    return {"script_name": name, "script_args": args, "alwayson_scripts": alwayson}


@dataclass
class ScriptControls:
    """The script area of a txt2img/img2img tab: `inputs` go last in the Generate click's inputs."""

    inputs: list[Any]  # [Script dropdown (type="index"), *every script's components]
    is_img2img: bool
    runner: scripts.ScriptRunner  # the runner that built `inputs` (kept across script reloads)

    def call_fields(self, values: list[Any]) -> dict[str, Any]:
        """Submitted values of `inputs` -> ScriptCall(kind, **fields)."""
        return ui_values_to_call(self.is_img2img, list(values), self.runner)


def script_controls(is_img2img: bool) -> ScriptControls:
    """Build the Script dropdown and the scripts' components here (inside the tab's gr.Blocks)."""
    runner = scripts.runner_for(is_img2img)
    return ScriptControls(runner.setup_ui(), is_img2img, runner)


@dataclass
class ExtensionSystem:
    manager: ExtensionManager
    services: Any
    loaded: bool = False  # scripts were loaded once (a reload then runs on_before_reload first)

    def reload(self) -> None:
        """Apply and restart UI: re-scan extensions, re-import scripts and re-register their settings."""
        if self.loaded:
            script_callbacks.on_reload_callback()
        self.loaded = True
        self.manager.discover()
        self.manager.run_pending_installs()
        if any(not ext.is_builtin for ext in self.manager.active()):
            from sdwebui.extensions import gradio3  # imports Gradio: only when user extensions will run

            gradio3.apply([self.manager.extensions_dir])  # Gradio 3 keywords, for their code only
        scripts.load_scripts(self.manager)
        _last_model[0] = None  # newly loaded scripts have not seen any model yet
        script_callbacks.ui_settings_callback()
        script_callbacks.before_ui_callback()

    def javascript_files(self) -> list[str]:
        return [str(p) for p in self.manager.javascript_files()]

    def javascript_urls(self) -> list[str]:
        """The enabled extensions' javascript/*.js as A1111's page links them: `file=extensions/<name>/...`
        (`extensions-builtin/` for built-in ones) with the file's mtime, so an edited file is fetched again."""
        urls = []
        for ext in self.manager.active():
            folder = "extensions-builtin" if ext.is_builtin else "extensions"
            for path in ext.list_files("javascript", ".js"):
                relative = path.relative_to(ext.path).as_posix()
                urls.append(f"file={folder}/{ext.name}/{relative}?{int(path.stat().st_mtime)}")
        return urls

    def stylesheets(self) -> list[str]:
        return [str(p) for p in self.manager.stylesheets()]


def app_started(demo: Any, app: Any) -> None:
    """Call once the FastAPI app (and the Gradio Blocks, or None) exist: runs `on_app_started` callbacks
    (extensions add their own API routes there)."""
    shared.demo = demo
    script_callbacks.app_started_callback(demo, app)


def extension_tabs() -> list[Any]:
    """`on_ui_tabs` results: [(gr.Blocks, title, elem_id)] to add as top-level tabs."""
    return script_callbacks.ui_tabs_callback()


def attach_extensions(services: Any) -> ExtensionSystem:
    """Bind the facade to the app and load the extensions (see module docstring)."""
    paths.configure(services.paths)
    manager = ExtensionManager.from_args(services.args, services.paths, services.options)
    models = services.models
    shared.bind(
        options=services.options,
        args=services.args,
        model_provider=lambda: models.current,  # outside a job; a job's own model comes with the job
        services=services,
    )
    upscaler.refresh_sd_upscalers()  # shared.sd_upscalers: A1111's UpscalerData over the app's upscalers
    system = ExtensionSystem(manager, services)
    system.reload()
    models.load_listeners.append(_notify_model_loaded)  # on_model_loaded fires where the model is loaded
    if models.current is not None:  # loaded before the scripts were
        _notify_model_loaded(models.current)
    services.scripts = ExtensionScripts()
    services.postprocessing = ExtensionPostprocessing()
    services.extension_list = manager.extensions_for_api
    services.extensions = system  # for the Extensions tab
    return system
