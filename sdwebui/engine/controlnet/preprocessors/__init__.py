"""ControlNet preprocessors (sd-webui-controlnet's modules): the interface the engine, API and UI use.

    run_preprocessor(name, image, params, mask=None, annotator_dir=None) -> PIL image
    resolve_params(name, processor_res, threshold_a, threshold_b) -> PreprocessParams (-1 = default)
    module_names() / module_aliases() / module_detail() / control_types(model_names)

Errors are RequestError subclasses (HTTP 422 naming the field).
"""

from sdwebui.engine.controlnet.preprocessors.catalog import (
    ModuleFiles,
    control_types,
    find,
    lookup,
    module_aliases,
    module_detail,
    module_names,
)
from sdwebui.engine.controlnet.preprocessors.errors import (
    BrokenAnnotatorError,
    MissingAnnotatorError,
    PreprocessorInputError,
    UnknownModuleError,
)
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams, Slider
from sdwebui.engine.controlnet.preprocessors.registry import Preprocessor
from sdwebui.engine.controlnet.preprocessors.run import resolve_params, run_preprocessor

__all__ = [
    "BrokenAnnotatorError",
    "MissingAnnotatorError",
    "ModuleFiles",
    "PreprocessParams",
    "Preprocessor",
    "PreprocessorInputError",
    "Slider",
    "UnknownModuleError",
    "control_types",
    "find",
    "lookup",
    "module_aliases",
    "module_detail",
    "module_names",
    "resolve_params",
    "run_preprocessor",
]
