"""Which modules exist and which can run now: lookup by name or alias, the module list, control types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sdwebui.engine.controlnet.preprocessors.errors import MissingAnnotatorError, UnknownModuleError
from sdwebui.engine.controlnet.preprocessors.registry import (
    IP_ADAPTER,
    MODEL_FREE,
    NEEDS_WEIGHTS,
    Preprocessor,
)
from sdwebui.engine.controlnet.preprocessors.weights import weight_path
from sdwebui.models.clip_vision import FILE_NAMES, find_encoder

# Model-name filters per control type beyond its own lower-cased name (the extension's tag_to_filters).
_MODEL_FILTERS = {
    "instructp2p": ("ip2p",),
    "segmentation": ("seg",),
    "normalmap": ("normal",),
    "t2i-adapter": ("t2i_adapter", "t2iadapter", "t2ia"),
    "ip-adapter": ("ip_adapter", "ipadapter"),
    "openpose": ("openpose", "densepose"),
    "instant-id": ("instant_id", "instantid"),
    "scribble": ("sketch",),
    "tile": ("blur",),
}


@dataclass(frozen=True)
class ModuleFiles:
    """Where model-based modules find their weights: models/ControlNetAnnotators and models/clip_vision."""

    annotator_dir: Path | ModuleFiles | None = None
    clip_vision_dir: Path | None = None


def as_module_files(annotator_dir: Path | ModuleFiles | None) -> ModuleFiles:
    return annotator_dir if isinstance(annotator_dir, ModuleFiles) else ModuleFiles(annotator_dir)


def _missing_weights(p: Preprocessor, files: ModuleFiles) -> tuple[str, str] | None:
    """(folder, file) of the first weight file `p` needs that is not there, else None."""
    for filename in p.weight_files:
        if weight_path(files.annotator_dir, filename) is None:
            return "ControlNetAnnotators", filename
    if p.encoder is not None and find_encoder(files.clip_vision_dir, p.encoder) is None:
        return "clip_vision", FILE_NAMES[p.encoder][0]
    return None


def runnable(
    annotator_dir: Path | ModuleFiles | None = None, extra: Sequence[Preprocessor] = ()
) -> list[Preprocessor]:
    """The modules that can run now, in the extension's order: none first, then by priority and label (desc)."""
    files = as_module_files(annotator_dir)
    usable = [p for p in (*MODEL_FREE, *extra) if p.run is not None or p.model_free]
    usable += [
        p
        for p in (*IP_ADAPTER, *NEEDS_WEIGHTS)
        if (p.run or p.run_with_weights) is not None and _missing_weights(p, files) is None
    ]
    rest = sorted(
        (p for p in usable if p.name != "none"),
        key=lambda p: str(p.priority).zfill(8) + p.alias,
        reverse=True,
    )
    return [p for p in usable if p.name == "none"] + rest


def module_names(
    annotator_dir: Path | ModuleFiles | None = None, extra: Sequence[Preprocessor] = ()
) -> list[str]:
    """Valid `module` values that can run now (internal names, as /controlnet/module_list)."""
    return [p.name for p in runnable(annotator_dir, extra)]


def module_aliases(
    annotator_dir: Path | ModuleFiles | None = None, extra: Sequence[Preprocessor] = ()
) -> dict[str, str]:
    """Internal name -> the extension's UI alias (`alias_names=true`), for the modules that can run now."""
    return {p.name: p.alias for p in runnable(annotator_dir, extra)}


def module_detail(
    alias_names: bool = False,
    annotator_dir: Path | ModuleFiles | None = None,
    extra: Sequence[Preprocessor] = (),
):
    """/controlnet/module_list's `module_detail`: per module model_free and its visible sliders."""
    return {
        (p.alias if alias_names else p.name): {
            "model_free": p.model_free,
            "sliders": [s.api_json() for s in p.sliders()],
        }
        for p in runnable(annotator_dir, extra)
    }


def lookup(
    name: str,
    annotator_dir: Path | ModuleFiles | None = None,
    extra: Sequence[Preprocessor] = (),
    field_name: str = "module",
) -> Preprocessor:
    """The module named `name` (internal name or alias, case-insensitive) that can run, or a RequestError."""
    p = find(name, extra)
    missing = None if p is None else _missing_weights(p, as_module_files(annotator_dir))
    if missing is not None:
        raise MissingAnnotatorError(p.name, missing[1], field_name, folder=missing[0])
    if p is None or (p.run is None and p.run_with_weights is None and not p.model_free):
        raise UnknownModuleError(name, module_names(annotator_dir, extra), field_name)
    return p


def find(name: str, extra: Sequence[Preprocessor] = ()) -> Preprocessor | None:
    """The known module named `name` (internal name or alias, case-insensitive), weights present or not:
    what its sliders are does not depend on whether it can run now (the UI shows them either way)."""
    wanted = (name or "none").strip().lower()
    return next(
        (
            p
            for p in (*MODEL_FREE, *extra, *IP_ADAPTER, *NEEDS_WEIGHTS)
            if wanted in (p.name.lower(), p.alias.lower())
        ),
        None,
    )


def control_types(
    model_names: Sequence[str] = ("None",),
    annotator_dir: Path | ModuleFiles | None = None,
    extra: Sequence[Preprocessor] = (),
) -> dict[str, dict]:
    """GET /controlnet/control_types's `control_types`: per tag (and "All") the modules (aliases) and models.

    `model_names` are the ControlNet model names (with "None" first) as /controlnet/model_list gives them.
    """
    preprocessors = runnable(annotator_dir, extra)
    models = list(model_names) if model_names and model_names[0] == "None" else ["None", *model_names]
    tags = sorted({tag for p in preprocessors for tag in p.tags})
    result = {"All": _control_type([p.alias for p in preprocessors], models, "none", "None")}
    for tag in tags:
        modules = [p.alias for p in preprocessors if tag in p.tags or p.name == "none"]
        filters = (tag.lower(), *_MODEL_FILTERS.get(tag.lower(), ()))
        filtered = [m for m in models if m.lower() == "none" or any(f in m.lower() for f in filters)]
        default_model = "None"
        if len(filtered) > 1:
            default_model = next((m for m in filtered[1:] if "11" in m.split("[")[0]), filtered[1])
        default_option = modules[1] if len(modules) > 1 else modules[0]
        result[tag] = _control_type(modules, filtered, default_option, default_model)
    return result


def _control_type(modules: list[str], models: list[str], default_option: str, default_model: str) -> dict:
    return {
        "module_list": modules,
        "model_list": models,
        "default_option": default_option,
        "default_model": default_model,
    }
