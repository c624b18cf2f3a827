"""IP-Adapter as a U-Net add-on: the image prompt (CLIP vision -> projection) and the decoupled cross-attention.

Each cross-attention (attn2) layer the adapter has weights for adds, to its text attention's output,
`weight * Attention(q, to_k_ip(image_tokens), to_v_ip(image_tokens))` (Ye et al. 2023, "IP-Adapter"),
through the same output projection. Cond rows attend to the image's tokens, uncond rows to the
projection of an empty image (base: zero embeds; plus: the encoder's features of a zero image, as the
reference implementation). Weight 0, or a step outside the guidance window, adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from sdwebui.engine.addons import UNetCall, current_unet_call
from sdwebui.engine.controlnet.preprocessors import ModuleFiles, lookup
from sdwebui.engine.controlnet.units import ControlNetUnit
from sdwebui.engine.errors import RequestError
from sdwebui.models.clip_vision import ClipVisionCache, ClipVisionEncoder, ClipVisionError, find_encoder
from sdwebui.models.ip_adapter import IPAdapterCache, IPAdapterError, IPAdapterWeights
from sdwebui.models.model import LoadedModel


class IPAdapterMismatchError(RequestError):
    """The IP-Adapter does not fit the loaded U-Net or the vision encoder (another model family)."""


@dataclass(frozen=True)
class IPAdapterSettings:
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0


@dataclass
class ImagePrompt:
    cond: torch.Tensor  # [1, tokens, cross_attention_dim]
    uncond: torch.Tensor


def build_projection(unet, weights: IPAdapterWeights) -> torch.nn.Module:
    """The image projection as diffusers' module (ImageProjection / IPAdapterPlusImageProjection / full),
    converted from the original key layout by diffusers' own converter (strict load)."""
    projection = unet._convert_ip_adapter_image_proj_to_diffusers(weights.image_proj, low_cpu_mem_usage=False)
    return projection.to(torch.float32).eval()


@torch.no_grad()
def image_prompt(
    weights: IPAdapterWeights,
    encoder: ClipVisionEncoder,
    projection: torch.nn.Module,
    images: Sequence[Image.Image],
) -> ImagePrompt:
    """The image tokens of `images` (several: averaged, as the extension's multi-input) and the uncond tokens."""
    pixels = torch.cat([encoder.pixels(image) for image in images])
    embeds, hidden = encoder.encode(pixels)
    source = hidden if weights.uses_hidden_states else embeds
    if source.shape[-1] != weights.clip_embeddings_dim:
        raise IPAdapterMismatchError(
            "model",
            f"IP-Adapter {weights.name!r} takes {weights.clip_embeddings_dim}-wide CLIP features, the vision "
            f"encoder {encoder.name!r} gives {source.shape[-1]} (use the other ip-adapter_clip_* module)",
        )
    param = next(projection.parameters())
    cond = projection(source.to(param)).mean(dim=0, keepdim=True)
    if weights.uses_hidden_states:
        _, empty = encoder.encode(torch.zeros_like(pixels[:1]))
        uncond = projection(empty.to(param))
    else:
        uncond = projection(torch.zeros_like(source[:1]).to(param))
    return ImagePrompt(cond.float(), uncond.float())


def layer_names(unet, weights: IPAdapterWeights) -> dict[str, int]:
    """attn2 processor name -> the adapter's layer index; IPAdapterMismatchError when they do not fit."""
    names = list(unet.attn_processors)
    cross = [i for i, name in enumerate(names) if name.endswith("attn2.processor")]
    if sorted(weights.layers) != cross:
        raise IPAdapterMismatchError(
            "model",
            f"IP-Adapter {weights.name!r} has {len(weights.layers)} cross-attention layers, the loaded U-Net "
            f"{len(cross)}: it is for another model family",
        )
    result = {}
    for index in cross:
        attn = unet.get_submodule(names[index].removesuffix(".processor"))
        to_k, _ = weights.layers[index]
        if tuple(to_k.shape) != (attn.to_k.out_features, attn.to_k.in_features):
            raise IPAdapterMismatchError(
                "model",
                f"IP-Adapter {weights.name!r} layer {index} is {tuple(to_k.shape)}, the U-Net's "
                f"{names[index]} is {(attn.to_k.out_features, attn.to_k.in_features)}: another model family",
            )
        result[names[index]] = index
    return result


class IPAdapter:
    """A U-Net add-on (sdwebui.engine.addons) for one IP-Adapter unit of one job."""

    def __init__(
        self, model: LoadedModel, weights: IPAdapterWeights, prompt: ImagePrompt, settings: IPAdapterSettings
    ):
        self.weights = weights
        self.prompt = prompt
        self.settings = settings
        self._layers = layer_names(model.unet, weights)
        self._device = model.device
        self._kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _active(self, call: UNetCall | None) -> bool:
        if call is None or self.settings.weight == 0:
            return False
        progress = call.step / max(call.total_steps, 1)
        return self.settings.guidance_start <= progress <= self.settings.guidance_end

    def before_unet(self, call: UNetCall) -> None:
        """Nothing to add before the call: the adapter works inside the attention layers."""

    def _tokens(self, call: UNetCall, like: torch.Tensor) -> torch.Tensor:
        rows = [self.prompt.uncond if row.uncond else self.prompt.cond for row in call.rows]
        return torch.cat(rows).to(like)

    def _kv_weights(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if index not in self._kv:
            k, v = self.weights.layers[index]
            self._kv[index] = (k.to(like), v.to(like))
        return self._kv[index]

    def _image_attention(
        self, attn, hidden_states: torch.Tensor, tokens: torch.Tensor, index: int
    ) -> torch.Tensor:
        to_k, to_v = self._kv_weights(index, hidden_states)
        batch, length, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        heads = attn.heads
        head_dim = query.shape[-1] // heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, -1, heads, head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(query), split(F.linear(tokens, to_k)), split(F.linear(tokens, to_v))
        )
        out = out.transpose(1, 2).reshape(batch, length, heads * head_dim)
        return (
            F.linear(out, attn.to_out[0].weight) / attn.rescale_output_factor
        )  # the bias is the text part's

    def wrap_attention(self, name: str, processor):
        index = self._layers.get(name)
        if index is None:
            return None

        def decoupled(attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
            out = processor(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
            call = current_unet_call()
            if encoder_hidden_states is None or hidden_states.ndim != 3 or not self._active(call):
                return out
            tokens = self._tokens(call, hidden_states)
            return out + self.settings.weight * self._image_attention(attn, hidden_states, tokens, index)

        return decoupled


@dataclass
class IPAdapterFiles:
    """Where an IP-Adapter unit's encoder comes from, and the caches a worker keeps between jobs."""

    clip_vision_dir: Path | None
    adapters: IPAdapterCache = field(default_factory=IPAdapterCache)
    encoders: ClipVisionCache = field(default_factory=ClipVisionCache)


def ip_adapter_addon(
    model: LoadedModel,
    unit: ControlNetUnit,
    adapter_path: Path,
    images: Sequence[Image.Image],
    files: IPAdapterFiles,
    field_name: str = "model",
) -> IPAdapter:
    """The add-on for an enabled unit whose model file is an IP-Adapter (`is_ip_adapter_keys`): the unit's
    module (ip-adapter_clip_*) names the encoder; `images` are its control images (averaged)."""
    module = lookup(
        unit.module, ModuleFiles(clip_vision_dir=files.clip_vision_dir), field_name=f"{field_name}.module"
    )
    if module.encoder is None:
        raise RequestError(
            f"{field_name}.module",
            f"the IP-Adapter model {unit.model!r} needs an ip-adapter_clip_* module, got {unit.module!r}",
        )
    encoder_path = find_encoder(files.clip_vision_dir, module.encoder)
    assert encoder_path is not None  # lookup() checked the encoder file is there
    try:
        weights = files.adapters.get(adapter_path)
        encoder = files.encoders.get(encoder_path, module.encoder, model.device)
    except (IPAdapterError, ClipVisionError) as error:
        raise RequestError(f"{field_name}.model", str(error)) from None
    projection = build_projection(model.unet, weights).to(model.device)
    try:
        prompt = image_prompt(weights, encoder, projection, images)
    except IPAdapterMismatchError as error:
        raise IPAdapterMismatchError(f"{field_name}.model", error.reason) from None
    settings = IPAdapterSettings(unit.weight, unit.guidance_start, unit.guidance_end)
    try:
        return IPAdapter(model, weights, prompt, settings)
    except IPAdapterMismatchError as error:
        raise IPAdapterMismatchError(f"{field_name}.model", error.reason) from None
