"""Running one module on one image (the unit's map, /controlnet/detect, the UI's "Run preprocessor")."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from sdwebui.engine.controlnet.preprocessors.catalog import ModuleFiles, as_module_files, lookup
from sdwebui.engine.controlnet.preprocessors.errors import PreprocessorInputError
from sdwebui.engine.controlnet.preprocessors.imaging import to_image, to_rgb_array
from sdwebui.engine.controlnet.preprocessors.inpaint import with_mask
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams
from sdwebui.engine.controlnet.preprocessors.registry import Preprocessor
from sdwebui.engine.controlnet.preprocessors.weights import weight_path


def resolve_params(
    name: str,
    processor_res: float = -1,
    threshold_a: float = -1,
    threshold_b: float = -1,
    annotator_dir: Path | ModuleFiles | None = None,
) -> PreprocessParams:
    """A unit's processor_res / threshold_a / threshold_b with -1 (the API's "default") replaced by the
    module's slider defaults, as the extension does."""
    defaults = lookup(name, annotator_dir).defaults()
    return PreprocessParams(
        resolution=int(processor_res)
        if processor_res is not None and processor_res > -1
        else defaults.resolution,
        threshold_a=float(threshold_a)
        if threshold_a is not None and threshold_a > -1
        else defaults.threshold_a,
        threshold_b=float(threshold_b)
        if threshold_b is not None and threshold_b > -1
        else defaults.threshold_b,
    )


def _mask_array(image: Image.Image, mask: Image.Image | None) -> np.ndarray | None:
    """The mask as uint8 [H, W]: the given mask (its luminance or alpha), else the image's own alpha."""
    if mask is not None:
        if mask.mode in ("RGBA", "LA"):
            return np.asarray(mask.convert("RGBA"))[:, :, 3].copy()
        return np.asarray(mask.convert("L")).copy()
    if image.mode == "RGBA":
        alpha = np.asarray(image)[:, :, 3]
        return alpha.copy() if alpha.min() < 255 else None
    return None


def run_preprocessor(
    name: str,
    image: Image.Image,
    params: PreprocessParams,
    mask: Image.Image | None = None,
    annotator_dir: Path | ModuleFiles | None = None,
    extra: Sequence[Preprocessor] = (),
    field_name: str = "module",
) -> Image.Image:
    """The control map of `image` for the module `name` (internal name or alias).

    RGB for every module except inpaint / inpaint_only: RGBA with the mask as alpha (see inpaint.py).
    Raises RequestError subclasses: unknown module (listing valid ones), missing annotator weights
    (naming the file), a masked module without a mask.
    """
    preprocessor = lookup(name, annotator_dir, extra, field_name)
    if params.resolution < 1:
        raise PreprocessorInputError("processor_res", f"must be positive, got {params.resolution}")
    if preprocessor.accepts_mask:
        mask_array = _mask_array(image, mask)
        if mask_array is None and preprocessor.requires_mask:
            raise PreprocessorInputError(
                "mask", f"module {preprocessor.name!r} needs a mask (or an image with alpha)"
            )
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
        return with_mask(rgb, mask_array) if mask_array is not None else to_image(rgb)
    if preprocessor.run_with_weights is not None:  # lookup() checked that its weight file is there
        weights = weight_path(as_module_files(annotator_dir).annotator_dir, preprocessor.weight_files[0])
        assert weights is not None
        return to_image(preprocessor.run_with_weights(to_rgb_array(image), params, weights))
    assert preprocessor.run is not None  # lookup() only returns runnable modules
    return to_image(preprocessor.run(to_rgb_array(image), params))
