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

# Model-based annotators: runnable only with their weights (and an implementation); otherwise a clear error.
NEEDS_WEIGHTS: tuple[Preprocessor, ...] = (
    # resolution=None: the slider is hidden as in the extension; processor_res (pixel perfect) still applies
    Preprocessor(
        "lineart",
        None,
        ("Lineart",),
        label="lineart_realistic",
        resolution=None,
        weight_files=(lineart.REALISTIC,),
        run_with_weights=lineart.lineart_map,
    ),
    Preprocessor(
        "lineart_coarse",
        None,
        ("Lineart",),
        resolution=None,
        weight_files=(lineart.COARSE,),
        run_with_weights=lineart.lineart_map,
    ),
    Preprocessor(
        "lineart_anime",
        None,
        ("Lineart",),
        resolution=None,
        weight_files=(lineart.ANIME,),
        run_with_weights=lineart.lineart_anime_map,
    ),
    Preprocessor(
        "hed",
        None,
        ("SoftEdge",),
        label="softedge_hed",
        weight_files=(hed.WEIGHTS,),
        run_with_weights=hed.MODULES.soft,
    ),
    Preprocessor(
        "hed_safe",
        None,
        ("SoftEdge",),
        label="softedge_hedsafe",
        weight_files=(hed.WEIGHTS,),
        run_with_weights=hed.MODULES.safe,
    ),
    Preprocessor(
        "scribble_hed",
        None,
        ("Scribble", "SparseCtrl"),
        weight_files=(hed.WEIGHTS,),
        run_with_weights=hed.MODULES.scribble,
    ),
    Preprocessor(
        "pidinet_safe",
        None,
        ("SoftEdge",),
        label="softedge_pidisafe",
        resolution=None,
        weight_files=(pidinet.WEIGHTS,),
        run_with_weights=pidinet.MODULES.safe,
    ),
    Preprocessor(
        "pidinet_scribble",
        None,
        ("Scribble", "SparseCtrl"),
        label="scribble_pidinet",
        resolution=None,
        priority=100,
        weight_files=(pidinet.WEIGHTS,),
        run_with_weights=pidinet.MODULES.scribble,
    ),
    Preprocessor(
        "pidinet_sketch",
        None,
        ("T2I-Adapter",),
        label="t2ia_sketch_pidi",
        resolution=None,
        weight_files=(pidinet.WEIGHTS,),
        run_with_weights=pidinet.MODULES.sketch,
    ),
    Preprocessor(
        "pidinet",
        None,
        ("SoftEdge",),
        label="softedge_pidinet",
        resolution=None,
        priority=100,
        weight_files=(pidinet.WEIGHTS,),
        run_with_weights=pidinet.MODULES.soft,
    ),
    Preprocessor(
        "depth", None, ("Depth",), label="depth_midas", weight_files=("midas/dpt_hybrid-midas-501f0c75.pt",)
    ),
    Preprocessor(
        "depth_anything",
        None,
        ("Depth",),
        resolution=None,
        weight_files=(depth_anything.WEIGHTS,),
        run_with_weights=depth_anything.depth_anything_map,
    ),
    Preprocessor(
        "depth_anything_v2",
        None,
        ("Depth",),
        resolution=None,
        weight_files=(depth_anything.WEIGHTS_V2,),
        run_with_weights=depth_anything.depth_anything_v2_map,
    ),
    Preprocessor("depth_leres", None, ("Depth",), weight_files=("leres/res101.pth",)),
    Preprocessor("depth_zoe", None, ("Depth",), weight_files=("zoedepth/ZoeD_M12_N.pt",)),
    Preprocessor(
        "normal_bae",
        None,
        ("NormalMap",),
        resolution=None,
        priority=100,
        weight_files=(normal_bae.WEIGHTS,),
        run_with_weights=normal_bae.normal_bae_map,
    ),
    Preprocessor(
        "openpose", None, ("OpenPose",), weight_files=(openpose.BODY,), run_with_weights=openpose.openpose_map
    ),
    Preprocessor(
        "openpose_full",
        None,
        ("OpenPose",),
        weight_files=(openpose.BODY, "openpose/hand_pose_model.pth", "openpose/facenet.pth"),
    ),
    Preprocessor(
        "mlsd",
        None,
        ("MLSD",),
        slider_1=Slider("MLSD Value Threshold", 0.01, 2.0, 0.1),
        slider_2=Slider("MLSD Distance Threshold", 0.01, 20.0, 0.1),
        priority=100,
        weight_files=(mlsd.WEIGHTS,),
        run_with_weights=mlsd.mlsd_map,
    ),
    Preprocessor(
        "anime_face_segment",
        None,
        ("Segmentation",),
        label="seg_anime_face",
        weight_files=(anime_face.WEIGHTS,),
        run_with_weights=anime_face.anime_face_map,
    ),
    Preprocessor(
        "segmentation",
        None,
        ("Segmentation",),
        label="seg_ufade20k",
        weight_files=("uniformer/upernet_global_small.pth",),
    ),
)
