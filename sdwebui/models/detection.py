"""Which model family a single-file state dict is, from its keys and shapes (plus sidecars and metadata).

SD 2.x eps (512-base) and v-prediction (768-v) files have identical keys and shapes, so the rule is, in order:
1. a sidecar: ``<name>.json`` with ``"family"`` or a scheduler ``prediction_type``; ``<name>.yaml`` (A1111 /
   LDM original config) with ``parameterization: "v"`` (absent = eps);
2. file metadata written by trainers: ``modelspec.prediction_type`` or ``ss_v_parameterization``;
3. the file name: "768-v"/"v-pred"/"vpred" -> v; "512-base"/"base-512"/"eps" -> eps;
4. otherwise v-prediction, because SD 2.x checkpoints in use are overwhelmingly the 768-v ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.model import ModelFamily

UNET_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
SD1_TEXT = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
SD2_TEXT = "cond_stage_model.model.ln_final.weight"
SDXL_CLIP_L = "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"
SDXL_BIGG = "conditioner.embedders.1.model.ln_final.weight"
REFINER_BIGG = "conditioner.embedders.0.model.ln_final.weight"

_V_NAME = re.compile(r"(768-?v\b|v-?pred|vpred|[-_]v[-_.]|[-_]v$)", re.IGNORECASE)
_EPS_NAME = re.compile(r"(512-?base|base-?512|[-_]eps\b|epsilon)", re.IGNORECASE)


@dataclass(frozen=True)
class Detection:
    family: ModelFamily
    reason: str  # how the family was decided, for logs and error messages


def _in_channels(shapes: Mapping[str, Any], path: Path) -> int:
    if UNET_CONV_IN not in shapes:
        sample = ", ".join(sorted(shapes)[:3]) or "no tensors"
        raise CheckpointLoadError(
            f"{path}: not a Stable Diffusion checkpoint: no UNet weights ('{UNET_CONV_IN}' missing; "
            f"found e.g. {sample})"
        )
    channels = int(tuple(shapes[UNET_CONV_IN])[1])
    if channels not in (4, 9):
        raise CheckpointLoadError(
            f"{path}: UNet takes {channels} input channels; supported are 4 and 9 (inpainting)"
        )
    return channels


def sd2_prediction_type(
    path: Path, metadata: Mapping[str, str], sidecar: Mapping[str, Any]
) -> tuple[str, str]:
    """('v_prediction' | 'epsilon', reason) for an SD 2.x file, by the rule in this module's docstring."""
    if "parameterization" in sidecar:
        v = str(sidecar["parameterization"]).lower() == "v"
        return ("v_prediction" if v else "epsilon"), "sidecar parameterization"
    prediction = (sidecar.get("scheduler") or {}).get("prediction_type")
    if prediction in ("v_prediction", "epsilon"):
        return prediction, "sidecar scheduler.prediction_type"
    spec = str(metadata.get("modelspec.prediction_type", "")).lower()
    if spec:
        return ("v_prediction" if spec.startswith("v") else "epsilon"), "metadata modelspec.prediction_type"
    if "ss_v_parameterization" in metadata:
        v = str(metadata["ss_v_parameterization"]).lower() == "true"
        return ("v_prediction" if v else "epsilon"), "metadata ss_v_parameterization"
    if _EPS_NAME.search(path.stem):
        return "epsilon", "file name"
    if _V_NAME.search(path.stem):
        return "v_prediction", "file name"
    return "v_prediction", "default for SD 2.x (no sidecar, metadata or name hint)"


def detect_family(
    shapes: Mapping[str, Any],
    path: Path,
    metadata: Mapping[str, str] | None = None,
    sidecar: Mapping[str, Any] | None = None,
) -> Detection:
    """Family of a single-file checkpoint given its key -> shape mapping."""
    metadata = metadata or {}
    sidecar = sidecar or {}
    if "family" in sidecar:
        try:
            return Detection(ModelFamily(sidecar["family"]), "sidecar family")
        except ValueError:
            known = ", ".join(f.value for f in ModelFamily)
            raise CheckpointLoadError(
                f"{path}: sidecar family {sidecar['family']!r} unknown; one of {known}"
            ) from None
    inpaint = _in_channels(shapes, path) == 9
    if SDXL_BIGG in shapes and SDXL_CLIP_L in shapes:
        return Detection(
            ModelFamily.SDXL_INPAINT if inpaint else ModelFamily.SDXL, "SGM keys: CLIP-L + OpenCLIP bigG"
        )
    if REFINER_BIGG in shapes:
        return Detection(ModelFamily.SDXL_REFINER, "SGM keys: OpenCLIP bigG only (refiner)")
    if SD2_TEXT in shapes:
        if inpaint:
            return Detection(ModelFamily.SD2_INPAINT, "OpenCLIP text encoder, 9-channel UNet")
        prediction, reason = sd2_prediction_type(path, metadata, sidecar)
        family = ModelFamily.SD2_V if prediction == "v_prediction" else ModelFamily.SD2
        return Detection(family, f"OpenCLIP text encoder; {prediction} by {reason}")
    if SD1_TEXT in shapes:
        return Detection(
            ModelFamily.SD1_INPAINT if inpaint else ModelFamily.SD1, "CLIP-L text encoder (LDM keys)"
        )
    raise CheckpointLoadError(
        f"{path}: UNet found but no known text encoder; expected one of '{SD1_TEXT}' (SD 1.x), "
        f"'{SD2_TEXT}' (SD 2.x), '{SDXL_BIGG}' (SDXL)"
    )
