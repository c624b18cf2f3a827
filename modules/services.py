"""The app's objects in one container, built once at start-up and handed to the UI and the API.

Nothing here is global: app.py calls `build_services(args)` and passes the result on. Every generation,
model switch and option change goes through `services.jobs`, the one queue shared by UI and API.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from modules.engine.context import JobContext, StepInfo
from modules.engine.hooks import EngineHooks
from modules.engine.requests import GenerationResult, Img2ImgRequest, RequestError, Txt2ImgRequest
from modules.engine.settings import EngineSettings
from modules.jobs import Job, JobQueue, PreviewFn
from modules.options import Options, default_templates
from modules.paths import DataPaths
from modules.sd_models.model import CheckpointInfo, LoadedModel
from modules.styles import StyleDatabase

log = logging.getLogger(__name__)

GenerateFn = Callable[..., GenerationResult]  # generate(model, request, ctx, settings, hooks=None)


class ModelProvider(Protocol):
    """What the API and UI need from the ModelManager (modules.sd_models)."""

    def checkpoints(self) -> list[CheckpointInfo]: ...
    def checkpoint_titles(self) -> list[str]: ...
    def refresh(self) -> None: ...
    def current_title(self) -> str | None: ...
    def load(self, title: str | None = None, vae: str | None = None) -> LoadedModel: ...
    def unload(self) -> None: ...
    def vae_names(self) -> list[str]: ...


@dataclass
class ScriptCall:
    """Script selection of one API/UI request, as A1111 sends it."""

    kind: str  # "txt2img" or "img2img"
    script_name: str | None = None
    script_args: list[Any] = field(default_factory=list)
    alwayson_scripts: dict[str, list[Any]] = field(default_factory=dict)


class ScriptRunner(Protocol):
    """Hook point filled by the extension layer (modules.scripts). `prepare` raises RequestError for an
    unknown script; it returns the function that runs the job (a selectable script replaces the normal run)."""

    def titles(self, kind: str) -> list[str]: ...
    def script_info(self) -> list[dict[str, Any]]: ...
    def prepare(
        self, call: ScriptCall, run: Callable[[Txt2ImgRequest, EngineHooks | None], GenerationResult]
    ) -> Callable[[Txt2ImgRequest], GenerationResult]: ...


class NoScripts:
    """Until extensions are loaded: no scripts, any named script is an error."""

    def titles(self, kind: str) -> list[str]:
        return []

    def script_info(self) -> list[dict[str, Any]]:
        return []

    def prepare(self, call: ScriptCall, run):
        if call.script_name:
            raise RequestError(
                "script_name", f"unknown script {call.script_name!r}; no scripts are installed"
            )
        if call.alwayson_scripts:
            name = next(iter(call.alwayson_scripts))
            raise RequestError("alwayson_scripts", f"unknown script {name!r}; no scripts are installed")
        return lambda request: run(request, None)


@dataclass
class AppServices:
    args: argparse.Namespace
    paths: DataPaths
    options: Options
    models: ModelProvider
    jobs: JobQueue
    styles: StyleDatabase
    generate: GenerateFn
    scripts: ScriptRunner = field(default_factory=NoScripts)
    # live preview of a step's latents on the job's model (modules.previews); None = no previews
    preview: Callable[[LoadedModel, StepInfo], Image.Image | None] | None = None
    # installed extensions as A1111's /sdapi/v1/extensions items (filled by the extension layer)
    extension_list: Callable[[], list[dict[str, Any]]] = list
    # the extension system (modules.extensions_facade.ExtensionSystem), set by attach_extensions
    extensions: Any = None
    version: str = "sdwebui-0.1.0"
    _options_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def max_image_pixels(self) -> int:
        return int(getattr(self.args, "max_image_pixels", 4096 * 4096))

    # --- settings ---
    def engine_settings(self, overrides: dict[str, Any] | None = None) -> EngineSettings:
        values = {**self.options.items(), **(overrides or {})}
        root = Path(values.get("outdir_samples") or self.paths.outputs_dir)
        if not root.is_absolute():
            root = self.paths.data_dir / root
        return EngineSettings(
            outputs_root=root,
            save_images=bool(values.get("samples_save", True)),
            live_preview_every=int(values.get("show_progress_every_n_steps", 0))
            if values.get("live_previews_enable", True)
            else 0,
            img2img_fix_steps=bool(values.get("img2img_fix_steps", False)),
            inpainting_mask_weight=float(values.get("inpainting_mask_weight", 1.0)),
            eta_ancestral=float(values.get("eta_ancestral", 1.0)),
            eta_ddim=float(values.get("eta_ddim", 0.0)),
            version=self.version,
            styles=self.styles,
        )

    # --- jobs ---
    def submit_generation(
        self,
        request: Txt2ImgRequest,
        task_id: str | None = None,
        script_call: ScriptCall | None = None,
        restore_overrides: bool = True,
    ) -> Job:
        """Queue one generation; the job's result is a GenerationResult. Raises RequestError before queueing."""
        request.validate()
        kind = "img2img" if isinstance(request, Img2ImgRequest) else "txt2img"
        call = script_call or ScriptCall(kind)
        overrides = dict(request.override_settings)
        settings = self.engine_settings(overrides)

        holder: dict[str, Any] = {}

        def load_model(job_overrides: dict[str, Any]) -> LoadedModel:
            wanted = (
                job_overrides.get("sd_model_checkpoint") or self.options.get("sd_model_checkpoint") or None
            )
            vae = job_overrides.get("sd_vae") or self.options.get("sd_vae") or None
            return self.models.load(wanted, vae=vae)

        def run(req: Txt2ImgRequest, hooks: EngineHooks | None, ctx: JobContext) -> GenerationResult:
            # scripts (e.g. the X/Y/Z checkpoint axis) may change the request's overrides per sub-run
            model = load_model({**overrides, **req.override_settings})
            holder["model"] = model
            result = self.generate(model, req, ctx, settings, hooks)
            result.request = result.request or req
            return result

        runner = self.scripts.prepare(call, lambda req, hooks: run(req, hooks, holder["ctx"]))

        def work(ctx: JobContext) -> GenerationResult:
            holder["ctx"] = ctx
            job_request = request
            if request.width is None or request.height is None:
                # no size given (API): the model's native one, fixed before scripts see the request
                job_request = request.with_default_size(load_model(overrides).native_resolution)
            result = runner(job_request)
            if not restore_overrides and overrides:
                self._write_options(overrides)  # A1111: override_settings_restore_afterwards=false keeps them
            return result

        job = self.jobs.submit(
            work,
            kind=kind,
            task_id=task_id,
            # show_progress_every_n_steps = 0 (or live previews off) means no previews, as the engine reads it
            preview_fn=self._preview_fn(holder) if settings.live_preview_every > 0 else None,
            preview_every=max(1, settings.live_preview_every),
        )
        job.meta["run"] = holder  # holder["model"]: the model the job ran on, for the response's info
        return job

    def _preview_fn(self, holder: dict[str, Any]) -> PreviewFn | None:
        preview = self.preview
        if preview is None:
            return None
        return lambda info: preview(holder["model"], info) if "model" in holder else None

    def set_options(self, values: dict[str, Any], timeout: float | None = None) -> list[str]:
        """Change settings through the queue (a checkpoint change loads that model); returns changed keys."""
        known = self.options.items()
        for key, value in values.items():
            if key in known and not self.options.same_type(key, value):
                raise RequestError(key, f"expected {type(known[key]).__name__}, got {value!r}")
        checkpoint = values.get("sd_model_checkpoint")
        if checkpoint and checkpoint != known.get("sd_model_checkpoint"):
            self._check_checkpoint(checkpoint)
        vae = values.get("sd_vae")
        if vae and vae != known.get("sd_vae") and vae not in self.models.vae_names():
            raise RequestError("sd_vae", f"unknown VAE {vae!r}; valid: {', '.join(self.models.vae_names())}")

        def work(ctx: JobContext) -> list[str]:
            if checkpoint and checkpoint != self.options.get("sd_model_checkpoint"):
                model = self.models.load(checkpoint)
                values_now = {**values, "sd_model_checkpoint": model.info.title}
            else:
                values_now = values
            return self._write_options(values_now)

        return self.jobs.submit(work, kind="options").wait(timeout)

    def _write_options(self, values: dict[str, Any]) -> list[str]:
        with self._options_lock:
            changed = [key for key, value in values.items() if self.options.set(key, value)]
            if changed:
                self.options.save()
        if "sd_checkpoints_limit" in changed and not getattr(self.args, "sd_checkpoints_limit", None):
            set_limit = getattr(self.models, "set_limit", None)
            if set_limit is not None:
                set_limit(max(1, int(self.options.get("sd_checkpoints_limit"))))
        return changed

    def _check_checkpoint(self, name: str) -> None:
        titles = self.models.checkpoint_titles()
        infos = self.models.checkpoints()
        names = {info.title for info in infos} | {info.name for info in infos} | set(titles)
        names |= {Path(info.filename).name for info in infos}
        if name not in names:
            raise RequestError("sd_model_checkpoint", f"unknown checkpoint {name!r}; available: {titles}")

    def model_info(self, job: Job | None = None) -> dict[str, Any]:
        """sd_model_name / hash / vae of the model a job ran on (default: the current one), A1111 info keys."""
        model = (job.meta.get("run") or {}).get("model") if job is not None else None
        if model is not None:
            info = model.info
        else:
            title = self.models.current_title()
            info = next((c for c in self.models.checkpoints() if c.title == title), None)
        if info is None:
            return {}
        return {
            "sd_model_name": info.name,
            "sd_model_hash": info.shorthash,
            "sd_vae_name": getattr(model, "vae_name", None),
            "sd_vae_hash": None,
            "is_inpainting": bool(getattr(model, "is_inpainting", False)) if model is not None else False,
        }


def build_services(
    args: argparse.Namespace,
    models: ModelProvider | None = None,
    generate: GenerateFn | None = None,
    workers: int = 1,
) -> AppServices:
    """Build every app object from the parsed flags (models/generate may be injected by tests)."""
    paths = DataPaths(Path(args.data_dir).resolve())
    paths.ensure()
    options = Options(default_templates(), paths.config_file)
    _offer_preview_methods(options, paths)  # before load: a saved "TAESD" is then kept
    options.load()
    if models is None:
        models = _default_model_manager(args, paths, options)
    if generate is None:
        from modules.engine.generate import generate as engine_generate

        generate = engine_generate
    services = AppServices(
        args=args,
        paths=paths,
        options=options,
        models=models,
        jobs=JobQueue(workers=workers),
        styles=StyleDatabase(paths.styles_file),
        generate=generate,
        preview=_live_previewer(options, paths),
    )
    return services


def _live_previewer(
    options: Options, paths: DataPaths
) -> Callable[[LoadedModel, StepInfo], Image.Image | None]:
    """Live previews by the `show_progress_type` setting, read at each preview (modules.previews)."""
    from modules.previews import METHOD_CHEAP, LivePreviewer

    return LivePreviewer(lambda: options.get("show_progress_type", METHOD_CHEAP), paths.models_dir)


def _offer_preview_methods(options: Options, paths: DataPaths) -> None:
    """`show_progress_type` offers TAESD when a TAESD decoder file is installed."""
    from modules.previews import preview_method_option

    key = "show_progress_type"
    options.add_option(key, preview_method_option(options.data_labels[key], paths.models_dir))


def _default_model_manager(args: argparse.Namespace, paths: DataPaths, options: Options) -> ModelProvider:
    from modules.cmd_args import uses_cpu_for_all
    from modules.sd_models.loader import DevicePolicy
    from modules.sd_models.manager import ModelManager

    policy = DevicePolicy.from_flags(
        use_cpu_all=uses_cpu_for_all(args),
        no_half=args.no_half,
        no_half_vae=args.no_half_vae,
        precision_full=args.precision == "full",
    )
    limit = args.sd_checkpoints_limit or int(options.get("sd_checkpoints_limit", 1) or 1)
    manager = ModelManager(
        checkpoint_dirs=[paths.checkpoints_dir, *([Path(args.ckpt_dir)] if args.ckpt_dir else [])],
        vae_dirs=[paths.vae_dir, *([Path(args.vae_dir)] if args.vae_dir else [])],
        hash_cache_path=paths.cache_file,
        policy=policy,
        max_loaded=max(1, limit),
        extra_checkpoints=[Path(args.ckpt)] if args.ckpt else [],
    )
    return ManagedModels(manager, preferred=args.ckpt)


class ManagedModels:
    """ModelProvider over modules.sd_models.manager.ModelManager (titles, "current or default" loading)."""

    def __init__(self, manager: Any, preferred: str | None = None):
        self.manager = manager
        self.preferred = preferred

    def checkpoints(self) -> list[CheckpointInfo]:
        return self.manager.checkpoints()

    def checkpoint_titles(self) -> list[str]:
        return [info.title for info in self.checkpoints()]

    def refresh(self) -> None:
        self.manager.refresh()

    def current_title(self) -> str | None:
        current = self.manager.current
        return current.info.title if current is not None else None

    def load(self, title: str | None = None, vae: str | None = None) -> LoadedModel:
        """Load by title; else the current model, --ckpt, or the first checkpoint found. `vae`: "Automatic",
        "None" or a VAE name (None keeps "Automatic")."""
        vae = vae or "Automatic"
        if title:
            return self.manager.load(title, vae=vae)
        current = self.manager.current
        if current is not None:
            return self.manager.load(current.info, vae=vae)
        if self.preferred:
            return self.manager.load(str(Path(self.preferred).resolve()), vae=vae)
        infos = self.checkpoints()
        if not infos:
            raise RuntimeError("no checkpoint found: put one in models/Stable-diffusion or pass --ckpt")
        return self.manager.load(infos[0], vae=vae)

    def unload(self) -> None:
        self.manager.unload()

    def vae_names(self) -> list[str]:
        return self.manager.vae_names()

    def vae_files(self) -> list[tuple[str, Path]]:
        return self.manager.vae_files()

    def set_limit(self, max_loaded: int) -> None:
        self.manager.set_limit(max_loaded)


def serve(services: AppServices) -> int:
    """Serve the API and/or the UI with uvicorn until interrupted (app.py's last step)."""
    from modules.api.server import create_app, serve_app
    from modules.cmd_args import bind_address
    from modules.extensions_facade import app_started

    app = create_app(
        services, with_ui=not services.args.nowebui, with_api=bool(services.args.api or services.args.nowebui)
    )
    app_started(None, app)
    return serve_app(app, bind_address(services.args), services.args.port)
