"""A1111's `modules.shared` for extensions: `opts`, `cmd_opts`, `state`, `sd_model` and friends.

This facade is the only place with process-wide names, because extensions expect them. They forward to the
app's own objects, bound once at start-up by `bind(...)`: `opts` to the app's `Options`, `cmd_opts` to the
parsed flags (including flags added by extensions' preload.py). Per-job values are never written into them:
a job runs inside `job_scope(JobScope(...))` (a contextvar), and `state` / `sd_model` / `opts` overrides
resolve to that job's `State`, model and override_settings; outside a job, `state` is an idle `State` and
`sd_model` the app's current model. Before `bind`, they hold defaults so that extension modules import.
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sdwebui.config import paths as _paths
from sdwebui.config.options import OptionInfo, Options, default_templates, options_section  # noqa: F401 (re-export)

log = logging.getLogger("webui.extensions")

__all__ = [
    "OptionInfo",
    "OptionHTML",
    "options_section",
    "opts",
    "cmd_opts",
    "state",
    "bind",
    "models_path",
    "script_path",
    "data_path",
]


class OptionHTML(OptionInfo):
    """A settings entry that is only an HTML text (A1111 `shared.OptionHTML`)."""

    def __init__(self, text: str):
        super().__init__(str(text).strip(), label="", do_not_save=True)


class _OptionsProxy:
    """Forwards every attribute to the app's Options, so `from modules.shared import opts` never goes stale."""

    def __init__(self, target: Options):
        object.__setattr__(self, "_target", target)

    def _bind(self, target: Options) -> None:
        object.__setattr__(self, "_target", target)

    def __getattr__(self, key: str) -> Any:
        overrides = _job_overrides.get()
        if overrides and key in overrides:  # a job's override_settings, seen only inside that job
            return overrides[key]
        return getattr(object.__getattribute__(self, "_target"), key)

    def get(self, key: str, default: Any = None) -> Any:
        overrides = _job_overrides.get()
        if overrides and key in overrides:
            return overrides[key]
        return self._target.get(key, default)

    def __setattr__(self, key: str, value: Any) -> None:
        setattr(self._target, key, value)

    def __contains__(self, key: str) -> bool:
        return key in self._target.data or key in self._target.data_labels

    def onchange(self, key: str, func: Callable[[], None], call: bool = True) -> None:
        info = self._target.data_labels.get(key)
        if info is None:
            raise KeyError(f"no option named {key!r}")
        info.onchange = func
        if call:
            func()

    def save(self, filename: str | None = None) -> None:  # A1111 passes the config path; ours knows it
        self._target.save()

    def get_default(self, key: str) -> Any:
        info = self._target.data_labels.get(key)
        return info.default if info else None

    def dumpjson(self) -> str:
        import json

        return json.dumps(self._target.items(), default=str)


# override_settings of the running job / process_images call (read through `opts`, never written to it)
_job_overrides: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "shared_job_overrides", default=None
)


def push_overrides(overrides: dict[str, Any]) -> contextvars.Token:
    return _job_overrides.set(dict(overrides or {}))


def pop_overrides(token: contextvars.Token) -> None:
    _job_overrides.reset(token)


class State:
    """A1111 `shared.state`: progress of one generation; `interrupt()`/`skip()` reach its job's context.

    One per job (`ctx` is its JobContext), plus one idle State for code running outside any job.
    """

    def __init__(self, ctx: Any = None) -> None:
        self._skipped = False
        self._interrupted = False
        self.stopping_generation = False
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.processing_has_refined_job_count = False
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.current_latent = None
        self.current_image = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.textinfo: str | None = None
        self.time_start: float | None = None
        self.server_start = time.time()
        self._ctx: Any = ctx  # JobContext of the job (None: the idle state)

    # interrupted / skipped also read the running job's context: the queue's interrupt reaches scripts
    @property
    def interrupted(self) -> bool:
        return self._interrupted or bool(self._ctx is not None and self._ctx.interrupted)

    @interrupted.setter
    def interrupted(self, value: bool) -> None:
        self._interrupted = bool(value)

    @property
    def skipped(self) -> bool:
        return self._skipped or bool(self._ctx is not None and self._ctx.skipped)

    @skipped.setter
    def skipped(self, value: bool) -> None:
        self._skipped = bool(value)

    def interrupt(self) -> None:
        self.interrupted = True
        if self._ctx is not None:
            self._ctx.interrupt()

    def skip(self) -> None:
        self.skipped = True
        if self._ctx is not None:
            self._ctx.skip()

    def stop_generating(self) -> None:
        self.stopping_generation = True
        self.interrupt()

    def nextjob(self) -> None:
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0

    def begin(self, job: str = "(unknown)") -> None:
        self.sampling_step = 0
        self.job_count = -1
        self.job_no = 0
        self.job_timestamp = time.strftime("%Y%m%d%H%M%S")
        self.current_latent = None
        self.current_image = None
        self.id_live_preview = 0
        self.skipped = self.interrupted = self.stopping_generation = False
        self.textinfo = None
        self.job = job
        self.time_start = time.time()

    def end(self) -> None:
        self.job = ""
        self.job_count = 0

    def update_from_step(self, info: Any) -> None:
        self.job_no = info.job_no
        self.job_count = info.job_count
        self.sampling_step = info.step
        self.sampling_steps = info.steps

    def set_current_image(self) -> None:  # previews come from the job queue, not from here
        pass

    def assign_current_image(self, image: Any) -> None:
        self.current_image = image
        self.id_live_preview += 1

    def dict(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": self.stopping_generation,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }


@dataclass
class JobScope:
    """What the facade knows of the job running in this context (see `job_scope`)."""

    state: State
    model: Any = None  # the job's LoadedModel: `shared.sd_model` inside the job
    # runs a request on the engine for this job: (request, hooks) -> GenerationResult; process_images(p)
    # of a p that a script built itself uses it
    run: Callable[..., Any] | None = None


_job: contextvars.ContextVar[JobScope | None] = contextvars.ContextVar("shared_job", default=None)


@contextmanager
def job_scope(scope: JobScope) -> Iterator[JobScope]:
    """Run the block as `scope`'s job: `state`, `sd_model` resolve to it (in this thread/context only)."""
    token = _job.set(scope)
    try:
        yield scope
    finally:
        _job.reset(token)


def current_job() -> JobScope | None:
    return _job.get()


class _StateProxy:
    """`shared.state`: the running job's State, or the idle one outside a job (never rebound per job)."""

    def _target(self) -> State:
        scope = _job.get()
        return scope.state if scope is not None else _idle_state

    @property
    def __class__(self) -> type:  # isinstance(shared.state, State) holds, as extensions check it
        return State

    def __getattr__(self, key: str) -> Any:
        return getattr(self._target(), key)

    def __setattr__(self, key: str, value: Any) -> None:
        setattr(self._target(), key, value)

    def __repr__(self) -> str:
        return f"<shared.state of {'a job' if _job.get() is not None else 'no job'}: {self._target().dict()}>"


class _TotalTqdm:
    """A1111 `shared.total_tqdm`: extensions call these; progress is reported by the job queue instead."""

    def reset(self) -> None: ...
    def update(self) -> None: ...
    def updateTotal(self, new_total: int) -> None: ...  # noqa: N802 (A1111 name)
    def clear(self) -> None: ...


def _default_cmd_opts() -> argparse.Namespace:
    from sdwebui.config.flags import build_parser

    return build_parser().parse_args([])


opts = _OptionsProxy(Options(default_templates()))
cmd_opts = _default_cmd_opts()
_idle_state = State()
state: State = _StateProxy()  # type: ignore[assignment] (a State in every respect extensions use)
total_tqdm = _TotalTqdm()
demo = None  # the Gradio Blocks, once built
device = "cpu"
weight_load_location = None
# A1111's UpscalerData list; filled by sdwebui.facade.upscaler.refresh_sd_upscalers at start-up and refresh
sd_upscalers: list[Any] = []
hypernetworks: dict[str, Any] = {}
loaded_hypernetworks: list[Any] = []
face_restorers: list[Any] = []
prompt_styles: Any = None
latent_upscale_modes: dict[str, Any] = {}
batch_cond_uncond = True  # A1111 name: the engine always runs cond and uncond as one batch
sd_model_file = ""
models_path = _paths.models_path
script_path = _paths.script_path
data_path = _paths.data_path

# the app's current model outside a job (the job's own model comes from its JobScope)
_model_provider: Callable[[], Any] | None = None
_services: Any = None


def bind(
    options: Options | None = None,
    args: argparse.Namespace | None = None,
    model_provider: Callable[[], Any] | None = None,
    services: Any = None,
) -> None:
    """Point the facade at the app's objects (called once at start-up, before extension scripts load)."""
    global _model_provider, _services, device, prompt_styles, models_path, data_path
    if options is not None:
        opts._bind(options)
    if args is not None:
        cmd_opts.__dict__.clear()
        cmd_opts.__dict__.update(vars(args))
    if model_provider is not None:
        _model_provider = model_provider
    if services is not None:
        _services = services
        prompt_styles = getattr(services, "styles", None)
    models_path, data_path = _paths.models_path, _paths.data_path
    if args is not None and "all" in (getattr(args, "use_cpu", None) or []):
        device = "cpu"
    for name, value in a1111_path_flags().items():  # A1111's folder flags extensions read, where unset
        if getattr(cmd_opts, name, None) is None:
            setattr(cmd_opts, name, value)


# A1111's folder flags (`cmd_opts.<name>`) and the folder under the data dir each names by default
_PATH_FLAGS = {
    "embeddings_dir": "embeddings", "hypernetwork_dir": "models/hypernetworks", "lora_dir": "models/Lora",
    "lyco_dir_backcompat": "models/LyCORIS", "codeformer_models_path": "models/Codeformer",
    "gfpgan_models_path": "models/GFPGAN", "esrgan_models_path": "models/ESRGAN",
    "realesrgan_models_path": "models/RealESRGAN", "swinir_models_path": "models/SwinIR",
    "ldsr_models_path": "models/LDSR", "dat_models_path": "models/DAT", "scunet_models_path": "models/ScuNET",
    "clip_models_path": "models/CLIP", "textual_inversion_templates_dir": "textual_inversion_templates",
    "styles_file": "styles.csv", "ui_config_file": "ui-config.json", "ui_settings_file": "config.json",
}  # fmt: skip


def a1111_path_flags() -> dict[str, str]:
    return {name: os.path.join(_paths.data_path, relative) for name, relative in _PATH_FLAGS.items()}


def walk_files(path: str, allowed_extensions: list[str] | None = None):
    """Files under `path`, sorted, following links; hidden folders only with `list_hidden_files` (A1111)."""
    allowed = {e.lower() for e in allowed_extensions} if allowed_extensions else None
    hidden_ok = bool(opts.get("list_hidden_files", True))
    for root, dirs, files in os.walk(path, followlinks=True):
        dirs.sort()
        if not hidden_ok and any(
            part.startswith(".") for part in os.path.relpath(root, path).split(os.sep)[1:]
        ):
            continue
        for filename in sorted(files):
            if allowed is None or os.path.splitext(filename)[1].lower() in allowed:
                yield os.path.join(root, filename)


class CheckpointInfoView:
    """A1111's `sd_model.sd_checkpoint_info` names over our CheckpointInfo."""

    def __init__(self, info: Any):
        self._info = info
        self.title, self.model_name, self.name = info.title, info.name, info.name
        self.filename, self.sha256, self.shorthash = info.filename, info.sha256, info.shorthash
        self.hash = info.shorthash
        self.name_for_extra = info.name

    def __getattr__(self, key: str) -> Any:
        return getattr(self._info, key)


class SdModelView:
    """`shared.sd_model` / `p.sd_model`: our LoadedModel (diffusers modules) plus A1111's flag names.

    Not A1111's LDM object: extensions that patch `model.diffusion_model` internals will not work.
    """

    def __init__(self, model: Any):
        object.__setattr__(self, "_model", model)

    def __getattr__(self, key: str) -> Any:
        return getattr(object.__getattribute__(self, "_model"), key)

    @property
    def loaded_model(self) -> Any:
        return self._model

    @property
    def is_sd1(self) -> bool:
        return str(getattr(self._model.family, "value", "")).startswith("sd1")

    @property
    def is_sd2(self) -> bool:
        return str(getattr(self._model.family, "value", "")).startswith("sd2")

    @property
    def is_sdxl(self) -> bool:
        return bool(self._model.is_sdxl)

    @property
    def sd_checkpoint_info(self) -> CheckpointInfoView:
        return CheckpointInfoView(self._model.info)

    @property
    def sd_model_hash(self) -> str | None:
        return self._model.info.shorthash

    @property
    def sd_model_checkpoint(self) -> str:
        return self._model.info.filename


def reset() -> None:
    """Back to the unbound defaults (tests, or an app shutting down)."""
    global _model_provider, _services, prompt_styles, demo, _idle_state
    opts._bind(Options(default_templates()))
    cmd_opts.__dict__.clear()
    cmd_opts.__dict__.update(vars(_default_cmd_opts()))
    _model_provider = _services = prompt_styles = demo = None
    _idle_state = State()


def current_model() -> Any:
    """The model of the running job, else the app's current one, wrapped as `SdModelView` (None if none)."""
    scope = _job.get()
    model = scope.model if scope is not None else None
    if model is None and _model_provider is not None:
        try:
            model = _model_provider()
        except Exception:
            log.exception("shared.sd_model: the model provider failed")
    if model is None or isinstance(model, SdModelView):
        return model
    return SdModelView(model)


def __getattr__(name: str) -> Any:  # module attributes computed on access
    if name == "sd_model":
        return current_model()
    if name in ("config_filename", "ui_settings_file"):  # A1111: the settings file (config.json)
        return (
            cmd_opts.ui_settings_file if getattr(cmd_opts, "ui_settings_file", None) else _path("config.json")
        )
    if name == "ui_config_file":
        return (
            cmd_opts.ui_config_file if getattr(cmd_opts, "ui_config_file", None) else _path("ui-config.json")
        )
    if name == "hide_dirs":  # A1111: {"visible": ...} for folder fields of the UI
        return {"visible": not getattr(cmd_opts, "hide_ui_dir_config", False)}
    raise AttributeError(f"module 'sdwebui.facade.shared' has no attribute {name!r}")


def _path(relative: str) -> str:
    return os.path.join(_paths.data_path, relative)


def listfiles(dirname: str) -> list[str]:
    return (
        sorted(os.path.join(dirname, x) for x in os.listdir(dirname) if not x.startswith("."))
        if os.path.isdir(dirname)
        else []
    )


def reload_hypernetworks() -> None:  # hypernetworks are not supported; kept for extensions that call it
    pass


def list_checkpoint_titles() -> list[str]:
    """Titles of the checkpoints the app knows (ours; A1111 extensions read sd_models.checkpoints_list)."""
    models = getattr(_services, "models", None)
    return list(models.checkpoint_titles()) if models is not None else []
