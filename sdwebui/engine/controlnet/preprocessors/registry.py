"""The preprocessor table: the extension's names, alias labels, control-type tags, sliders and sort order.

`name` is the extension's internal key (what units send as `module`), `label` its UI alias
(`/controlnet/module_list?alias_names=true`); either is accepted as a module name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdwebui.engine.controlnet.preprocessors import (
    anime_face,
    depth_anything,
    hed,
    lineart,
    midas,
    mlsd,
    model_free,
    normal_bae,
    openpose,
    pidinet,
)
from sdwebui.engine.controlnet.preprocessors.params import RESOLUTION, PreprocessParams, Slider

MapFunction = Callable[[np.ndarray, PreprocessParams], np.ndarray]
WeightsMapFunction = Callable[[np.ndarray, PreprocessParams, Path], np.ndarray]  # + its first weight file


@dataclass(frozen=True)
class Preprocessor:
    name: str
    run: MapFunction | None  # None: the module is applied by the engine (reference) or needs weights we lack
    tags: tuple[str, ...]
    label: str = ""
    resolution: Slider | None = RESOLUTION  # None: hidden (model-free ones keep the image's size)
    slider_1: Slider | None = None
    slider_2: Slider | None = None
    priority: int = 0
    model_free: bool = False  # the extension's do_not_need_model: no ControlNet model (reference_only)
    accepts_mask: bool = False
    requires_mask: bool = False
    weight_files: tuple[str, ...] = field(default_factory=tuple)  # under models/ControlNetAnnotators/ (all)
    encoder: str | None = None  # a CLIP vision encoder it needs from models/clip_vision ("clip_h" / "clip_g")
    returns_image: bool = True  # False: the engine uses what the module computes, the map shown is the input
    run_with_weights: WeightsMapFunction | None = None  # a model-based annotator we implement (hed.py)

    @property
    def alias(self) -> str:
        return self.label or self.name

    def sliders(self) -> list[Slider]:
        return [s for s in (self.resolution, self.slider_1, self.slider_2) if s is not None]

    def defaults(self) -> PreprocessParams:
        """processor_res / threshold_a / threshold_b when a unit sends -1 (the extension's slider values)."""
        return PreprocessParams(
            resolution=int(self.resolution.value if self.resolution else RESOLUTION.value),
            threshold_a=float(self.slider_1.value if self.slider_1 else 0.0),
            threshold_b=float(self.slider_2.value if self.slider_2 else 0.0),
        )


_VARIATION = Slider("Variation", 3.0, 32.0, 8.0, 1.0)

MODEL_FREE: tuple[Preprocessor, ...] = (
    Preprocessor("none", model_free.identity, ("InstructP2P",), priority=10),
    Preprocessor(
        "invert",
        model_free.invert,
        ("Canny", "Lineart", "Scribble", "MLSD"),
        label="invert (from white bg & black line)",
        resolution=None,
        priority=20,
    ),
    Preprocessor(
        "canny",
        model_free.canny,
        ("Canny",),
        slider_1=Slider("Low Threshold", 1, 255, 100, 1),
        slider_2=Slider("High Threshold", 1, 255, 200, 1),
        priority=100,
    ),
    Preprocessor(
        "threshold", model_free.threshold, (), slider_1=Slider("Binarization Threshold", 0, 255, 127, 1)
    ),
    Preprocessor(
        "blur_gaussian", model_free.blur_gaussian, ("Tile",), slider_1=Slider("Sigma", 0.01, 64.0, 9.0)
    ),
    Preprocessor(
        "tile_resample",
        model_free.tile_resample,
        ("Tile",),
        slider_1=Slider("Down Sampling Rate", 1.0, 8.0, 1.0),
        priority=100,
    ),
    # the colour fix itself is the engine's (colorfix.py): the map is the image
    Preprocessor("tile_colorfix", model_free.identity, ("Tile",), slider_1=_VARIATION),
    Preprocessor(
        "tile_colorfix+sharp",
        model_free.identity,
        ("Tile",),
        slider_1=_VARIATION,
        slider_2=Slider("Sharpness", 0.0, 2.0, 1.0),
    ),
    Preprocessor(
        "scribble_xdog",
        model_free.scribble_xdog,
        ("Scribble", "SparseCtrl"),
        slider_1=Slider("XDoG Threshold", 1, 64, 32, 1),
    ),
    Preprocessor("shuffle", model_free.shuffle, ("Shuffle",), resolution=None),
    Preprocessor("color", model_free.color_grid, ("T2I-Adapter",), label="t2ia_color_grid"),
    # the mask travels as the map's alpha channel (inpaint.py); the engine applies it
    Preprocessor(
        "inpaint_only",
        model_free.identity,
        ("Inpaint",),
        resolution=None,
        priority=100,
        accepts_mask=True,
        requires_mask=True,
    ),
    Preprocessor(
        "inpaint",
        model_free.identity,
        ("Inpaint",),
        label="inpaint_global_harmonious",
        resolution=None,
        accepts_mask=True,
        requires_mask=True,
    ),
    Preprocessor(
        "reference_only",
        model_free.identity,
        ("Reference",),
        resolution=None,
        slider_1=Slider("Style Fidelity (only for Balanced mode)", 0.0, 1.0, 0.5),
        priority=100,
        model_free=True,
    ),
)

# IP-Adapter: the map is the image; the engine encodes it with the unit's CLIP vision encoder (ip_adapter.py)
IP_ADAPTER: tuple[Preprocessor, ...] = tuple(
    Preprocessor(
        name,
        model_free.identity,
        ("IP-Adapter",),
        label=label,
        resolution=None,
        priority=priority,
        encoder=encoder,
        returns_image=False,
    )
    for name, label, encoder, priority in (
        ("ip-adapter_clip_sd15", "ip-adapter_clip_h", "clip_h", 100),
        ("ip-adapter_clip_sdxl", "ip-adapter_clip_g", "clip_g", 0),
        ("ip-adapter_clip_sdxl_plus_vith", "ip-adapter_clip_sdxl_plus_vith", "clip_h", 0),
    )
)


def _annotator(
    name: str, tags: tuple[str, ...], weights: str, run: WeightsMapFunction | None, label: str = "", **fields
) -> Preprocessor:
    """A model-based module reading `weights` (under models/ControlNetAnnotators); `run` None: not
    implemented here (never listed; asking for it names its file)."""
    return Preprocessor(
        name, None, tags, label=label, weight_files=(weights,), run_with_weights=run, **fields
    )


_HIDDEN = {"resolution": None}  # the extension hides the slider; processor_res (pixel perfect) still applies
_SCRIBBLE = ("Scribble", "SparseCtrl")

# Model-based annotators: runnable only with their weights (and an implementation); otherwise a clear error.
NEEDS_WEIGHTS: tuple[Preprocessor, ...] = (
    _annotator(
        "lineart", ("Lineart",), lineart.REALISTIC, lineart.lineart_map, "lineart_realistic", **_HIDDEN
    ),
    _annotator("lineart_coarse", ("Lineart",), lineart.COARSE, lineart.lineart_map, **_HIDDEN),
    _annotator("lineart_anime", ("Lineart",), lineart.ANIME, lineart.lineart_anime_map, **_HIDDEN),
    _annotator("hed", ("SoftEdge",), hed.WEIGHTS, hed.MODULES.soft, "softedge_hed"),
    _annotator("hed_safe", ("SoftEdge",), hed.WEIGHTS, hed.MODULES.safe, "softedge_hedsafe"),
    _annotator("scribble_hed", _SCRIBBLE, hed.WEIGHTS, hed.MODULES.scribble),
    _annotator(
        "pidinet",
        ("SoftEdge",),
        pidinet.WEIGHTS,
        pidinet.MODULES.soft,
        "softedge_pidinet",
        priority=100,
        **_HIDDEN,
    ),
    _annotator(
        "pidinet_safe", ("SoftEdge",), pidinet.WEIGHTS, pidinet.MODULES.safe, "softedge_pidisafe", **_HIDDEN
    ),
    _annotator(
        "pidinet_scribble",
        _SCRIBBLE,
        pidinet.WEIGHTS,
        pidinet.MODULES.scribble,
        "scribble_pidinet",
        priority=100,
        **_HIDDEN,
    ),
    _annotator(
        "pidinet_sketch",
        ("T2I-Adapter",),
        pidinet.WEIGHTS,
        pidinet.MODULES.sketch,
        "t2ia_sketch_pidi",
        **_HIDDEN,
    ),
    _annotator("depth", ("Depth",), midas.WEIGHTS, midas.depth_midas_map, "depth_midas", priority=100),
    _annotator(
        "depth_anything", ("Depth",), depth_anything.WEIGHTS, depth_anything.depth_anything_map, **_HIDDEN
    ),
    _annotator(
        "depth_anything_v2",
        ("Depth",),
        depth_anything.WEIGHTS_V2,
        depth_anything.depth_anything_v2_map,
        **_HIDDEN,
    ),
    _annotator("depth_leres", ("Depth",), "leres/res101.pth", None),
    _annotator("depth_zoe", ("Depth",), "zoedepth/ZoeD_M12_N.pt", None),
    _annotator(
        "normal_bae", ("NormalMap",), normal_bae.WEIGHTS, normal_bae.normal_bae_map, priority=100, **_HIDDEN
    ),
    _annotator(
        "normal_map",
        ("NormalMap",),
        midas.WEIGHTS,
        midas.normal_midas_map,
        "normal_midas",
        slider_1=Slider("Normal Background Threshold", 0.0, 1.0, 0.4),
    ),
    _annotator("openpose", ("OpenPose",), openpose.BODY, openpose.openpose_map),
    Preprocessor(
        "openpose_full",
        None,
        ("OpenPose",),
        weight_files=(openpose.BODY, "openpose/hand_pose_model.pth", "openpose/facenet.pth"),
    ),
    _annotator(
        "mlsd",
        ("MLSD",),
        mlsd.WEIGHTS,
        mlsd.mlsd_map,
        slider_1=Slider("MLSD Value Threshold", 0.01, 2.0, 0.1),
        slider_2=Slider("MLSD Distance Threshold", 0.01, 20.0, 0.1),
        priority=100,
    ),
    _annotator(
        "anime_face_segment",
        ("Segmentation",),
        anime_face.WEIGHTS,
        anime_face.anime_face_map,
        "seg_anime_face",
    ),
    _annotator("segmentation", ("Segmentation",), "uniformer/upernet_global_small.pth", None, "seg_ufade20k"),
)
