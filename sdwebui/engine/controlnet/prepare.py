"""A job's ControlNet units -> the U-Net add-on: models found and checked against the checkpoint's family,
control images preprocessed into maps (pixel perfect resolution from the first pass's size), infotext written.

In img2img a unit without an image uses the job's first init image (and, for a masked module such as
`inpaint_only`, the job's inpainting mask), as the extension does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from sdwebui.engine.controlnet import preprocessors
from sdwebui.engine.controlnet.addon import UNION_TYPES, ActiveUnit, ControlNetAddon
from sdwebui.engine.controlnet.hint import fit_map, pixel_perfect_resolution
from sdwebui.engine.controlnet.ip_adapter import IPAdapterFiles, ip_adapter_addon
from sdwebui.engine.controlnet.reference import reference_addon
from sdwebui.engine.controlnet.units import ARGS_FIELD, ControlImage, ControlNetUnit, HiResOption
from sdwebui.engine.controlnet.x0_fix import COLORFIX, Encode, X0Fix, fix_kind
from sdwebui.engine.errors import RequestError
from sdwebui.models.controlnet import ControlModelError, ControlNets
from sdwebui.models.controlnet.layouts import CONTROLNET_UNION, IP_ADAPTER, SD1, SD2, SDXL
from sdwebui.models.model import LoadedModel, ModelFamily

_FAMILY_BASE = {
    ModelFamily.SD1: SD1,
    ModelFamily.SD1_INPAINT: SD1,
    ModelFamily.SD2: SD2,
    ModelFamily.SD2_V: SD2,
    ModelFamily.SD2_INPAINT: SD2,
    ModelFamily.SDXL: SDXL,
    ModelFamily.SDXL_INPAINT: SDXL,
}
_BASE_LABEL = {SD1: "SD 1.x", SD2: "SD 2.x", SDXL: "SDXL"}


_NO_MODEL = ("None", "none", "")


def enabled_units(units: Sequence[ControlNetUnit]) -> list[tuple[int, ControlNetUnit]]:
    """(index in args, unit) of the units that take part: enabled, with a model or a reference_* module."""
    return [
        (i, u)
        for i, u in enumerate(units)
        if u.enabled and (u.model not in _NO_MODEL or u.module.lower().startswith("reference"))
    ]


def control_family(model: LoadedModel) -> str:
    """The base a unit's model is made for (an inpainting or v-prediction variant counts as its base)."""
    return _FAMILY_BASE.get(model.family, model.family.value)


def same_control_family(a: LoadedModel, b: LoadedModel) -> bool:
    return control_family(a) == control_family(b)


def check_pass_model(request: Any, job_model: LoadedModel, pass_model: LoadedModel, field_name: str) -> None:
    """A later pass on another checkpoint (hires fix's hr_checkpoint_name): the job's units act there too,
    as sd-webui-controlnet's do in the hires pass, so it must be of the job's family unless every unit is
    "Low res only". RequestError naming `field_name` otherwise (the units' models fit no other U-Net)."""
    if same_control_family(job_model, pass_model):
        return
    hires = getattr(request, "hires", None) is not None
    acting = [
        index
        for index, unit in enabled_units(getattr(request, "controlnet_units", ()))
        if not (hires and unit.hr_option == HiResOption.LOW_RES_ONLY)
    ]
    if acting:
        job_label, pass_label = (
            _BASE_LABEL.get(control_family(m), control_family(m)) for m in (job_model, pass_model)
        )
        raise RequestError(
            field_name,
            f"{pass_model.info.name} is {pass_label} but the job's ControlNet unit {ARGS_FIELD}[{acting[0]}] "
            f"is for {job_label}: choose a {job_label} checkpoint, or set the units' hires option to "
            f"{HiResOption.LOW_RES_ONLY.value!r}",
        )


def module_files(controlnets: ControlNets | None) -> preprocessors.ModuleFiles | None:
    """Where the model-based modules find their weights (annotators, IP-Adapter's image encoders)."""
    if controlnets is None:
        return None
    return preprocessors.ModuleFiles(controlnets.annotator_dir, controlnets.clip_vision_dir)


def check_units(units: Sequence[ControlNetUnit], controlnets: ControlNets | None, annotator_dir=None) -> None:
    """Before queueing: every enabled unit's model and module exist (RequestError naming `args[i].model`)."""
    for index, unit in enumerate(units):
        if not unit.enabled:
            continue
        files = annotator_dir or module_files(controlnets)
        preprocessors.lookup(unit.module, files, field_name=f"{ARGS_FIELD}[{index}].module")
        if unit.model in ("None", "none", ""):
            continue
        if controlnets is None:
            raise RequestError(f"{ARGS_FIELD}[{index}].model", "no ControlNet models are configured")
        try:
            controlnets.find(unit.model, f"{ARGS_FIELD}[{index}].model")
        except ControlModelError as exc:  # a models-layer error: the API's 422 names the unit's field
            raise RequestError(exc.field, str(exc)) from None


@dataclass
class JobControl:
    """What a job's units become: the U-Net add-ons, their infotext entries, the detected maps to show."""

    addons: list[Any] = field(default_factory=list)
    infotext: dict[str, str] = field(default_factory=dict)
    maps: list[Image.Image] = field(default_factory=list)
    fixes: list[X0Fix] = field(default_factory=list)  # inpaint_only's final blend reads them

    def final_image(self, image: Image.Image, index: int) -> Image.Image:
        """Image `index` of the job after the units' final blends (inpaint_only), for postprocess_image."""
        for fix in self.fixes:
            image = fix.final_image(image, index)
        return image


def build_addons(
    model: LoadedModel,
    units: Sequence[ControlNetUnit],
    controlnets: ControlNets | None,
    size: tuple[int, int],
    init: tuple[Image.Image | None, Image.Image | None] = (None, None),
    hires: bool = False,
    seed: int = 0,
    encode: Encode | None = None,
) -> JobControl:
    """ControlNet / T2I-Adapter units share one add-on; IP-Adapter and reference units have their own.
    `encode` (the checkpoint's VAE encoder) serves tile_colorfix and inpaint_only units."""
    chosen = enabled_units(units)
    job = JobControl()
    if not chosen:
        return job
    if controlnets is None:
        raise RequestError(f"{ARGS_FIELD}[{chosen[0][0]}].model", "no ControlNet models are configured")
    active = []
    for position, (index, unit) in enumerate(chosen):
        name = f"{ARGS_FIELD}[{index}]"
        key = f"ControlNet {position}"
        if unit.model in _NO_MODEL:  # reference_*: attention injection, no model
            reference = _fitted_images(unit, name, size, init)[0]
            job.addons.append(reference_addon(model, unit, reference, seed))
            job.infotext[key] = unit.serialize()
            continue
        info = _find(controlnets, unit.model, f"{name}.model")
        if info.layout is not None and info.layout.kind == IP_ADAPTER:
            files = IPAdapterFiles(
                controlnets.clip_vision_dir, controlnets.ip_adapters, controlnets.clip_vision
            )
            images = _fitted_images(unit, name, size, init)
            job.addons.append(ip_adapter_addon(model, unit, info.path, images, files, name))
            job.infotext[key] = dataclasses.replace(unit, model=info.title).serialize()
            continue
        control, maps, params, union = _control_unit(model, unit, name, size, init, controlnets)
        fix = _x0_fix(unit, maps, params, encode, controlnets.inpaint_blur_sigma)
        active.append(ActiveUnit(index, unit, control, maps, union, fix))
        job.fixes += [fix] if fix is not None else []
        job.infotext[key] = _resolved(unit, control.title, params).serialize()
        if unit.save_detected_map and unit.module != "none":
            job.maps += maps
    if active:
        job.addons.insert(0, ControlNetAddon(active, model.vae_scale_factor, hires))
    return job


def _x0_fix(unit: ControlNetUnit, maps, params, encode: Encode | None, blur_sigma: int = 7) -> X0Fix | None:
    kind = fix_kind(unit.module)
    if kind is None:
        return None
    if encode is None:
        raise ValueError(f"module {unit.module!r} needs the checkpoint's VAE encoder (build_addons encode=)")
    sharp = "+sharp" in unit.module
    return X0Fix(
        kind,
        maps,
        unit.resize_mode,
        unit.weight,
        encode,
        variation=params.threshold_a if kind == COLORFIX else 0.0,
        sharpness=params.threshold_b if sharp else None,
        blur_sigma=blur_sigma,
    )


def _find(controlnets: ControlNets, name: str, field_name: str):
    try:
        return controlnets.find(name, field_name)
    except ControlModelError as exc:  # a models-layer error: the API's 422 names the unit's field
        raise RequestError(exc.field, str(exc)) from None


def _control_unit(model: LoadedModel, unit: ControlNetUnit, name: str, size, init, controlnets: ControlNets):
    """A ControlNet / T2I-Adapter unit: its model (checked against the checkpoint's family), maps, params."""
    try:
        control = controlnets.get(unit.model, model.device, model.dtype, f"{name}.model")
    except ControlModelError as exc:
        raise RequestError(exc.field, str(exc)) from None
    base = _FAMILY_BASE.get(model.family)
    if base is None or control.base != base:
        family = _BASE_LABEL.get(base, model.family.value) if base else model.family.value
        raise RequestError(
            f"{name}.model",
            f"{control.title} is a {_BASE_LABEL[control.base]} {control.kind.replace('_', '-')}; the "
            f"loaded checkpoint is {family}",
        )
    maps, params = _maps(unit, name, size, init, controlnets, str(model.device))
    union = None
    if control.kind == CONTROLNET_UNION:
        union = _union_type(unit, name, module_files(controlnets))
        if union >= int(control.module.config.num_control_type):
            raise RequestError(
                f"{name}.union_control_type",
                f"{control.title} knows {control.module.config.num_control_type} control types; "
                f"{UNION_TYPES[union]!r} is not one of them",
            )
    return control, maps, params, union


def _fitted_images(unit: ControlNetUnit, name: str, size, init) -> list[Image.Image]:
    """The unit's images (or the init image) at the generation size, by its resize mode."""
    images = [item.image for item in unit.images] or ([init[0]] if init[0] is not None else [])
    if not images:
        raise RequestError(f"{name}.image", "a ControlNet unit needs an image (txt2img has no init image)")
    width, height = size
    return [
        Image.fromarray(fit_map(image.convert("RGB"), width, height, unit.resize_mode)) for image in images
    ]


def _maps(
    unit: ControlNetUnit,
    name: str,
    size: tuple[int, int],
    init: tuple[Image.Image | None, Image.Image | None],
    controlnets: ControlNets,
    device: str = "cpu",
) -> tuple[list[Image.Image], preprocessors.PreprocessParams]:
    images = list(unit.images)
    if not images:
        if init[0] is None:
            raise RequestError(
                f"{name}.image", "a ControlNet unit needs an image (txt2img has no init image)"
            )
        images = [ControlImage(init[0], init[1])]
    annotators = module_files(controlnets)
    params = preprocessors.resolve_params(
        unit.module, unit.processor_res, unit.threshold_a, unit.threshold_b, annotators
    )
    params = dataclasses.replace(params, device=device)  # model-based annotators run with the checkpoint
    maps = []
    for item in images:
        if unit.pixel_perfect:
            resolution = pixel_perfect_resolution(item.image, size[0], size[1], unit.resize_mode)
            params = dataclasses.replace(params, resolution=resolution)
        maps.append(
            preprocessors.run_preprocessor(
                unit.module, item.image, params, item.mask, annotators, field_name=f"{name}.module"
            )
        )
    return maps, params


# the extension's inference of a Union model's control type from the module's control-type tag
_TAG_TO_UNION = {
    "openpose": "OpenPose",
    "depth": "Depth",
    "softedge": "Soft Edge",
    "scribble": "Soft Edge",
    "canny": "Hard Edge",
    "lineart": "Hard Edge",
    "mlsd": "Hard Edge",
    "normalmap": "Normal Map",
    "segmentation": "Segmentation",
    "tile": "Tile",
    "inpaint": "Inpaint",
}


def _union_type(unit: ControlNetUnit, name: str, annotators=None) -> int:
    wanted = unit.union_control_type
    if wanted == "Unknown":
        tags = preprocessors.lookup(unit.module, annotators).tags
        wanted = next((_TAG_TO_UNION[t.lower()] for t in tags if t.lower() in _TAG_TO_UNION), wanted)
    if wanted in UNION_TYPES:
        return UNION_TYPES.index(wanted)
    raise RequestError(
        f"{name}.union_control_type",
        f"a ControlNet Union model needs one of {', '.join(UNION_TYPES)}; got {unit.union_control_type!r}",
    )


def _resolved(unit: ControlNetUnit, title: str, params: preprocessors.PreprocessParams) -> ControlNetUnit:
    """The unit as it ran, for the infotext: the model's full title, the preprocessor values it used."""
    return dataclasses.replace(
        unit,
        model=title,
        processor_res=int(params.resolution),
        threshold_a=float(params.threshold_a),
        threshold_b=float(params.threshold_b),
    )
