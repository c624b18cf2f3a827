"""LoRA on the tiny Flux and SD3 transformers: kohya, BFL/ComfyUI and diffusers/PEFT names, fused qkv split
into diffusers' to_q/to_k/to_v, images through the engine, and a LoRA for another family refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdwebui.engine.context import JobContext
from sdwebui.engine.extra_networks import LoraNetworksPatch
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import RequestError, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.lease import ModelLease
from sdwebui.models.lora import (
    DeltaCache,
    LoraError,
    LoraPatch,
    NetworkWeight,
    applied,
    build_index,
    load_network,
)
from sdwebui.models.lora.library import LoraLibrary
from sdwebui.models.model import ModelFamily
from tests import dit_fixtures as fx
from tests.lora_fixtures import save_safetensors
from tests.tiny_models import tiny_loaded_model

RANK, ALPHA = 2, 1.0


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    return fx.tiny_dit_model(ModelFamily.FLUX_DEV, tmp_path_factory.mktemp("flux-lora"))


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return fx.tiny_dit_model(ModelFamily.SD3, tmp_path_factory.mktemp("sd3-lora"))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def weight(model, path: str) -> torch.Tensor:
    return model.unet.get_submodule(path).weight.detach().clone()


def factors(rows: int, columns: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) big enough to change the tiny model's image."""
    return torch.randn(rows, RANK, generator=gen(seed)) * 0.5, torch.randn(
        RANK, columns, generator=gen(seed + 1)
    ) * 0.5


# (layer as the file names it, the diffusers modules it covers, in order)
FLUX_LAYERS = [
    ("double_blocks.0.img_attn.qkv", ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k",
                                      "transformer_blocks.0.attn.to_v"]),
    ("single_blocks.0.linear1", ["single_transformer_blocks.0.attn.to_q", "single_transformer_blocks.0.attn.to_k",
                                 "single_transformer_blocks.0.attn.to_v", "single_transformer_blocks.0.proj_mlp"]),
    ("double_blocks.0.img_mlp.0", ["transformer_blocks.0.ff.net.0.proj"]),
]  # fmt: skip
SD3_LAYERS = [
    ("joint_blocks.0.x_block.attn.qkv", ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k",
                                         "transformer_blocks.0.attn.to_v"]),
    ("joint_blocks.0.context_block.mlp.fc2", ["transformer_blocks.0.ff_context.net.2"]),
]  # fmt: skip


def layout_keys(layout: str, layer: str, part: str) -> str:
    up = part == "up"
    if layout == "kohya":
        return f"lora_unet_{layer.replace('.', '_')}.lora_{part}.weight"
    if layout == "bfl-ab":
        return f"diffusion_model.{layer}.lora_{'B' if up else 'A'}.weight"
    if layout == "bfl-updown":
        return f"diffusion_model.{layer}.lora_{part}.weight"
    return f"transformer.{layer}.lora_{'B' if up else 'A'}.weight"  # diffusers / PEFT: one module per key


def lora_file(model, layers, layout: str, path, seed: int = 0):
    """A LoRA in `layout` and the dense difference each diffusers module must get at weight 1."""
    tensors, expected = {}, {}
    for i, (layer, modules) in enumerate(layers):
        rows = [weight(model, m).shape[0] for m in modules]
        columns = weight(model, modules[0]).shape[1]
        up, down = factors(sum(rows), columns, seed + 10 * i)
        dense = (up @ down) * (ALPHA / RANK)
        expected.update(zip(modules, torch.split(dense, rows, dim=0), strict=True))
        if layout == "diffusers":  # diffusers names the separate modules
            for module, up_part in zip(modules, torch.split(up, rows, dim=0), strict=True):
                tensors[layout_keys(layout, module, "up")] = up_part
                tensors[layout_keys(layout, module, "down")] = down.clone()
                tensors[f"transformer.{module}.alpha"] = torch.tensor(ALPHA)
            continue
        tensors[layout_keys(layout, layer, "up")] = up
        tensors[layout_keys(layout, layer, "down")] = down
        prefix = layout_keys(layout, layer, "up").rsplit(".lora_", 1)[0]
        tensors[f"{prefix}.alpha"] = torch.tensor(ALPHA)
    return save_safetensors(tensors, path), expected


@pytest.mark.parametrize("layout", ["kohya", "bfl-ab", "bfl-updown", "diffusers"])
@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_patched_weights_equal_a_dense_computation(family, layout, request, tmp_path):
    model = request.getfixturevalue(family)
    layers = FLUX_LAYERS if family == "flux" else SD3_LAYERS
    path, expected = lora_file(model, layers, layout, tmp_path / f"{layout}.safetensors")
    network = load_network(path, build_index(model))
    assert not network.unmatched and set(network.modules) == {f"unet.{m}" for m in expected}
    before = {m: weight(model, m) for m in expected}
    with applied(LoraPatch([NetworkWeight(network, unet=0.7)]), model):
        for module, delta in expected.items():
            torch.testing.assert_close(
                weight(model, module), before[module] + 0.7 * delta, rtol=1e-5, atol=1e-6
            )
    assert all(torch.equal(weight(model, m), before[m]) for m in expected)


def run(model, library, prompt: str):
    patch = LoraNetworksPatch(lambda name, m: library.network(library.find(name), m), DeltaCache())
    request = Txt2ImgRequest(prompt=prompt, seed=7, steps=2, width=fx.SIZE, height=fx.SIZE,
                             sampler_name="Euler", scheduler="Simple", cfg_scale=1.0)  # fmt: skip
    with ModelLease(model, [patch]) as view:
        return generate(view, request, JobContext(), EngineSettings(save_images=False))


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_images_change_at_weight_1_not_0_and_nothing_leaks(family, request, tmp_path):
    model = request.getfixturevalue(family)
    layers = FLUX_LAYERS if family == "flux" else SD3_LAYERS
    lora_file(model, layers, "kohya", tmp_path / "loras" / "style.safetensors", seed=5)
    library = LoraLibrary([tmp_path / "loras"])
    shared = {k: v.clone() for k, v in model.unet.state_dict().items()}
    plain = run(model, library, "a cat")
    styled = run(model, library, "a cat <lora:style:1>")
    assert not np.array_equal(pixels(plain), pixels(styled)), "the LoRA changed nothing"
    assert np.array_equal(pixels(run(model, library, "a cat <lora:style:0>")), pixels(plain))
    assert all(torch.equal(v, model.unet.state_dict()[k]) for k, v in shared.items())
    assert np.array_equal(pixels(run(model, library, "a cat")), pixels(plain))
    assert 'Lora hashes: "style: ' in styled.infotexts[0] and "Lora hashes" not in plain.infotexts[0]


def sd1_lora(path):
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"  # also a module of Flux's CLIP-L
    up, down = factors(32, 32, 3)
    tensors = {f"{n}.lora_{p}.weight": t.clone() for n in (name, te) for p, t in (("up", up), ("down", down))}
    return save_safetensors(tensors, path)


def test_a_lora_for_another_family_is_refused_naming_both(flux, sd3, tmp_path):
    sd1_path = sd1_lora(tmp_path / "loras" / "sd1style.safetensors")
    with pytest.raises(
        LoraError, match=r"sd1style.safetensors: a LoRA for SD1/SD2, but the loaded model is Flux"
    ):
        load_network(sd1_path, build_index(flux))
    flux_path, _ = lora_file(flux, FLUX_LAYERS, "kohya", tmp_path / "loras" / "fluxstyle.safetensors")
    with pytest.raises(LoraError, match=r"a LoRA for Flux, but the loaded model is SD1/SD2"):
        load_network(flux_path, build_index(tiny_loaded_model("sd1")))
    with pytest.raises(LoraError, match=r"a LoRA for Flux, but the loaded model is SD3"):
        load_network(flux_path, build_index(sd3))
    # through a job: a 4xx-mapped RequestError on the prompt naming both families
    library = LoraLibrary([tmp_path / "loras"])
    with pytest.raises(RequestError, match=r"SD1/SD2.*Flux") as error:
        run(flux, library, "a cat <lora:sd1style:1>")
    assert error.value.field == "prompt"


T5_Q = "encoder.block.0.layer.0.SelfAttention.q"


def test_a_te3_lora_patches_sd3s_t5_and_changes_the_image(sd3, tmp_path):
    t5 = sd3.text_encoders[2]
    before = {k: v.clone() for k, v in t5.state_dict().items()}
    rows, columns = t5.get_submodule(T5_Q).weight.shape
    up, down = factors(rows, columns, 11)
    name = f"lora_te3_{T5_Q.replace('.', '_')}"
    tensors = {
        f"{name}.lora_up.weight": up,
        f"{name}.lora_down.weight": down,
        f"{name}.alpha": torch.tensor(ALPHA),
    }
    path = save_safetensors(tensors, tmp_path / "loras" / "t5style.safetensors")
    network = load_network(path, build_index(sd3))
    assert not network.unmatched and set(network.modules) == {f"text_encoder_3.{T5_Q}"}
    with applied(LoraPatch([NetworkWeight(network, te=0.5)]), sd3):
        after = t5.state_dict()
        expected = before[f"{T5_Q}.weight"] + 0.5 * (ALPHA / RANK) * (up @ down)
        torch.testing.assert_close(after[f"{T5_Q}.weight"], expected, rtol=1e-5, atol=1e-6)
        assert [k for k, v in after.items() if not torch.equal(v, before[k])] == [f"{T5_Q}.weight"]
    assert all(torch.equal(v, t5.state_dict()[k]) for k, v in before.items())
    library = LoraLibrary([tmp_path / "loras"])
    plain = run(sd3, library, "a cat")
    assert not np.array_equal(pixels(run(sd3, library, "a cat <lora:t5style:1>")), pixels(plain))
    assert all(torch.equal(v, t5.state_dict()[k]) for k, v in before.items())
