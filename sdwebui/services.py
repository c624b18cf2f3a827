"""The app's objects in one container, built once at start-up and handed to the UI and the API.

Nothing here is global: app.py calls `build_services(args)` and passes the result on. Every generation,
model switch and option change goes through a job queue shared by UI and API: `services.jobs`, the queue
of the default worker stack (`services.stacks[0]`; sdwebui.jobs.stack). A generation leases its model
(sdwebui.models.lease): a per-job VAE override is a patch of the job's model, never of the shared one.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from sdwebui.config import resolve
from sdwebui.config.flags import face_restorer_dirs, memory_mode_flag, upscaler_dirs
from sdwebui.config.options import OptionError, Options, check_output_dirs, default_templates
from sdwebui.config.paths import DataPaths
from sdwebui.config.styles import StyleDatabase
from sdwebui.engine import hires
from sdwebui.engine.conditioning import clip_token_counter
from sdwebui.engine.context import JobContext, StepInfo
from sdwebui.engine.extra_networks import LoraNetworksPatch, lora_tags
from sdwebui.engine.face_restoration import FaceRestorers
from sdwebui.engine.face_restoration import check_available as check_face_restoration
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.memory.settings import MOVING_MODES
from sdwebui.engine.requests import (
    GenerationResult,
    Img2ImgRequest,
    JobLimits,
    RequestError,
    TokenCounter,
    Txt2ImgRequest,
)
from sdwebui.engine.settings import EngineSettings
from sdwebui.engine.upscaling import ModelUpscalers, TileSettings
from sdwebui.jobs.generation import GenerationJob
from sdwebui.jobs.managed_models import ManagedModels, PassCheckpointLeases, names_the_vae
from sdwebui.jobs.queue import Job, JobQueue, PreviewFn, Work
from sdwebui.jobs.stack import WorkerStack
from sdwebui.models import face_restorers
from sdwebui.models.controlnet import ControlModelCache, ControlNetLibrary, ControlNets
from sdwebui.models.embeddings_library import EmbeddingLibrary
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.families import family_spec
from sdwebui.models.hashing import HashCache
from sdwebui.models.lease import ModelLease
from sdwebui.models.lora import DeltaCache, LoraNetwork
from sdwebui.models.lora.library import LoraLibrary
from sdwebui.models.model import LoadedModel
from sdwebui.models.patches import Patch
from sdwebui.models.provider import ModelProvider
from sdwebui.models.upscalers import UpscalerLibrary, library_for

log = logging.getLogger(__name__)

GenerateFn = Callable[..., GenerationResult]  # generate(model, request, ctx, settings, hooks=None)


@dataclass
class ScriptCall:
    """Script selection of one API/UI request, as A1111 sends it."""

    kind: str  # "txt2img" or "img2img"
    script_name: str | None = None
    script_args: list[Any] = field(default_factory=list)
    alwayson_scripts: dict[str, list[Any]] = field(default_factory=dict)


EngineRunFn = Callable[[Txt2ImgRequest, EngineHooks | None, JobContext], GenerationResult]
JobWorkFn = Callable[[Txt2ImgRequest, JobContext, LoadedModel], GenerationResult]  # (request, ctx, model)


class ScriptRunner(Protocol):
    """Hook point filled by the extension layer (modules.scripts). `prepare` raises RequestError for an
    unknown script; it returns the function that runs the job (a selectable script replaces the normal run)."""

    def titles(self, kind: str) -> list[str]: ...
    def script_info(self) -> list[dict[str, Any]]: ...
    def prepare(self, call: ScriptCall, run: EngineRunFn) -> JobWorkFn: ...
    def saving_hooks(self, request: Txt2ImgRequest, ran_on: Any) -> EngineHooks | None: ...


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
        return lambda request, ctx, model: run(request, None, ctx)

    def saving_hooks(self, request: Txt2ImgRequest, ran_on: Any) -> EngineHooks | None:
        return None


ExtrasStep = Callable[[Image.Image], tuple[Image.Image, dict[str, Any]]]  # image -> (image, infotext items)


class PostprocessingSteps(Protocol):
    """Extras steps of extensions (A1111's scripts_postprocessing), filled by the extension layer. `prepare`
    checks {script name: {argument: value}} (RequestError) and returns the step run on each image."""

    def prepare(self, scripts_args: dict[str, dict[str, Any]]) -> ExtrasStep: ...


class NoPostprocessing:
    """Until extensions are loaded: no Extras scripts; naming one is an error."""

    def prepare(self, scripts_args: dict[str, dict[str, Any]]) -> ExtrasStep:
        if scripts_args:
            name = next(iter(scripts_args))
            raise RequestError("scripts", f"unknown Extras script {name!r}; no extensions are loaded")
        return lambda image: (image, {})


@dataclass
class AppServices:
    args: argparse.Namespace
    paths: DataPaths
    options: Options
    stacks: list[WorkerStack]  # one per device; the first is the default (UI, API, option changes)
    styles: StyleDatabase
    generate: GenerateFn
    scripts: ScriptRunner = field(default_factory=NoScripts)
    postprocessing: PostprocessingSteps = field(default_factory=NoPostprocessing)  # extensions' Extras steps
    # live preview of a step's latents on the job's model (sdwebui.engine.previews); None = no previews
    preview: Callable[[LoadedModel, StepInfo], Image.Image | None] | None = None
    # installed extensions as A1111's /sdapi/v1/extensions items (filled by the extension layer)
    extension_list: Callable[[], list[dict[str, Any]]] = list
    # the extension system (sdwebui.extensions.bridge.ExtensionSystem), set by attach_extensions
    extensions: Any = None
    version: str = "sdwebui-0.1.0"
    # start-up problems the user must see (bad config.json / styles.csv set aside, a checkpoint skipped)
    notices: list[str] = field(default_factory=list)
    # textual-inversion embeddings (embeddings/ or --embeddings-dir), given to the engine with the settings
    embeddings: EmbeddingLibrary = field(default_factory=lambda: EmbeddingLibrary([]))
    # LoRA files (models/Lora, models/LyCORIS, --lora-dir); one delta cache for every job, so it lasts
    loras: LoraLibrary | None = None
    lora_cache: DeltaCache = field(default_factory=DeltaCache)
    _lora_patches: dict[bool, LoraNetworksPatch] = field(default_factory=dict, repr=False)
    # upscaler model files (ESRGAN, RealESRGAN, ...; sdwebui.models.upscalers); None: plain resamplers only
    upscaler_library: UpscalerLibrary | None = None
    # GFPGAN / CodeFormer and the face detector (models/GFPGAN, models/Codeformer); None: no face restoration
    face_restorer_library: face_restorers.FaceRestorerLibrary | None = None
    # several workers on Ray behind the one queue (sdwebui.jobs.ray_pool.RayPool; --workers/--ray-address);
    # None: the embedded default, jobs run on the stacks of this process
    pool: Any = None
    # ControlNet / T2I-Adapter models (models/ControlNet, --controlnet-dir), loaded ones cached for every job
    controlnets: ControlNets | None = None
    _options_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def stack(self) -> WorkerStack:
        return self.stacks[0]

    @property
    def models(self) -> ModelProvider:
        """The default stack's models."""
        return self.stacks[0].models

    @property
    def jobs(self) -> JobQueue:
        """The queue of the UI and API: the pool's when there is one, else the default stack's."""
        return self.pool if self.pool is not None else self.stacks[0].jobs

    def shutdown(self, timeout: float = 5.0) -> None:
        if self.pool is not None:
            self.pool.shutdown(timeout)
        for stack in self.stacks:
            stack.shutdown(timeout)

    @property
    def max_image_pixels(self) -> int:
        return int(getattr(self.args, "max_image_pixels", 4096 * 4096))

    def upscalers(self, stack: WorkerStack | None = None) -> ModelUpscalers | None:
        """The upscaler models as `stack`'s jobs run them (its device; fp16 where its models use it), with the
        tile settings of now."""
        if self.upscaler_library is None:
            return None
        device = _stack_device(stack or self.stack)
        if {"esrgan", "swinir"} & set(getattr(self.args, "use_cpu", None) or []):  # A1111's --use-cpu esrgan
            device = torch.device("cpu")
        args = self.args
        half = (
            device.type == "cuda"
            and not getattr(args, "no_half", False)
            and getattr(args, "precision", "") != "full"
        )
        tiles = TileSettings(
            int(self.options.get("ESRGAN_tile", 192)), int(self.options.get("ESRGAN_tile_overlap", 8))
        )
        return ModelUpscalers(self.upscaler_library, device, half, tiles)

    def face_restorers(self, stack: WorkerStack | None = None) -> FaceRestorers | None:
        """The face restoration files as `stack`'s jobs run them (A1111's --use-cpu gfpgan / codeformer)."""
        if self.face_restorer_library is None:
            return None
        device = _stack_device(stack or self.stack)
        if {"gfpgan", "codeformer"} & set(getattr(self.args, "use_cpu", None) or []):
            device = torch.device("cpu")
        return FaceRestorers(self.face_restorer_library, device)

    # --- settings ---
    def engine_settings(
        self, overrides: dict[str, Any] | None = None, stack: WorkerStack | None = None
    ) -> EngineSettings:
        """The settings a job on `stack` (default: the default stack) runs with, its pass checkpoints included."""
        source = resolve.SettingsSource(
            self.paths,
            self.styles,
            self.version,
            self.embeddings,
            self.upscalers(),
            memory_mode_flag(self.args),
            self.controlnets,
            self.face_restorers(stack),
        )
        settings = resolve.engine_settings(self.options, overrides, source)
        return dataclasses.replace(settings, checkpoints=self.pass_checkpoints(stack))

    def pass_checkpoints(self, stack: WorkerStack | None = None) -> PassCheckpointLeases:
        """The refiner / hires checkpoints of `stack`'s jobs (default: the default stack's)."""
        return PassCheckpointLeases((stack or self.stack).models, self.options.get("sd_vae") or None)

    # --- jobs ---
    def submit_generation(
        self,
        request: Txt2ImgRequest,
        task_id: str | None = None,
        script_call: ScriptCall | None = None,
        restore_overrides: bool = True,
        stack: WorkerStack | None = None,
        checked: bool = False,
    ) -> Job:
        """Queue one generation on `stack` (default: the default one); the job's result is a
        GenerationResult and `job.generation` its GenerationJob. Raises RequestError before queueing.
        `checked`: the front process checked the request and its limits already (a pool worker runs it);
        the files it names (upscaler, checkpoint, LoRAs, face restoration) are still looked up here."""
        if not checked:
            request.validate()
        hires.check_upscaler(getattr(request, "hires", None), self.upscalers(stack))
        limits = JobLimits.from_settings(self.options.items())  # the shared settings, never the overrides
        if not checked:
            limits.check(request, self.token_counter())
        kind = "img2img" if isinstance(request, Img2ImgRequest) else "txt2img"
        overrides = dict(request.override_settings)
        self._check_output_dirs(overrides, prefix="override_settings.")
        request = self._with_setting_lora(request, overrides)
        if self.pool is not None and stack is None:  # the worker resolves its own pass checkpoints
            settings = self.engine_settings(overrides)
            loras = self._check_lora_names(request, settings)
            return self._submit_remote(
                request, kind, task_id, script_call, settings, restore_overrides, loras
            )
        stack = stack or self.stack
        settings = self.engine_settings(overrides, stack)
        settings.checkpoints.check(request)
        self._check_lora_names(request, settings)
        if request.restore_faces:  # a missing model file is a 4xx before queueing
            check_face_restoration(settings.face_restoration)
        gen = GenerationJob(request, kind, stack=stack.name)

        def run(req: Txt2ImgRequest, hooks: EngineHooks | None, ctx: JobContext) -> GenerationResult:
            # scripts (e.g. the X/Y/Z checkpoint axis) may change the request's overrides per sub-run
            with gen.holding(
                self.lease_for_job(stack.models, {**overrides, **req.override_settings})
            ) as model:
                result = self.generate(model, req, ctx, settings, hooks)
            result.request = result.request or req
            return result

        runner = self.scripts.prepare(script_call or ScriptCall(kind), run)
        return stack.jobs.submit(
            self._generation_work(gen, stack.models, runner, limits, restore_overrides),
            kind=kind,
            task_id=task_id,
            # show_progress_every_n_steps = 0 (or live previews off) means no previews, as the engine reads it
            preview_fn=self._preview_fn(gen) if settings.live_preview_every > 0 else None,
            preview_every=max(1, settings.live_preview_every),
            generation=gen,
        )

    def _submit_remote(
        self,
        request: Txt2ImgRequest,
        kind: str,
        task_id: str | None,
        script_call: ScriptCall | None,
        settings: EngineSettings,
        restore_overrides: bool,
        loras: list[str],
    ) -> Job:
        """Queue a generation on the pool: a worker runs it, this process saves its images. `loras`: the
        LoRA files it names (the dispatcher prefers a worker holding them)."""
        from sdwebui.jobs.remote import RemoteJob
        from sdwebui.jobs.remote_saving import save_remote_result

        gen = GenerationJob(request, kind, stack="pool")
        overrides = dict(request.override_settings)
        checkpoint = overrides.get("sd_model_checkpoint") or self.options.get("sd_model_checkpoint")
        spec = RemoteJob(
            job_id=task_id or self.pool.new_task_id(),
            request=request,
            script_call=script_call or ScriptCall(kind),
            options=self.options.items(),
            checkpoint=self._checkpoint_file(checkpoint),
            loras=tuple(loras),
        )

        def finish(job: Job, outcome) -> None:
            gen.ran_on = outcome.ran_on
            ran = outcome.result.request or request  # the extensions' image-saving callbacks run here
            hooks = self.scripts.saving_hooks(ran, outcome.ran_on)
            save_remote_result(outcome.result, outcome.ran_on, request, settings, hooks)
            if not restore_overrides and overrides:
                self._write_options(overrides)

        return self.pool.submit_remote(spec, finish, kind=kind, generation=gen)

    def _checkpoint_file(self, name: str | None) -> str | None:
        """The file a checkpoint name/title stands for (what workers report holding), None if unknown."""
        if not name:
            return None
        for info in self.models.checkpoints():
            if name in (info.title, info.name, info.filename, Path(info.filename).name):
                return info.filename
        return None

    def workers(self, with_memory: bool = False) -> list[Any]:
        """GET /sdapi/v1/workers: the pool's workers, or this process's stacks (the embedded default)."""
        if self.pool is not None:
            return self.pool.status(with_memory)
        from sdwebui.jobs.ray_pool import WorkerStatus

        rows = []
        for stack in self.stacks:
            manager = getattr(stack.models, "manager", None)
            models = manager.loaded() if manager is not None else []
            held = {path for m in models for path in self.loras.held(m)} if self.loras is not None else set()
            running = stack.jobs.running()
            done = sum(1 for job in stack.jobs.recent() if job.finished and job.generation is not None)
            rows.append(
                WorkerStatus(
                    id=stack.name,
                    node=socket.gethostname(),
                    pid=os.getpid(),
                    device=stack.device,
                    loaded_models=[m.info.filename for m in models],
                    loaded_loras=sorted(held),
                    current_job=running[0].id if running else None,
                    jobs_done=done,
                    ready=True,
                )
            )
        return rows

    def token_counter(self) -> TokenCounter:
        """The limits' CLIP token counter, with the current model's embeddings counted as their vectors."""
        from sdwebui.engine.conditioning import embedding_token_counter
        from sdwebui.models.tokenizer import shared_clip_tokenizer

        embeddings = self.embeddings.counted(getattr(self.models, "current", None))
        return (
            embedding_token_counter(shared_clip_tokenizer(), embeddings) if embeddings else clip_token_counter
        )

    def _generation_work(
        self,
        gen: GenerationJob,
        models: ModelProvider,
        runner: JobWorkFn,
        limits: JobLimits,
        restore_overrides: bool,
    ) -> Work:
        overrides = dict(gen.request.override_settings)

        def work(ctx: JobContext) -> GenerationResult:
            gen.ctx = ctx
            # leased before scripts run, as A1111 has it: their setup()/process() see it as shared.sd_model
            with gen.holding(self.lease_for_job(models, overrides)) as model:
                job_request = gen.request
                if job_request.width is None or job_request.height is None or job_request.family_defaults:
                    # no size / steps / CFG given (API): the model's, fixed before scripts see the request
                    job_request = job_request.with_default_size(model.native_resolution)
                    job_request = job_request.with_family_defaults(family_spec(model.family).defaults)
                    limits.check(job_request)  # the size and steps are known now
                result = runner(job_request, ctx, model)
            if not restore_overrides and overrides:
                self._write_options(overrides)  # A1111: override_settings_restore_afterwards=false keeps them
            return result

        return work

    def lease_for_job(self, models: ModelProvider, job_overrides: dict[str, Any]) -> ModelLease:
        """The lease of a job's model: the checkpoint override, else the settings' checkpoint. The shared
        model's own VAE follows the `sd_vae` setting (changing the setting is a real model change); an
        `sd_vae` in the job's overrides is a patch of this job's model only."""
        base_vae = self.options.get("sd_vae") or None
        override = job_overrides.get("sd_model_checkpoint")
        modules = job_overrides.get("forge_additional_modules", self.options.get("forge_additional_modules"))
        extra = {"modules": tuple(modules)} if modules else {}  # only Flux / SD3 checkpoints use them
        if override:
            model = models.load(override, vae=base_vae, **extra)
        else:
            model = self.load_plain_model(base_vae, models, **extra)
        if job_overrides.get("forge_additional_modules") and not model.is_dit:
            raise RequestError(
                "override_settings",
                f"forge_additional_modules apply to Flux / SD3 checkpoints; {model.info.title} is "
                f"{model.family.value}: choose its VAE with sd_vae",
            )
        patches = self._lora_patch(job_overrides) if isinstance(model, LoadedModel) else []
        return models.lease_of(model, vae=job_overrides.get("sd_vae") or None, patches=patches)

    # --- LoRA ---
    def _lora_patch(self, job_overrides: dict[str, Any]) -> list[Patch]:
        """The job's LoRA lease patch (sdwebui.engine.extra_networks). One object per setting, so a script's
        sub-run asking for the same model gets the same lease key and reuses the held model."""
        if self.loras is None:
            return []
        add_hashes = bool(
            job_overrides.get(
                "lora_add_hashes_to_infotext", self.options.get("lora_add_hashes_to_infotext", True)
            )
        )
        if add_hashes not in self._lora_patches:
            self._lora_patches[add_hashes] = LoraNetworksPatch(
                self._lora_network, self.lora_cache, add_hashes
            )
        return [self._lora_patches[add_hashes]]

    def _lora_network(self, name: str, model: LoadedModel) -> LoraNetwork | None:
        entry = self.loras.find(name) if self.loras is not None else None
        keep = int(self.options.get("lora_in_memory_limit", 0) or 0)
        return self.loras.network(entry, model, keep=keep) if entry is not None else None

    def _with_setting_lora(self, request: Txt2ImgRequest, overrides: dict[str, Any]) -> Txt2ImgRequest:
        """A1111's `sd_lora` ("Add network to prompt"): that network appended to the prompt at the default
        multiplier unless the prompt names it already (so the infotext shows it); an unknown one: 422."""
        name = str(overrides.get("sd_lora", self.options.get("sd_lora", "None")) or "None")
        if name == "None" or any(tag.name == name for tag in lora_tags(request.prompt or "")):
            return request
        if self.loras is None or self.loras.find(name) is None:
            raise RequestError("sd_lora", f"the setting names unknown LoRA {name!r} (see /sdapi/v1/loras)")
        weight = float(overrides.get("extra_networks_default_multiplier",
                                     self.options.get("extra_networks_default_multiplier", 1.0)))  # fmt: skip
        return dataclasses.replace(request, prompt=f"{request.prompt or ''}<lora:{name}:{weight:g}>")

    def _check_lora_names(self, request: Txt2ImgRequest, settings: EngineSettings) -> list[str]:
        """Unknown LoRA names refused (422) before the job is queued (the engine checks the other tags,
        after scripts that handle their own kinds). Returns the files named (resolved paths)."""
        prompt = request.prompt or ""
        if request.styles and settings.styles is not None:
            prompt = settings.styles.apply_to_prompt(prompt, request.styles)
        tags = lora_tags(prompt)
        if not tags:
            return []
        if self.loras is None:
            raise RequestError("prompt", f"LoRA is not available in this build: remove {tags[0].text}")
        unknown = [tag for tag in tags if self.loras.find(tag.name) is None]
        if unknown:
            listed = ", ".join(entry.name for entry in self.loras.entries()[:20]) or "none"
            named = ", ".join(f"{tag.name!r} in {tag.text}" for tag in unknown)
            raise RequestError("prompt", f"unknown LoRA {named}; known: {listed} (try refresh)")
        return [str(Path(self.loras.find(tag.name).path).resolve()) for tag in tags]

    def load_plain_model(
        self, vae: str | None = None, models: ModelProvider | None = None, **extra: Any
    ) -> LoadedModel:
        """The model of a job without a checkpoint override (and of start-up): the sd_model_checkpoint
        setting; when it is unset (a fresh install) or cannot be loaded, the provider's default (the first
        loadable of --ckpt, the checkpoints found, the embedded model). That model then becomes the setting,
        in memory as A1111 records it: GET /options names it and one job's override does not stick.
        `models`: a worker stack's models (default: the default stack's)."""
        models = models or self.models
        wanted = self.options.get("sd_model_checkpoint") or None
        if wanted:
            try:
                return models.load(wanted, vae=vae, **extra)
            except (CheckpointLoadError, OSError) as exc:
                if names_the_vae(exc):
                    raise
                self.add_notice(
                    f"The checkpoint in the settings cannot be loaded ({exc}); using another one."
                )
        model = models.load(None, vae=vae, **extra)
        if model.info.title != wanted:
            with self._options_lock:
                self.options.set("sd_model_checkpoint", model.info.title, run_callbacks=False)
        return model

    def add_notice(self, text: str) -> None:
        """Something the user must know about (a bad settings file set aside, a checkpoint skipped): logged,
        and shown in the UI's top bar."""
        log.warning("%s", text)
        if text not in self.notices:
            self.notices.append(text)

    def all_notices(self) -> list[str]:
        return [*self.notices, *getattr(self.models, "notices", [])]

    def _preview_fn(self, gen: GenerationJob) -> PreviewFn | None:
        preview = self.preview
        if preview is None:
            return None
        return lambda info: preview(gen.model, info) if gen.model is not None else None

    def set_options(self, values: dict[str, Any], timeout: float | None = None) -> list[str]:
        """Change settings through the queue (a checkpoint change loads that model); returns changed keys."""
        known = self.options.items()
        for key, value in values.items():
            if key in known and not self.options.same_type(key, value):
                raise RequestError(key, f"expected {type(known[key]).__name__}, got {value!r}")
            try:  # range and choices: a clip skip of 99 or an unknown sampler would fail every later job
                self.options.check(key, value)
            except OptionError as exc:
                raise RequestError(key, exc.reason) from exc
        self._check_output_dirs(values)
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

    def _check_output_dirs(self, values: dict[str, Any], prefix: str = "") -> None:
        try:
            check_output_dirs(self.options, values, self.paths.data_dir, prefix)
        except OptionError as exc:
            raise RequestError(exc.key, exc.reason) from None

    def _check_checkpoint(self, name: str) -> None:
        titles = self.models.checkpoint_titles()
        infos = self.models.checkpoints()
        names = {info.title for info in infos} | {info.name for info in infos} | set(titles)
        names |= {Path(info.filename).name for info in infos}
        if name not in names:
            raise RequestError("sd_model_checkpoint", f"unknown checkpoint {name!r}; available: {titles}")

    def model_info(self, job: Job | None = None) -> dict[str, Any]:
        """sd_model_name / hash / vae of the model a job ran on (default: the current one), A1111 info keys."""
        used = job.generation.ran_on if job is not None and job.generation is not None else None
        if used is not None:
            info = used.info
        else:
            title = self.models.current_title()
            info = next((c for c in self.models.checkpoints() if c.title == title), None)
        if info is None:
            return {}
        return {
            "sd_model_name": info.name,
            "sd_model_hash": info.shorthash,
            "sd_vae_name": used.vae_name if used is not None else None,
            "sd_vae_hash": used.vae_hash if used is not None else None,
            "is_inpainting": used.is_inpainting if used is not None else False,
            # which pool worker ran the job (only with --workers / --ray-address)
            **({"worker": job.worker} if self.pool is not None and job is not None and job.worker else {}),
        }


def build_services(
    args: argparse.Namespace,
    models: ModelProvider | None = None,
    generate: GenerateFn | None = None,
    devices: Sequence[str] | None = None,
) -> AppServices:
    """Build every app object from the parsed flags (models/generate may be injected by tests).

    One worker stack per entry of `devices` ("cpu", "cuda:1", ...), each with its own model manager and
    queue; default: one stack on the device the flags choose (or on the injected `models`)."""
    paths = DataPaths(Path(args.data_dir).resolve())
    paths.ensure()
    options = Options(default_templates(), paths.config_file)
    _offer_preview_methods(options, paths)  # before load: a saved "TAESD" is then kept
    notices = options.load()
    styles = StyleDatabase(paths.styles_file)
    notices += styles.load_warnings
    hashes = HashCache(paths.cache_file)  # one instance per cache.json: each rewrites the whole file
    stacks = _worker_stacks(args, paths, options, models, devices, hashes)
    if generate is None:
        from sdwebui.engine.generate import generate as engine_generate

        generate = engine_generate
    services = AppServices(
        args=args,
        paths=paths,
        options=options,
        stacks=stacks,
        styles=styles,
        generate=generate,
        preview=_live_previewer(options, paths),
        notices=notices,
        embeddings=EmbeddingLibrary(
            [Path(args.embeddings_dir) if getattr(args, "embeddings_dir", None) else paths.embeddings_dir]
        ),
        loras=LoraLibrary(lora_dirs(args, paths), hashes),
        upscaler_library=library_for(paths.models_dir, upscaler_dirs(args)),
        face_restorer_library=face_restorers.library_for(paths.models_dir, face_restorer_dirs(args)),
        controlnets=controlnet_store(args, paths, options),
    )
    return services


def controlnet_store(args: argparse.Namespace, paths: DataPaths, options: Options) -> ControlNets:
    """The extension's folders: models/ControlNet, then --controlnet-dir; annotators in models/ControlNetAnnotators."""
    extra = getattr(args, "controlnet_dir", None)
    library = ControlNetLibrary([paths.models_dir / "ControlNet", *([Path(extra)] if extra else [])])
    cache = ControlModelCache(int(options.get("control_net_model_cache_size", 2) or 2))
    return ControlNets(
        library, cache, paths.models_dir / "ControlNetAnnotators", paths.models_dir / "clip_vision"
    )


def lora_dirs(args: argparse.Namespace, paths: DataPaths) -> list[Path]:
    """A1111's folders: models/Lora, models/LyCORIS (the old LyCORIS extension's), then --lora-dir."""
    extra = getattr(args, "lora_dir", None)
    return [paths.models_dir / "Lora", paths.models_dir / "LyCORIS", *([Path(extra)] if extra else [])]


def _stack_device(stack: WorkerStack) -> torch.device:
    try:
        return torch.device(stack.device)
    except (RuntimeError, TypeError):  # an injected provider ("injected"): its models' device is unknown
        return torch.device("cpu")


def _worker_stacks(
    args: argparse.Namespace,
    paths: DataPaths,
    options: Options,
    models: ModelProvider | None,
    devices: Sequence[str] | None,
    hashes: HashCache,
) -> list[WorkerStack]:
    """Stacks named stack0, stack1, ... (their queue threads: stack0-worker-0, ...)."""
    if models is not None and devices is not None:
        raise ValueError("pass either models (one stack) or devices, not both")
    if models is not None:
        return [WorkerStack.create("stack0", "injected", models)]
    stacks = []
    for n, device in enumerate(devices or [None]):
        managed = _default_model_manager(args, paths, options, hashes, device)
        stacks.append(WorkerStack.create(f"stack{n}", str(managed.manager.policy.device), managed))
    return stacks


def _live_previewer(
    options: Options, paths: DataPaths
) -> Callable[[LoadedModel, StepInfo], Image.Image | None]:
    """Live previews by the `show_progress_type` setting, read at each preview (sdwebui.engine.previews)."""
    from sdwebui.engine.previews import METHOD_CHEAP, LivePreviewer

    return LivePreviewer(lambda: options.get("show_progress_type", METHOD_CHEAP), paths.models_dir)


def _offer_preview_methods(options: Options, paths: DataPaths) -> None:
    """`show_progress_type` offers TAESD when a TAESD decoder file is installed."""
    from sdwebui.config.options import preview_method_option

    key = "show_progress_type"
    options.add_option(key, preview_method_option(options.data_labels[key], paths.models_dir))


def _default_model_manager(
    args: argparse.Namespace, paths: DataPaths, options: Options, hashes: HashCache, device: str | None
) -> ManagedModels:
    from sdwebui.config.flags import uses_cpu_for_all
    from sdwebui.models.loader import DevicePolicy
    from sdwebui.models.manager import ModelManager

    policy = DevicePolicy.from_flags(
        use_cpu_all=uses_cpu_for_all(args) or (device is not None and device.startswith("cpu")),
        no_half=args.no_half,
        no_half_vae=args.no_half_vae,
        precision_full=args.precision == "full",
        prefer_bf16=bool(getattr(args, "bf16", False)),
    )
    if device is not None:  # e.g. "cuda:1": the flags' precision on that device
        policy = dataclasses.replace(policy, device=torch.device(device))
    if (memory_mode_flag(args) or options.get("memory_mode")) in MOVING_MODES:
        policy = dataclasses.replace(policy, load_device=torch.device("cpu"))  # placement moves them
    limit = args.sd_checkpoints_limit or int(options.get("sd_checkpoints_limit", 1) or 1)
    manager = ModelManager(
        checkpoint_dirs=[paths.checkpoints_dir, *([Path(args.ckpt_dir)] if args.ckpt_dir else [])],
        vae_dirs=[paths.vae_dir, *([Path(args.vae_dir)] if args.vae_dir else [])],
        module_dirs=[paths.text_encoder_dir],
        hash_cache_path=paths.cache_file,
        hashes=hashes,
        policy=policy,
        max_loaded=max(1, limit),
        extra_checkpoints=[Path(args.ckpt)] if args.ckpt else [],
    )
    return ManagedModels(manager, preferred=args.ckpt)
