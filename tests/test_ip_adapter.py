"""IP-Adapter on the tiny SD1 model: tiny random adapters (base, plus) in the real key layout and a tiny
CLIP vision encoder from models/clip_vision; the decoupled cross-attention through the add-on seam."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from sdwebui.engine.addons import RowOwner, UNetCall, evaluating, wrapped_attention
from sdwebui.engine.context import JobContext
from sdwebui.engine.controlnet.ip_adapter import (
    ImagePrompt,
    IPAdapter,
    IPAdapterFiles,
    IPAdapterMismatchError,
    IPAdapterSettings,
    build_projection,
    image_prompt,
    ip_adapter_addon,
)
from sdwebui.engine.controlnet.preprocessors import (
    MissingAnnotatorError,
    ModuleFiles,
    PreprocessParams,
    module_names,
    run_preprocessor,
)
from sdwebui.engine.controlnet.units import ControlNetUnit
from sdwebui.engine.errors import RequestError
from sdwebui.engine.generate import generate
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.clip_vision import find_encoder, load_encoder
from sdwebui.models.ip_adapter import IPAdapterError, is_ip_adapter_keys, load_ip_adapter
from tests.ip_adapter_fixtures import ip_adapter_state, write_clip_vision, write_ip_adapter

SIZE = 64


def picture(color: tuple[int, int, int]) -> Image.Image:
    array = np.zeros((48, 48, 3), dtype=np.uint8)
    array[:24] = color
    array[24:] = (255 - color[0], 128, color[2] // 2)
    return Image.fromarray(array)


def image_of(model, addons=()) -> np.ndarray:
    request = Txt2ImgRequest(
        prompt="a cat",
        negative_prompt="blurry",
        seed=5,
        steps=2,
        width=SIZE,
        height=SIZE,
        sampler_name="Euler",
    )
    hooks = EngineHooks(unet_addons=list(addons))
    return np.asarray(
        generate(model, request, JobContext(), EngineSettings(save_images=False), hooks).images[0].image
    )


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip_vision")
    write_clip_vision(folder, "clip_h")
    return load_encoder(find_encoder(folder, "clip_h"), "clip_h")


def adapter(model, path, encoder, image, weight=1.0, **window):
    weights = load_ip_adapter(path)
    projection = build_projection(model.unet, weights)
    prompt = image_prompt(weights, encoder, projection, [image])
    return IPAdapter(model, weights, prompt, IPAdapterSettings(weight=weight, **window)), prompt


def test_ip_adapter_steers_the_image_and_weight_zero_keeps_it(tiny_sd1_model, encoder, tmp_path):
    path = write_ip_adapter(tmp_path / "ip-adapter_sd15.safetensors", tiny_sd1_model.unet)
    before = dict(tiny_sd1_model.unet.attn_processors)
    plain = image_of(tiny_sd1_model)
    red, prompt = adapter(tiny_sd1_model, path, encoder, picture((250, 10, 10)))
    assert prompt.cond.shape == (1, 4, tiny_sd1_model.unet.config.cross_attention_dim)
    with_red = image_of(tiny_sd1_model, [red])
    assert np.abs(with_red.astype(int) - plain).mean() > 0.5
    blue, _ = adapter(tiny_sd1_model, path, encoder, picture((10, 10, 250)))
    assert not np.array_equal(image_of(tiny_sd1_model, [blue]), with_red)  # the image prompt matters
    zero, _ = adapter(tiny_sd1_model, path, encoder, picture((250, 10, 10)), weight=0.0)
    assert np.array_equal(image_of(tiny_sd1_model, [zero]), plain)
    late, _ = adapter(tiny_sd1_model, path, encoder, picture((250, 10, 10)), guidance_start=0.9)
    assert np.array_equal(image_of(tiny_sd1_model, [late]), plain)
    assert all(tiny_sd1_model.unet.attn_processors[n] is p for n, p in before.items())


def test_plus_adapter_from_a_pickle_uses_the_resampler(tiny_sd1_model, encoder, tmp_path):
    path = write_ip_adapter(tmp_path / "ip-adapter-plus_sd15.bin", tiny_sd1_model.unet, plus=True, seed=1)
    weights = load_ip_adapter(path)
    assert weights.is_plus and weights.clip_embeddings_dim == 32
    plus, prompt = adapter(tiny_sd1_model, path, encoder, picture((250, 10, 10)))
    assert prompt.cond.shape[1] == 16 and not prompt.cond.allclose(prompt.uncond)
    assert not np.array_equal(image_of(tiny_sd1_model, [plus]), image_of(tiny_sd1_model))


def test_wrong_family_or_encoder_and_bad_files_are_named(tiny_sd1_model, tiny_sdxl_model, encoder, tmp_path):
    sd1 = write_ip_adapter(tmp_path / "ip-adapter_sd15.safetensors", tiny_sd1_model.unet)
    weights = load_ip_adapter(sd1)
    with pytest.raises(IPAdapterMismatchError, match="another model family") as error:
        IPAdapter(tiny_sdxl_model, weights, None, IPAdapterSettings())
    assert isinstance(error.value, RequestError) and error.value.field == "model"
    xl = write_ip_adapter(tmp_path / "ip-adapter_sdxl.safetensors", tiny_sdxl_model.unet)
    on_xl, _ = adapter(tiny_sdxl_model, xl, encoder, picture((250, 10, 10)))  # the SDXL layout acts on SDXL
    assert not np.array_equal(image_of(tiny_sdxl_model, [on_xl]), image_of(tiny_sdxl_model))
    state = ip_adapter_state(tiny_sd1_model.unet)
    assert is_ip_adapter_keys(list(state)) and not is_ip_adapter_keys(
        ["control_model.input_blocks.0.0.weight"]
    )
    narrow = load_ip_adapter(sd1)  # a projection for 16-wide CLIP embeds; the encoder gives 24
    narrow.image_proj = dict(narrow.image_proj, **{"proj.weight": narrow.image_proj["proj.weight"][:, :16]})
    with pytest.raises(IPAdapterMismatchError, match="16-wide CLIP features"):
        image_prompt(narrow, encoder, build_projection(tiny_sd1_model.unet, narrow), [picture((9, 9, 9))])
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"not a model")
    with pytest.raises(IPAdapterError, match="broken.safetensors"):
        load_ip_adapter(garbage)


def test_ip_adapter_modules_listed_only_with_their_encoder(tmp_path):
    assert "ip-adapter_clip_sd15" not in module_names()
    with pytest.raises(MissingAnnotatorError, match="models/clip_vision/clip_h.pth"):
        run_preprocessor("ip-adapter_clip_h", picture((1, 2, 3)), PreprocessParams())
    write_clip_vision(tmp_path, "clip_h")
    files = ModuleFiles(clip_vision_dir=tmp_path)
    names = module_names(files)
    assert "ip-adapter_clip_sd15" in names and "ip-adapter_clip_sdxl_plus_vith" in names
    assert "ip-adapter_clip_sdxl" not in names  # no clip_g file
    shown = run_preprocessor("ip-adapter_clip_h", picture((1, 2, 3)), PreprocessParams(), annotator_dir=files)
    assert np.array_equal(np.asarray(shown), np.asarray(picture((1, 2, 3))))


@pytest.mark.parametrize("plus", [False, True])
def test_decoupled_attention_matches_diffusers_ip_adapter(tiny_sd1_model, tmp_path, plus):
    """The same U-Net output as diffusers' own IP-Adapter processors (IPAdapterAttnProcessor2_0) on the same weights."""
    unet = tiny_sd1_model.unet
    weights = load_ip_adapter(write_ip_adapter(tmp_path / "ip.bin", unet, plus=plus, seed=2))
    reference = copy.deepcopy(unet)
    reference._load_ip_adapter_weights(
        [{"image_proj": weights.image_proj, "ip_adapter": ip_adapter_layers(weights)}],
        low_cpu_mem_usage=False,
    )
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor(500)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen)
    features = torch.randn(1, 5, 32, generator=gen) if plus else torch.randn(1, 24, generator=gen)
    empty = torch.randn(1, 5, 32, generator=gen) if plus else torch.zeros(1, 24)
    projection = build_projection(unet, weights)
    with torch.no_grad():
        prompt = ImagePrompt(projection(features), projection(empty))
        expected = reference(
            x,
            t,
            encoder_hidden_states=text,
            added_cond_kwargs={"image_embeds": [torch.cat([empty, features])[:, None]]},
        ).sample
        addon = IPAdapter(tiny_sd1_model, weights, prompt, IPAdapterSettings(weight=1.0))
        call = UNetCall(0, 1, 0, t, 1.0, x, text, None, [RowOwner(0, True), RowOwner(0, False)])
        with wrapped_attention(unet, [addon]), evaluating(call):
            got = unet(x, t, encoder_hidden_states=text).sample
        plain = unet(x, t, encoder_hidden_states=text).sample
    assert (plain - expected).abs().max() > 0.1
    assert torch.allclose(got, expected, atol=1e-4)


def ip_adapter_layers(weights) -> dict[str, torch.Tensor]:
    layers = {}
    for index, (k, v) in weights.layers.items():
        layers[f"{index}.to_k_ip.weight"], layers[f"{index}.to_v_ip.weight"] = k, v
    return layers


def test_ip_adapter_addon_from_a_unit(tiny_sd1_model, tmp_path):
    clip_dir = tmp_path / "clip_vision"
    write_clip_vision(clip_dir, "clip_h")
    path = write_ip_adapter(tmp_path / "ip-adapter_sd15.safetensors", tiny_sd1_model.unet)
    files = IPAdapterFiles(clip_dir)
    unit = ControlNetUnit(
        enabled=True, module="ip-adapter_clip_h", model="ip-adapter_sd15 [12345678]", weight=0.8
    )
    addon = ip_adapter_addon(tiny_sd1_model, unit, path, [picture((250, 10, 10))], files, "args[0]")
    assert addon.settings.weight == 0.8
    assert not np.array_equal(image_of(tiny_sd1_model, [addon]), image_of(tiny_sd1_model))
    wrong = ControlNetUnit(enabled=True, module="canny", model="ip-adapter_sd15")
    with pytest.raises(RequestError, match="ip-adapter_clip_") as error:
        ip_adapter_addon(tiny_sd1_model, wrong, path, [picture((1, 1, 1))], files, "args[0]")
    assert error.value.field == "args[0].module"
    with pytest.raises(MissingAnnotatorError, match="clip_g.pth"):
        sdxl_module = ControlNetUnit(enabled=True, module="ip-adapter_clip_sdxl", model="x")
        ip_adapter_addon(tiny_sd1_model, sdxl_module, path, [picture((1, 1, 1))], files, "args[0]")
