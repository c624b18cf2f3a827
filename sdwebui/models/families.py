"""Model families as data: one table describes each family's parts, latents, text encoders and defaults.

A family is an entry of `FAMILIES`, not a code path: the loader builds the parts it names (from the shipped
config `configs/<family>.json`), the prompt encoder combines the text encoders as `combine` says, the engine
samples by `prediction` (DDPM eps / v through diffusers schedulers, or flow matching with the family's shift)
and the request defaults come from `defaults`. The next family (Chroma, Flux.2, ...) is one more entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdwebui.models.model import ModelFamily

# how the text encoders' outputs become the denoiser's context and pooled vector
COMBINE_CONCAT = (
    "concat-hidden"  # SD1/SD2/SDXL: hidden states side by side; pooled = last encoder's projection
)
COMBINE_FLUX = "flux"  # context = T5 hidden states; pooled = CLIP-L pooled output
COMBINE_SD3 = "sd3"  # context = [CLIP-L | CLIP-G penultimate, padded to T5's width ; T5]; pooled = L | G

PREDICTION_EPS, PREDICTION_V, PREDICTION_FLOW = "epsilon", "v_prediction", "flow"


@dataclass(frozen=True)
class TextEncoderSpec:
    name: str  # the part's name users know (file names in models/text_encoder/: clip_l, clip_g, t5xxl)
    kind: str  # "clip" | "openclip" | "t5"
    max_length: int = 77  # tokens per chunk / sequence


@dataclass(frozen=True)
class FamilyDefaults:
    # None: the request's own default (the default_sampler setting, A1111's "Euler a")
    sampler_name: str | None = None
    scheduler: str = "automatic"
    width: int = 512
    height: int = 512
    steps: int = 20
    cfg_scale: float = 7.0
    distilled_cfg_scale: float | None = None  # Flux dev's guidance embedding ("Distilled CFG Scale")


@dataclass(frozen=True)
class FlowShift:
    """The shift of a flow-matching schedule: sigma' = shift * s / (1 + (shift - 1) * s).

    With `dynamic`, shift = exp(mu) where mu grows linearly with the image's token count (Flux's reference
    implementation: base_shift at base_tokens, max_shift at max_tokens)."""

    shift: float = 1.0
    dynamic: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_tokens: int = 256
    max_tokens: int = 4096


@dataclass(frozen=True)
class FamilySpec:
    family: ModelFamily
    label: str
    architecture: str  # "unet" | "flux" | "sd3": the denoiser class the loader builds
    latent_channels: int
    scaling_factor: float
    shift_factor: float
    text_encoders: tuple[TextEncoderSpec, ...]
    combine: str
    prediction: str
    defaults: FamilyDefaults
    flow_shift: FlowShift | None = None
    guidance_embeds: bool = False  # the transformer takes a distilled guidance value (Flux dev)
    inpainting: bool = False

    @property
    def is_flow(self) -> bool:
        return self.prediction == PREDICTION_FLOW

    @property
    def encoder_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.text_encoders)


CLIP_L = TextEncoderSpec("clip_l", "clip")
OPENCLIP_H = TextEncoderSpec("openclip_h", "openclip")
CLIP_G = TextEncoderSpec("clip_g", "openclip")
T5XXL_FLUX = TextEncoderSpec("t5xxl", "t5", 512)  # FluxPipeline's max_sequence_length (dev; schnell 256)
T5XXL_SCHNELL = TextEncoderSpec("t5xxl", "t5", 256)
T5XXL_SD3 = TextEncoderSpec("t5xxl", "t5", 256)

_SD1 = FamilyDefaults()
_SD2_V = FamilyDefaults(width=768, height=768)
_SDXL = FamilyDefaults(width=1024, height=1024)
_FLUX_DEV = FamilyDefaults("Euler", "simple", 1024, 1024, 20, 1.0, 3.5)
_FLUX_SCHNELL = FamilyDefaults("Euler", "simple", 1024, 1024, 4, 1.0)
_SD3 = FamilyDefaults("Euler", "sgm_uniform", 1024, 1024, 28, 4.5)


def _unet(family, label, encoders, prediction=PREDICTION_EPS, defaults=_SD1, inpainting=False):
    return FamilySpec(
        family,
        label,
        "unet",
        4,
        0.13025 if len(encoders) > 1 or family == ModelFamily.SDXL_REFINER else 0.18215,
        0.0,
        encoders,
        COMBINE_CONCAT,
        prediction,
        defaults,
        inpainting=inpainting,
    )


FAMILIES: dict[ModelFamily, FamilySpec] = {
    spec.family: spec
    for spec in (
        _unet(ModelFamily.SD1, "SD 1.x", (CLIP_L,)),
        _unet(ModelFamily.SD1_INPAINT, "SD 1.x inpainting", (CLIP_L,), inpainting=True),
        _unet(ModelFamily.SD2, "SD 2.x (512, eps)", (OPENCLIP_H,)),
        _unet(ModelFamily.SD2_V, "SD 2.x (768-v)", (OPENCLIP_H,), PREDICTION_V, _SD2_V),
        _unet(ModelFamily.SD2_INPAINT, "SD 2.x inpainting", (OPENCLIP_H,), inpainting=True),
        _unet(ModelFamily.SDXL, "SDXL", (CLIP_L, CLIP_G), defaults=_SDXL),
        _unet(ModelFamily.SDXL_INPAINT, "SDXL inpainting", (CLIP_L, CLIP_G), defaults=_SDXL, inpainting=True),
        _unet(ModelFamily.SDXL_REFINER, "SDXL refiner", (CLIP_G,), defaults=_SDXL),
        FamilySpec(
            ModelFamily.FLUX_DEV,
            "Flux.1 dev",
            "flux",
            16,
            0.3611,
            0.1159,
            (CLIP_L, T5XXL_FLUX),
            COMBINE_FLUX,
            PREDICTION_FLOW,
            _FLUX_DEV,
            FlowShift(dynamic=True),
            guidance_embeds=True,
        ),
        FamilySpec(
            ModelFamily.FLUX_SCHNELL,
            "Flux.1 schnell",
            "flux",
            16,
            0.3611,
            0.1159,
            (CLIP_L, T5XXL_SCHNELL),
            COMBINE_FLUX,
            PREDICTION_FLOW,
            _FLUX_SCHNELL,
            FlowShift(1.0),
        ),
        FamilySpec(
            ModelFamily.SD3,
            "SD 3 / 3.5",
            "sd3",
            16,
            1.5305,
            0.0609,
            (CLIP_L, CLIP_G, T5XXL_SD3),
            COMBINE_SD3,
            PREDICTION_FLOW,
            _SD3,
            FlowShift(3.0),
        ),
    )
}


def family_spec(family: ModelFamily | str) -> FamilySpec:
    return FAMILIES[ModelFamily(family)]


def dit_families() -> list[FamilySpec]:
    return [spec for spec in FAMILIES.values() if spec.architecture != "unet"]
