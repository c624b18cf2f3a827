"""What the engine asks of a flow-matching family: its scheduler, prompt encoder, adapter and infotext."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdwebui.engine.flow.adapter import FlowAdapter, Guidance
from sdwebui.engine.flow.conditioning import DiTPromptEncoder
from sdwebui.engine.flow.scheduler import FLOW_SAMPLERS, SAMPLER_LABELS, FlowConfig, FlowScheduler
from sdwebui.engine.flow.schedules import UnsupportedFlowSchedule, flow_sigmas, shift_value
from sdwebui.engine.flow.slg import SkipLayerGuidance
from sdwebui.engine.requests import RequestError
from sdwebui.models.families import family_spec
from sdwebui.models.model import LoadedModel

SCHEDULE_LABELS = {
    "simple": "Simple",
    "sgm_uniform": "SGM Uniform",
    "karras": "Karras",
    "beta": "Beta",
    "uniform": "Uniform",
}


def is_flow(model: LoadedModel) -> bool:
    return family_spec(model.family).is_flow


def schedule_name(model: LoadedModel, schedule: str | None) -> str:
    """A request's schedule type ("Automatic" = the family's default) as a schedules.py name."""
    key = (schedule or "automatic").strip().lower().replace(" ", "_")
    if key == "automatic":
        return family_spec(model.family).defaults.scheduler
    return {"sgmuniform": "sgm_uniform"}.get(key, key)


def sampler_kind(sampler_name: str) -> str:
    kind = FLOW_SAMPLERS.get((sampler_name or "").strip().lower())
    if kind is None:
        valid = ", ".join(SAMPLER_LABELS.values())
        raise RequestError(
            "sampler_name",
            f"sampler {sampler_name!r} is not available for flow-matching models (Flux, SD3); valid: {valid}",
        )
    return kind


def create_scheduler(
    model: LoadedModel, sampler_name: str, schedule: str | None, eta: float | None, width: int, height: int
) -> FlowScheduler:
    """A fresh scheduler for one pass; the family's shift resolved for this image size (Flux dev)."""
    spec = family_spec(model.family)
    factor = model.vae_scale_factor * 2  # Flux packs 2x2 latent patches: one token per 16 pixels
    tokens = (height // factor) * (width // factor)
    name = schedule_name(model, schedule)
    config = FlowConfig(
        sampler_kind(sampler_name),
        name,
        shift_value(spec.flow_shift, tokens),
        1.0 if eta is None else float(eta),
    )
    try:
        flow_sigmas(name, 1, config.shift)
    except UnsupportedFlowSchedule as exc:
        raise RequestError("scheduler", str(exc)) from exc
    return FlowScheduler(config)


def prompt_encoder(model: LoadedModel, clip_skip: int, embeddings: Any = None) -> DiTPromptEncoder:
    return DiTPromptEncoder(model, clip_skip, embeddings)


def adapter(
    model: LoadedModel, guidance: Guidance, pass_index: int, addons: Sequence[Any] = ()
) -> FlowAdapter:
    """The pass's adapter; U-Net add-ons (ControlNet, T2I-Adapter, IP-Adapter) have no DiT counterpart yet,
    so a job that asks for one is refused rather than run without it."""
    if addons:
        names = ", ".join(sorted({type(a).__name__ for a in addons}))
        raise RequestError(
            "alwayson_scripts", f"{names} work on U-Net models only, not on {family_spec(model.family).label}"
        )
    check_skip_layers(model, guidance.skip_layers)
    return FlowAdapter(model, guidance, pass_index)


def check_skip_layers(model: LoadedModel, slg: SkipLayerGuidance) -> None:
    """SLG's blocks must exist in the SD3 transformer (SD3.5 medium has 24, large 38)."""
    if not slg.enabled or family_spec(model.family).architecture != "sd3":
        return
    blocks = int(model.unet.config.num_layers)
    wrong = [n for n in slg.layers if n >= blocks]
    if wrong:
        raise RequestError(
            "sd3_slg_layers", f"blocks {wrong} do not exist: this SD3 transformer has blocks 0..{blocks - 1}"
        )


def infotext_params(
    model: LoadedModel, request: Any, slg: SkipLayerGuidance = SkipLayerGuidance()
) -> dict[str, Any]:
    """Forge's keys: the flow sampler and schedule, `Distilled CFG Scale` (Flux dev), `Module N` per part;
    SD3's skip-layer guidance when it applies (CFG > 1)."""
    spec = family_spec(model.family)
    params: dict[str, Any] = {
        "Sampler": SAMPLER_LABELS[sampler_kind(request.sampler_name)],
        "Schedule type": SCHEDULE_LABELS[schedule_name(model, request.scheduler)],
    }
    if spec.guidance_embeds:
        value = request.distilled_cfg_scale
        params["Distilled CFG Scale"] = int(value) if float(value).is_integer() else value
    if spec.architecture == "sd3" and request.cfg_scale > 1:
        params.update(slg.infotext())
    for number, name in enumerate(model.extra.get("modules", []), start=1):
        params[f"Module {number}"] = Path(name).name.split(".")[0]
    return params


def check_request(
    model: LoadedModel, request: Any, eta: float | None, slg: SkipLayerGuidance = SkipLayerGuidance()
) -> None:
    """The job's DiT-specific input, checked before any work: sizes, sampler, schedule, SLG's blocks."""
    check_skip_layers(model, slg)
    factor = model.vae_scale_factor * 2
    for name in ("width", "height"):
        value = getattr(request, name)
        if value % factor:
            raise RequestError(
                name, f"must be a multiple of {factor} for {family_spec(model.family).label}, got {value}"
            )
    create_scheduler(model, request.sampler_name, request.scheduler, eta, request.width, request.height)
