"""reference_only through the U-Net add-on seam on the tiny SD1 model: the reference changes the image (also per
weight and style fidelity); weight 0 (or a window that excludes every step) gives exactly the plain image."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sdwebui.engine.context import JobContext
from sdwebui.engine.controlnet.reference import (
    ReferenceOnly,
    ReferenceSettings,
    attention_ranks,
    encode_image,
    reference_addon,
    style_fidelity_for,
)
from sdwebui.engine.controlnet.units import ControlMode, ControlNetUnit
from sdwebui.engine.generate import generate
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings

SIZE = 64


def image_of(model, addons=()) -> np.ndarray:
    request = Txt2ImgRequest(
        prompt="a cat",
        negative_prompt="blurry",
        seed=7,
        steps=3,
        width=SIZE,
        height=SIZE,
        sampler_name="Euler",
    )
    result = generate(
        model, request, JobContext(), EngineSettings(save_images=False), EngineHooks(unet_addons=list(addons))
    )
    return np.asarray(result.images[0].image).astype(np.int32)


def reference_image() -> Image.Image:
    array = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    array[:, : SIZE // 2] = (250, 20, 20)
    array[:, SIZE // 2 :] = (20, 20, 250)
    return Image.fromarray(array)


def test_reference_only_changes_the_image_and_weight_zero_keeps_it(tiny_sd1_model):
    unet = tiny_sd1_model.unet
    before = dict(unet.attn_processors)
    plain = image_of(tiny_sd1_model)
    full = ReferenceOnly(tiny_sd1_model, reference_image(), ReferenceSettings(weight=1.0, style_fidelity=0.5))
    referenced = image_of(tiny_sd1_model, [full])
    assert np.abs(referenced - plain).mean() > 0.5
    assert all(unet.attn_processors[name] is proc for name, proc in before.items())  # put back

    zero = ReferenceOnly(tiny_sd1_model, reference_image(), ReferenceSettings(weight=0.0))
    assert np.array_equal(image_of(tiny_sd1_model, [zero]), plain)
    outside = ReferenceOnly(
        tiny_sd1_model, reference_image(), ReferenceSettings(guidance_start=0.9, guidance_end=1.0)
    )
    assert np.array_equal(image_of(tiny_sd1_model, [outside]), plain)

    # a lower weight injects into fewer blocks: a different image again; other fidelities differ too
    half = ReferenceOnly(tiny_sd1_model, reference_image(), ReferenceSettings(weight=0.5, style_fidelity=0.5))
    assert not np.array_equal(image_of(tiny_sd1_model, [half]), referenced)
    strict = ReferenceOnly(
        tiny_sd1_model, reference_image(), ReferenceSettings(weight=1.0, style_fidelity=1.0)
    )
    assert not np.array_equal(image_of(tiny_sd1_model, [strict]), referenced)


def test_blocks_ranked_widest_first_and_control_modes(tiny_sd1_model):
    ranks = attention_ranks(tiny_sd1_model.unet)
    assert sorted(ranks.values()) == [i / len(ranks) for i in range(len(ranks))]
    widest = min(ranks, key=ranks.get)
    width = tiny_sd1_model.unet.get_submodule(widest.removesuffix(".processor")).to_q.in_features
    assert all(
        tiny_sd1_model.unet.get_submodule(n.removesuffix(".processor")).to_q.in_features <= width
        for n in ranks
    )
    assert style_fidelity_for(ControlMode.BALANCED, 0.5) == 0.5
    assert style_fidelity_for(ControlMode.BALANCED, 0.5, is_sdxl=True) == 0.125
    assert style_fidelity_for(ControlMode.CONTROL, 0.5) == 1.0
    assert style_fidelity_for(ControlMode.PROMPT, 0.5) == 0.0


def test_reference_addon_from_a_unit(tiny_sd1_model):
    unit = ControlNetUnit(enabled=True, module="reference_only", weight=1.0, control_mode=ControlMode.CONTROL)
    addon = reference_addon(tiny_sd1_model, unit, reference_image(), seed=1)
    assert addon.settings.style_fidelity == 1.0 and addon.settings.weight == 1.0
    assert reference_addon(tiny_sd1_model, ControlNetUnit(), reference_image()).settings.style_fidelity == 0.5


def test_reference_latent_is_the_engines_vae_encoding(tiny_sd1_model):
    from sdwebui.engine import vae

    expected = vae.encode(tiny_sd1_model, vae.pil_to_pixels([reference_image()]))
    assert torch.allclose(encode_image(tiny_sd1_model, reference_image()), expected, atol=1e-5)
