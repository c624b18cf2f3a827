"""The LoRA core library on the tiny models: each type's patched weights against an independent dense
computation, key mapping (kohya diffusers/LDM names, SDXL te1/te2, PEFT), reversible patches, hashes and
the safe unpickler (textual-inversion files: tests/test_embedding_files.py)."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F

from sdwebui.models.lora import (
    DeltaCache,
    LoraError,
    LoraPatch,
    NetworkWeight,
    applied,
    autov3_hash,
    build_index,
    load_network,
    read_safetensors_metadata,
    resolve_module,
)
from tests.lora_fixtures import (
    SD1_LDM_NAMES,
    TE_TARGET,
    kohya_name,
    lora_factors,
    randn,
    save_code_pickle,
    save_safetensors,
    with_prefix,
)
from tests.tiny_models import tiny_loaded_model

LINEAR = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # Linear(32, 32)
CONV3 = "down_blocks.0.resnets.0.conv1"  # Conv2d(32, 32, 3)
WIDE = "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj"  # Linear(64 -> 512), with bias


@pytest.fixture(scope="module")
def sd1():
    return tiny_loaded_model("sd1")


@pytest.fixture(scope="module")
def sd1_index(sd1):
    return build_index(sd1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def weight_of(model, target: str) -> torch.Tensor:
    return resolve_module(model, target).weight.detach().clone()


def patched_weight(model, index, tmp_path, tensors, target, multiplier=1.0, name="net"):
    """Write the file, load it, apply it at ``multiplier``; the target's weight while patched."""
    network = load_network(save_safetensors(tensors, tmp_path / f"{name}.safetensors"), index)
    with applied(LoraPatch([NetworkWeight(network, te=multiplier, unet=multiplier)]), model):
        return weight_of(model, target)


def test_lora_linear_is_up_down_times_alpha_over_rank(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{LINEAR}")
    parts = lora_factors(before, rank=4, generator=gen())
    tensors = with_prefix(kohya_name(LINEAR), {**parts, "alpha": torch.tensor(2.0)})
    after = patched_weight(sd1, sd1_index, tmp_path, tensors, f"unet.{LINEAR}", multiplier=0.7)
    x = torch.randn(5, 32, generator=gen(1))
    # independent: the LoRA forward adds up(down(x)) * alpha / rank * multiplier
    lora_out = x @ parts["lora_down.weight"].T @ parts["lora_up.weight"].T * (2.0 / 4) * 0.7
    torch.testing.assert_close(x @ after.T, x @ before.T + lora_out, rtol=1e-5, atol=1e-6)
    assert torch.equal(weight_of(sd1, f"unet.{LINEAR}"), before)


def test_locon_3x3_conv_equals_down_then_up_convolution(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{CONV3}")
    parts = lora_factors(before, rank=3, generator=gen(2))
    tensors = with_prefix(kohya_name(CONV3), {**parts, "alpha": torch.tensor(3.0)})
    after = patched_weight(sd1, sd1_index, tmp_path, tensors, f"unet.{CONV3}")
    x = torch.randn(1, 32, 6, 6, generator=gen(3))
    expected = F.conv2d(x, before, padding=1) + F.conv2d(
        F.conv2d(x, parts["lora_down.weight"], padding=1), parts["lora_up.weight"]
    )
    torch.testing.assert_close(F.conv2d(x, after, padding=1), expected, rtol=1e-4, atol=1e-5)


def test_locon_tucker_mid_equals_three_convolutions(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{CONV3}")
    g = gen(4)
    down, mid, up = (
        randn(3, 32, 1, 1, generator=g),
        randn(3, 3, 3, 3, generator=g),
        randn(32, 3, 1, 1, generator=g),
    )
    tensors = with_prefix(
        kohya_name(CONV3), {"lora_down.weight": down, "lora_mid.weight": mid, "lora_up.weight": up}
    )
    after = patched_weight(sd1, sd1_index, tmp_path, tensors, f"unet.{CONV3}")
    x = torch.randn(1, 32, 6, 6, generator=gen(5))
    expected = F.conv2d(x, before, padding=1) + F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up)
    torch.testing.assert_close(F.conv2d(x, after, padding=1), expected, rtol=1e-4, atol=1e-5)


def test_loha_is_hadamard_product_of_two_low_rank_products(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{WIDE}")  # (512, 64)
    g = gen(6)
    w1a, w1b, w2a, w2b = (
        randn(512, 2, generator=g),
        randn(2, 64, generator=g),
        randn(512, 2, generator=g),
        randn(2, 64, generator=g),
    )
    parts = {
        "hada_w1_a": w1a,
        "hada_w1_b": w1b,
        "hada_w2_a": w2a,
        "hada_w2_b": w2b,
        "alpha": torch.tensor(1.0),
    }
    after = patched_weight(sd1, sd1_index, tmp_path, with_prefix(kohya_name(WIDE), parts), f"unet.{WIDE}")
    expected = before.clone()
    for o in range(
        512
    ):  # element by element: sum_r w1a[o,r] w1b[r,i] times the same for w2, times alpha/rank
        expected[o] += (w1a[o] @ w1b) * (w2a[o] @ w2b) * 0.5
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-6)


def test_loha_tucker_conv(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{CONV3}")
    g = gen(7)
    t1, w1a, w1b = randn(2, 2, 3, 3, generator=g), randn(2, 32, generator=g), randn(2, 32, generator=g)
    t2, w2a, w2b = randn(2, 2, 3, 3, generator=g), randn(2, 32, generator=g), randn(2, 32, generator=g)
    parts = {
        "hada_t1": t1,
        "hada_w1_a": w1a,
        "hada_w1_b": w1b,
        "hada_t2": t2,
        "hada_w2_a": w2a,
        "hada_w2_b": w2b,
    }
    after = patched_weight(sd1, sd1_index, tmp_path, with_prefix(kohya_name(CONV3), parts), f"unet.{CONV3}")

    def rebuild(t, a, b):  # W[o, i, k, l] = sum_pq t[p, q, k, l] a[p, o] b[q, i], one kernel tap at a time
        out = torch.zeros(32, 32, 3, 3)
        for k in range(3):
            for m in range(3):
                out[:, :, k, m] = a.T @ t[:, :, k, m] @ b
        return out

    torch.testing.assert_close(
        after, before + rebuild(t1, w1a, w1b) * rebuild(t2, w2a, w2b), rtol=1e-5, atol=1e-6
    )


def _kron_blocks(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    rows = [torch.cat([w1[i, j] * w2 for j in range(w1.shape[1])], dim=1) for i in range(w1.shape[0])]
    return torch.cat(rows, dim=0)


def test_lokr_full_and_low_rank_factors(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{WIDE}")  # (512, 64) = kron((8, 4), (64, 16))
    g = gen(8)
    w1 = randn(8, 4, generator=g)
    w2a, w2b = randn(64, 2, generator=g), randn(2, 16, generator=g)
    parts = {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": torch.tensor(1.0)}
    after = patched_weight(sd1, sd1_index, tmp_path, with_prefix(kohya_name(WIDE), parts), f"unet.{WIDE}")
    torch.testing.assert_close(after, before + _kron_blocks(w1, w2a @ w2b) * 0.5, rtol=1e-5, atol=1e-6)


def test_lokr_decomposed_w1_and_whole_w2_have_no_alpha_without_rank(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{LINEAR}")  # (32, 32) = kron((4, 4), (8, 8))
    g = gen(9)
    w1, w2 = randn(4, 4, generator=g), randn(8, 8, generator=g)
    tensors = with_prefix(kohya_name(LINEAR), {"lokr_w1": w1, "lokr_w2": w2, "alpha": torch.tensor(8.0)})
    after = patched_weight(sd1, sd1_index, tmp_path, tensors, f"unet.{LINEAR}")
    torch.testing.assert_close(after, before + _kron_blocks(w1, w2), rtol=1e-5, atol=1e-6)


def test_lokr_conv_kron_over_kernel(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{CONV3}")
    g = gen(10)
    w1, w2 = randn(4, 2, generator=g), randn(8, 16, 3, 3, generator=g)
    after = patched_weight(
        sd1,
        sd1_index,
        tmp_path,
        with_prefix(kohya_name(CONV3), {"lokr_w1": w1, "lokr_w2": w2}),
        f"unet.{CONV3}",
    )
    expected = torch.stack(
        [torch.stack([_kron_blocks(w1, w2[:, :, k, m]) for m in range(3)], -1) for k in range(3)], -2
    )
    torch.testing.assert_close(after, before + expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("on_input", [False, True])
def test_ia3_scales_output_or_input_channels(sd1, sd1_index, tmp_path, on_input):
    before = weight_of(sd1, f"unet.{WIDE}")  # (512, 64)
    scale = randn(64 if on_input else 512, generator=gen(11))
    parts = {"weight": scale, "on_input": torch.tensor(on_input)}
    after = patched_weight(
        sd1, sd1_index, tmp_path, with_prefix(kohya_name(WIDE), parts), f"unet.{WIDE}", 0.5
    )
    expected = before * (1 + 0.5 * (scale[None, :] if on_input else scale[:, None]))
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-6)


def test_full_diff_and_bias_diff(sd1, sd1_index, tmp_path):
    target = f"unet.{WIDE}"
    before, bias_before = weight_of(sd1, target), resolve_module(sd1, target).bias.detach().clone()
    g = gen(12)
    diff, diff_b = randn(512, 64, generator=g), randn(512, generator=g)
    network = load_network(
        save_safetensors(
            with_prefix(kohya_name(WIDE), {"diff": diff, "diff_b": diff_b}), tmp_path / "full.safetensors"
        ),
        sd1_index,
    )
    with applied(LoraPatch([NetworkWeight(network, unet=0.25)]), sd1):
        torch.testing.assert_close(weight_of(sd1, target), before + 0.25 * diff)
        torch.testing.assert_close(resolve_module(sd1, target).bias.detach(), bias_before + 0.25 * diff_b)
    assert torch.equal(weight_of(sd1, target), before)
    assert torch.equal(resolve_module(sd1, target).bias.detach(), bias_before)


def _dora_expected(before, delta, magnitude, per_output, multiplier):
    merged = before + delta
    if per_output:  # one norm per output row, over everything else
        norms = torch.stack([merged[o].pow(2).sum().sqrt() for o in range(merged.shape[0])])
        decomposed = merged * (magnitude.flatten() / norms).reshape(-1, *[1] * (merged.dim() - 1))
    else:  # one norm per input column, over outputs and kernel
        norms = torch.stack([merged[:, i].pow(2).sum().sqrt() for i in range(merged.shape[1])])
        decomposed = merged * (magnitude.flatten() / norms).reshape(1, -1, *[1] * (merged.dim() - 2))
    return before + multiplier * (decomposed - before)


@pytest.mark.parametrize("target,per_output", [(WIDE, False), (WIDE, True), (CONV3, False)])
def test_dora_weight_decomposition(sd1, sd1_index, tmp_path, target, per_output):
    before = weight_of(sd1, f"unet.{target}")
    parts = lora_factors(before, rank=2, generator=gen(13))
    out_ch, in_ch = before.shape[:2]
    ones = [1] * (before.dim() - 2)
    shape = (out_ch, 1, *ones) if per_output else (1, in_ch, *ones)
    magnitude = 1 + torch.rand(*shape, generator=gen(14))
    tensors = with_prefix(kohya_name(target), {**parts, "alpha": torch.tensor(1.0), "dora_scale": magnitude})
    after = patched_weight(sd1, sd1_index, tmp_path, tensors, f"unet.{target}", multiplier=0.6)
    up, down = parts["lora_up.weight"], parts["lora_down.weight"]
    delta = (up.flatten(1) @ down.flatten(1)).reshape(before.shape) * 0.5
    expected = _dora_expected(before, delta, magnitude, per_output, 0.6)
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-5)


def test_weight_zero_leaves_everything_bit_identical(sd1, sd1_index, tmp_path):
    before = {name: p.detach().clone() for name, p in sd1.unet.named_parameters()}
    parts = lora_factors(weight_of(sd1, f"unet.{LINEAR}"), rank=4, generator=gen(15))
    network = load_network(
        save_safetensors(with_prefix(kohya_name(LINEAR), parts), tmp_path / "z.safetensors"), sd1_index
    )
    with applied(LoraPatch([NetworkWeight(network, te=0.0, unet=0.0)]), sd1):
        assert all(torch.equal(p, before[name]) for name, p in sd1.unet.named_parameters())


def _state(model) -> dict[str, torch.Tensor]:
    modules = {"unet": model.unet, **{f"te{i}": te for i, te in enumerate(model.text_encoders)}}
    return {f"{k}.{n}": p.detach().clone() for k, m in modules.items() for n, p in m.named_parameters()}


def _assert_same_state(model, state) -> None:
    now = _state(model)
    changed = [k for k in state if not torch.equal(now[k], state[k])]
    assert not changed, f"not restored: {changed[:5]}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_patch_computes_in_fp32_and_restores_bit_exactly(tmp_path, dtype):
    model = tiny_loaded_model("sd1")
    model.unet.to(dtype)
    model.text_encoders[0].to(dtype)
    state = _state(model)
    index = build_index(model)
    parts = lora_factors(state[f"unet.{CONV3}.weight"].float(), rank=4, generator=gen(16))
    te_before = weight_of(model, f"text_encoder.{TE_TARGET}")
    te_parts = lora_factors(te_before.float(), rank=2, generator=gen(17))
    tensors = {
        **with_prefix(kohya_name(CONV3), {k: v.to(dtype) for k, v in parts.items()}),
        **with_prefix(kohya_name(TE_TARGET, "lora_te_"), te_parts),
    }
    network = load_network(save_safetensors(tensors, tmp_path / "half.safetensors"), index)
    undo = LoraPatch([NetworkWeight(network, te=0.5, unet=1.0)]).apply(model)
    patched = resolve_module(model, f"unet.{CONV3}").weight
    assert patched.dtype == dtype
    up, down = (parts[k].to(dtype).float() for k in ("lora_up.weight", "lora_down.weight"))
    expected = (
        state[f"unet.{CONV3}.weight"].float() + (up.flatten(1) @ down.flatten(1)).reshape(patched.shape)
    ).to(dtype)
    assert torch.equal(patched.detach(), expected)
    assert not torch.equal(resolve_module(model, f"text_encoder.{TE_TARGET}").weight, te_before)
    undo()
    _assert_same_state(model, state)


def test_undo_restores_after_an_exception_inside_and_during_apply(sd1, sd1_index, tmp_path):
    state = _state(sd1)
    parts = lora_factors(weight_of(sd1, f"unet.{LINEAR}"), rank=4, generator=gen(18))
    good = load_network(
        save_safetensors(with_prefix(kohya_name(LINEAR), parts), tmp_path / "g.safetensors"), sd1_index
    )
    with pytest.raises(RuntimeError, match="job failed"), applied(LoraPatch([NetworkWeight(good)]), sd1):
        assert not torch.equal(weight_of(sd1, f"unet.{LINEAR}"), state[f"unet.{LINEAR}.weight"])
        raise RuntimeError("job failed")
    _assert_same_state(sd1, state)
    # a second network whose factors do not fit its module fails mid-apply: the first one is rolled back
    bad_parts = {"lora_up.weight": torch.ones(7, 2), "lora_down.weight": torch.ones(2, 7)}
    bad = load_network(
        save_safetensors(with_prefix(kohya_name(CONV3), bad_parts), tmp_path / "b.safetensors"), sd1_index
    )
    with pytest.raises(
        LoraError, match=r"b\.safetensors: lora_unet_down_blocks_0_resnets_0_conv1: makes a \(7, 7\)"
    ):
        LoraPatch([NetworkWeight(good), NetworkWeight(bad)]).apply(sd1)
    _assert_same_state(sd1, state)


def test_kohya_ldm_and_diffusers_names_map_to_the_same_modules(sd1_index, tmp_path):
    g = gen(19)
    diffusers_style, ldm_style = {}, {}
    for path, ldm_path in SD1_LDM_NAMES.items():
        parts = {"lora_up.weight": randn(4, 2, generator=g), "lora_down.weight": randn(2, 4, generator=g)}
        diffusers_style.update(with_prefix(kohya_name(path), parts))
        ldm_style.update(with_prefix(kohya_name(ldm_path), parts))
    a = load_network(save_safetensors(diffusers_style, tmp_path / "a.safetensors"), sd1_index)
    b = load_network(save_safetensors(ldm_style, tmp_path / "b.safetensors"), sd1_index)
    expected = {f"unet.{path}" for path in SD1_LDM_NAMES}
    assert set(a.modules) == set(b.modules) == expected
    assert not a.unmatched and not b.unmatched
    assert {t: m.network_key for t, m in b.modules.items()} == {
        f"unet.{p}": kohya_name(ldm) for p, ldm in SD1_LDM_NAMES.items()
    }


def test_diffusers_converter_agrees_with_our_kohya_ldm_mapping(sd1, sd1_index):
    """diffusers' own kohya/SGM converters name the same U-Net modules for the LDM-style keys."""
    conversion = pytest.importorskip("diffusers.loaders.lora_conversion_utils")
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    # diffusers assumes output_blocks.N.1 is an attention; in an up block without one (tiny SD1's first)
    # the upsampler sits there, so it is left to the hand-written test above
    names = {p: ldm for p, ldm in SD1_LDM_NAMES.items() if p != "up_blocks.0.upsamplers.0.conv"}
    keys = {
        f"{kohya_name(ldm)}.{part}": torch.zeros(1)
        for ldm in names.values()
        for part in ("lora_down.weight", "lora_up.weight")
    }
    mapped = conversion._maybe_map_sgm_blocks_to_diffusers(dict(keys), sd1.unet.config)
    converted = convert_unet_state_dict_to_peft(
        conversion._convert_non_diffusers_lora_to_diffusers(mapped)[0]
    )
    theirs = {k.removesuffix(".lora_A.weight") for k in converted if k.endswith(".lora_A.weight")}
    ours = {sd1_index.resolve(kohya_name(ldm)) for ldm in names.values()}
    assert ours == theirs == {f"unet.{p}" for p in names}


def test_sdxl_te1_te2_and_ldm_unet_names():
    model = tiny_loaded_model("sdxl")
    index = build_index(model)
    assert index.resolve(kohya_name(TE_TARGET, "lora_te1_")) == f"text_encoder.{TE_TARGET}"
    assert index.resolve(kohya_name(TE_TARGET, "lora_te2_")) == f"text_encoder_2.{TE_TARGET}"
    assert index.resolve("lora_te2_text_projection") == "text_encoder_2.text_projection"
    # tiny SDXL: down_blocks.1 is the cross-attention block with two transformer layers
    ldm = "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k"
    assert index.resolve(ldm) == "unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k"
    assert index.resolve("lora_unet_label_emb_0_0") == "unet.add_embedding.linear_1"
    te1 = resolve_module(model, f"text_encoder.{TE_TARGET}").weight
    te2 = resolve_module(model, f"text_encoder_2.{TE_TARGET}").weight
    assert te1.shape == te2.shape == (32, 32) and te1 is not te2


def test_the_sdxl_refiner_takes_a_base_loras_te2_names():
    """The refiner's one text encoder is the base's second (OpenCLIP bigG): a base LoRA's lora_te2_ part is
    for it; its lora_te1_ part (CLIP-L) has no place there."""
    index = build_index(tiny_loaded_model("sdxl-refiner", seed=1))
    assert index.resolve(kohya_name(TE_TARGET, "lora_te2_")) == f"text_encoder.{TE_TARGET}"
    assert index.resolve(kohya_name(TE_TARGET, "lora_te1_")) is None


def test_peft_format_matches_kohya_format(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{LINEAR}")
    parts = lora_factors(before, rank=4, generator=gen(20))
    te_parts = lora_factors(weight_of(sd1, f"text_encoder.{TE_TARGET}"), rank=2, generator=gen(21))
    kohya = {
        **with_prefix(kohya_name(LINEAR), parts),
        **with_prefix(kohya_name(TE_TARGET, "lora_te_"), te_parts),
    }
    peft = {
        f"unet.{LINEAR}.lora_A.weight": parts["lora_down.weight"],
        f"unet.{LINEAR}.lora_B.weight": parts["lora_up.weight"],
        f"text_encoder.{TE_TARGET}.lora_A.weight": te_parts["lora_down.weight"],
        f"text_encoder.{TE_TARGET}.lora_B.weight": te_parts["lora_up.weight"],
    }
    results = []
    for name, tensors in (("kohya", kohya), ("peft", peft)):
        network = load_network(save_safetensors(tensors, tmp_path / f"{name}.safetensors"), sd1_index)
        assert set(network.modules) == {f"unet.{LINEAR}", f"text_encoder.{TE_TARGET}"}
        with applied(LoraPatch([NetworkWeight(network)]), sd1):
            results.append((weight_of(sd1, f"unet.{LINEAR}"), weight_of(sd1, f"text_encoder.{TE_TARGET}")))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert not torch.equal(results[0][0], before)


def test_same_patched_unet_as_diffusers_fuse_lora(tmp_path):
    try:
        import peft  # noqa: F401
    except ImportError:
        pytest.skip(
            "peft is not installed: diffusers' load_lora_weights/fuse_lora need it (not a dependency)"
        )
    import diffusers

    from tests.tiny_models import write_diffusers_folder

    model = tiny_loaded_model("sd1")
    parts = lora_factors(weight_of(model, f"unet.{LINEAR}"), rank=4, generator=gen(22))
    path = save_safetensors(
        with_prefix(kohya_name(LINEAR), {**parts, "alpha": torch.tensor(2.0)}), tmp_path / "l.safetensors"
    )
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        str(write_diffusers_folder(model, tmp_path / "m")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=0.8)
    with applied(LoraPatch([NetworkWeight(load_network(path, build_index(model)), unet=0.8)]), model):
        torch.testing.assert_close(
            weight_of(model, f"unet.{LINEAR}"), pipe.unet.get_submodule(LINEAR).weight.detach()
        )


@pytest.mark.parametrize("room", [True, False])
def test_changing_only_the_multiplier_rescales_without_the_file(sd1, sd1_index, tmp_path, room):
    """On the CPU a plain LoRA's dense difference is cached while the cache has room (the next apply re-scales
    it); with no room it is rebuilt from the factors when needed. The same weights either way."""
    before = weight_of(sd1, f"unet.{CONV3}")
    parts = lora_factors(before, rank=4, generator=gen(23))
    path = save_safetensors(with_prefix(kohya_name(CONV3), parts), tmp_path / "c.safetensors")
    network = load_network(path, sd1_index)
    cache = DeltaCache(limit_bytes=(2 << 30) if room else 1000)
    with applied(LoraPatch([NetworkWeight(network, unet=1.0)], cache), sd1):
        full = weight_of(sd1, f"unet.{CONV3}") - before
    path.unlink()  # the second apply must not need the file
    with applied(LoraPatch([NetworkWeight(network, unet=0.3)], cache), sd1):
        torch.testing.assert_close(weight_of(sd1, f"unet.{CONV3}"), before + 0.3 * full, rtol=1e-5, atol=1e-6)
    assert cache.bytes == (before.numel() * 4 if room else 0)
    # with room: undone from a copy; with none (not even for the copy): by subtraction, rebuilt each time
    assert cache.misses == (1 if room else 4) and cache.hits == (1 if room else 0)
    assert torch.equal(weight_of(sd1, f"unet.{CONV3}"), before)


def _dora_file(sd1, targets, tmp_path, seed=30):
    tensors = {}
    for i, target in enumerate(targets):
        weight = weight_of(sd1, f"unet.{target}")
        parts = lora_factors(weight, 2, gen(seed + i))
        magnitude = 1 + torch.rand(
            1, weight.shape[1], *[1] * (weight.dim() - 2), generator=gen(seed + 50 + i)
        )
        tensors.update(with_prefix(kohya_name(target), {**parts, "dora_scale": magnitude}))
    return save_safetensors(tensors, tmp_path / f"dora{seed}.safetensors")


def test_a_weight_dependent_difference_is_cached_and_rescaled(sd1, sd1_index, tmp_path):
    network = load_network(_dora_file(sd1, [CONV3], tmp_path), sd1_index)
    before = weight_of(sd1, f"unet.{CONV3}")
    cache = DeltaCache()
    with applied(LoraPatch([NetworkWeight(network, unet=1.0)], cache), sd1):
        full = weight_of(sd1, f"unet.{CONV3}") - before
    with applied(LoraPatch([NetworkWeight(network, unet=0.3)], cache), sd1):
        torch.testing.assert_close(weight_of(sd1, f"unet.{CONV3}"), before + 0.3 * full, rtol=1e-5, atol=1e-6)
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    assert cache.bytes == before.numel() * 4
    assert torch.equal(weight_of(sd1, f"unet.{CONV3}"), before)


def test_delta_cache_is_bounded_least_recently_used_first(sd1, sd1_index, tmp_path):
    targets = [LINEAR, WIDE, CONV3]
    network = load_network(_dora_file(sd1, targets, tmp_path), sd1_index)
    limit = (32 * 32 + 512 * 64) * 4 + 10  # LINEAR and WIDE fit; CONV3 (32*32*9) pushes LINEAR out
    cache = DeltaCache(limit_bytes=limit)
    LoraPatch([NetworkWeight(network)], cache).apply(sd1)()
    assert cache.bytes <= limit
    assert {key.target for key in cache._entries} <= {f"unet.{t}" for t in targets}
    assert f"unet.{LINEAR}" not in {key.target for key in cache._entries}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("size", [0.3, 3.0])
def test_undo_by_subtraction_is_bit_exact_and_keeps_no_copy(dtype, size, tmp_path):
    """Big differences (another binade than the weight) make (W + d) - d inexact for many elements; the
    sparse correction writes those back; for usual ones the undo holds far less than a copy of the weights."""
    model = tiny_loaded_model("sd1", seed=3)
    model.unet.to(dtype)
    index = build_index(model)
    targets = [LINEAR, WIDE, CONV3]
    tensors = {}
    for i, target in enumerate(targets):
        parts = lora_factors(weight_of(model, f"unet.{target}"), 4, gen(80 + i))
        tensors.update(with_prefix(kohya_name(target), {k: v * size for k, v in parts.items()}))
    network = load_network(save_safetensors(tensors, tmp_path / "big.safetensors"), index)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    for multiplier in (1.0, 0.5, -0.7):
        undo = LoraPatch([NetworkWeight(network, unet=multiplier)], by_subtraction=True).apply(model)
        patched = weight_of(model, f"unet.{WIDE}").float()
        expected = before[f"{WIDE}.weight"].float() + multiplier * (
            tensors[f"{kohya_name(WIDE)}.lora_up.weight"] @ tensors[f"{kohya_name(WIDE)}.lora_down.weight"]
        )
        # within a rounding of the dtype (the add scales the difference in one fused fp32 step)
        rtol = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
        torch.testing.assert_close(patched, expected.to(dtype).float(), rtol=rtol, atol=1e-6)
        held = undo.nbytes  # type: ignore[attr-defined]
        weights = sum(before[f"{t}.weight"].nbytes for t in targets)
        assert held <= weights and (size > 1 or held < weights / 4), (held, weights)  # usual: far from a copy
        undo()
        for key, value in before.items():
            assert torch.equal(value.view(torch.uint8), model.unet.state_dict()[key].view(torch.uint8)), key


def test_two_networks_add_their_differences(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{LINEAR}")
    a = lora_factors(before, 2, gen(40))
    b = lora_factors(before, 3, gen(41))
    na = load_network(
        save_safetensors(with_prefix(kohya_name(LINEAR), a), tmp_path / "a.safetensors"), sd1_index
    )
    nb = load_network(
        save_safetensors(with_prefix(kohya_name(LINEAR), b), tmp_path / "b.safetensors"), sd1_index
    )
    with applied(LoraPatch([NetworkWeight(na, unet=0.5), NetworkWeight(nb, unet=-1.0)]), sd1):
        got = weight_of(sd1, f"unet.{LINEAR}")
    expected = (
        before
        + 0.5 * a["lora_up.weight"] @ a["lora_down.weight"]
        - b["lora_up.weight"] @ b["lora_down.weight"]
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_metadata_alias_and_autov3_hash(sd1_index, tmp_path):
    parts = {"lora_up.weight": torch.ones(32, 2), "lora_down.weight": torch.ones(2, 32)}
    metadata = {"ss_output_name": "my_style", "ss_network_dim": "2", "other": "x"}
    path = save_safetensors(
        with_prefix(kohya_name(LINEAR), parts), tmp_path / "file_name.safetensors", metadata
    )
    network = load_network(path, sd1_index)
    raw = path.read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header_length])["__metadata__"] == metadata  # the header is where we think
    expected = hashlib.sha256(raw[8 + header_length :]).hexdigest()
    assert network.hash == autov3_hash(path) == expected
    assert network.shorthash == expected[:12]
    assert (network.name, network.alias) == ("file_name", "my_style")
    assert network.training_metadata == {"ss_output_name": "my_style", "ss_network_dim": "2"}
    # the hash ignores metadata: the same tensors with other metadata hash the same
    other = save_safetensors(with_prefix(kohya_name(LINEAR), parts), tmp_path / "o.safetensors", {"a": "b"})
    assert autov3_hash(other) == expected


def test_pt_lora_reads_through_the_safe_unpickler(sd1_index, tmp_path):
    parts = lora_factors(torch.zeros(32, 32), 2, gen(50))
    path = tmp_path / "plain.pt"
    torch.save(with_prefix(kohya_name(LINEAR), parts), path)
    network = load_network(path, sd1_index)
    assert set(network.modules) == {f"unet.{LINEAR}"}
    assert network.hash == hashlib.sha256(path.read_bytes()).hexdigest()


def test_pt_with_code_running_pickle_is_refused_and_not_run(sd1_index, tmp_path):
    marker = tmp_path / "ran.txt"
    path = save_code_pickle(tmp_path / "evil.pt", marker)
    with pytest.raises(LoraError, match=r"evil\.pt.*refused"):
        load_network(path, sd1_index)
    assert not marker.exists()


def test_file_matching_nothing_is_an_error_naming_it(sd1_index, tmp_path):
    path = save_safetensors(
        {"lora_unet_no_such_block.lora_up.weight": torch.ones(2, 2)}, tmp_path / "other.safetensors"
    )
    with pytest.raises(LoraError, match=r"other\.safetensors: no key matches"):
        load_network(path, sd1_index)


def test_unsupported_parts_are_named_not_ignored(sd1_index, tmp_path):
    tensors = with_prefix(
        kohya_name(LINEAR),
        {
            "lora_up.weight": torch.ones(32, 4),
            "lora_down.weight": torch.ones(4, 32),
            "lora_gate.weight": torch.ones(4),
        },
    )
    with pytest.raises(LoraError, match="unsupported network parts lora_gate.weight"):
        load_network(save_safetensors(tensors, tmp_path / "gated.safetensors"), sd1_index)


def test_scale_follows_alpha_over_rank_exactly(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{LINEAR}")
    parts = {"lora_up.weight": torch.eye(32)[:, :3], "lora_down.weight": torch.eye(32)[:3]}
    tensors = with_prefix(kohya_name(LINEAR), {**parts, "alpha": torch.tensor(1.5)})
    after = patched_weight(sd1, sd1_index, tmp_path, tensors, f"unet.{LINEAR}")
    diagonal = torch.diagonal(after - before)
    assert math.isclose(diagonal[0].item(), 0.5, rel_tol=1e-6) and torch.allclose(
        diagonal[3:], torch.zeros(29)
    )


def test_lokr_tucker_w2_on_a_conv(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{CONV3}")  # (32, 32, 3, 3) = kron((4, 2, 1, 1), (8, 16, 3, 3))
    g = gen(60)
    w1, t2, w2a, w2b = (
        randn(4, 2, generator=g),
        randn(2, 2, 3, 3, generator=g),
        randn(2, 8, generator=g),
        randn(2, 16, generator=g),
    )
    parts = {"lokr_w1": w1, "lokr_t2": t2, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": torch.tensor(1.0)}
    after = patched_weight(sd1, sd1_index, tmp_path, with_prefix(kohya_name(CONV3), parts), f"unet.{CONV3}")
    w2 = torch.zeros(8, 16, 3, 3)
    for k in range(3):
        for m in range(3):
            w2[:, :, k, m] = w2a.T @ t2[:, :, k, m] @ w2b
    expected = torch.stack(
        [torch.stack([_kron_blocks(w1, w2[:, :, k, m]) for m in range(3)], -1) for k in range(3)], -2
    )
    torch.testing.assert_close(after, before + expected * 0.5, rtol=1e-5, atol=1e-6)


def test_peft_dora_magnitude_is_per_output_row(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{WIDE}")
    parts = lora_factors(before, rank=2, generator=gen(61))
    magnitude = 1 + torch.rand(512, generator=gen(62))
    tensors = {
        f"unet.{WIDE}.lora_A.weight": parts["lora_down.weight"],
        f"unet.{WIDE}.lora_B.weight": parts["lora_up.weight"],
        f"unet.{WIDE}.lora_magnitude_vector": magnitude,
    }
    after = patched_weight(sd1, sd1_index, tmp_path, tensors, f"unet.{WIDE}")
    delta = parts["lora_up.weight"] @ parts["lora_down.weight"]
    torch.testing.assert_close(
        after, _dora_expected(before, delta, magnitude, True, 1.0), rtol=1e-4, atol=1e-5
    )


def test_old_diffusers_attention_processor_names(sd1_index, tmp_path):
    attention = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    tensors = {
        f"unet.{attention}.processor.to_out_lora.down.weight": torch.ones(2, 32),
        f"unet.{attention}.processor.to_out_lora.up.weight": torch.ones(32, 2),
        f"text_encoder.{TE_TARGET}.lora_linear_layer.down.weight": torch.ones(2, 32),
        f"text_encoder.{TE_TARGET}.lora_linear_layer.up.weight": torch.ones(32, 2),
    }
    network = load_network(save_safetensors(tensors, tmp_path / "old.safetensors"), sd1_index)
    assert set(network.modules) == {f"unet.{attention}.to_out.0", f"text_encoder.{TE_TARGET}"}


def test_sdxl_te2_lora_patches_the_second_encoder_only(tmp_path):
    model = tiny_loaded_model("sdxl")
    te1_before = weight_of(model, f"text_encoder.{TE_TARGET}")
    te2_before = weight_of(model, f"text_encoder_2.{TE_TARGET}")
    parts = lora_factors(te2_before, rank=2, generator=gen(63))
    path = save_safetensors(
        with_prefix(kohya_name(TE_TARGET, "lora_te2_"), parts), tmp_path / "xl.safetensors"
    )
    network = load_network(path, build_index(model))
    with applied(LoraPatch([NetworkWeight(network, te=0.5, unet=0.0)]), model):
        assert torch.equal(weight_of(model, f"text_encoder.{TE_TARGET}"), te1_before)
        expected = te2_before + 0.5 * parts["lora_up.weight"] @ parts["lora_down.weight"]
        torch.testing.assert_close(weight_of(model, f"text_encoder_2.{TE_TARGET}"), expected)
    assert torch.equal(
        model.text_encoders[1].text_model.encoder.layers[0].self_attn.q_proj.weight, te2_before
    )


def test_precomputed_kohya_hash_in_metadata_wins(sd1_index, tmp_path):
    tensors = with_prefix(
        kohya_name(LINEAR), {"lora_up.weight": torch.ones(32, 1), "lora_down.weight": torch.ones(1, 32)}
    )
    path = save_safetensors(tensors, tmp_path / "h.safetensors", {"sshs_model_hash": "ab" * 32})
    assert load_network(path, sd1_index).shorthash == "ab" * 6


def test_a_rewritten_file_is_a_new_cache_entry(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{LINEAR}")
    cache = DeltaCache()
    results = []
    for seed in (70, 71):
        path = _dora_file(sd1, [LINEAR], tmp_path, seed=seed).rename(tmp_path / "r.safetensors")
        with applied(LoraPatch([NetworkWeight(load_network(path, sd1_index))], cache), sd1):
            results.append(weight_of(sd1, f"unet.{LINEAR}") - before)
    assert not torch.allclose(results[0], results[1])
    assert cache.misses == 2 and len(cache) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_patch_on_cuda_matches_the_cpu_computation_and_restores(tmp_path):
    cpu_model = tiny_loaded_model("sd1")
    model = tiny_loaded_model("sd1")
    model.unet.to("cuda", torch.float16)
    state = _state(model)
    parts = lora_factors(weight_of(cpu_model, f"unet.{CONV3}"), rank=4, generator=gen(90))
    dora = {**parts, "dora_scale": 1 + torch.rand(1, 32, 1, 1, generator=gen(91))}
    path = save_safetensors(with_prefix(kohya_name(CONV3), dora), tmp_path / "cuda.safetensors")
    network = load_network(path, build_index(model))
    undo = LoraPatch([NetworkWeight(network, unet=0.8)]).apply(model)
    got = resolve_module(model, f"unet.{CONV3}").weight.detach()
    assert got.device.type == "cuda" and got.dtype == torch.float16
    base = state[f"unet.{CONV3}.weight"].float().cpu()
    delta = (parts["lora_up.weight"].flatten(1) @ parts["lora_down.weight"].flatten(1)).reshape(base.shape)
    expected = _dora_expected(base, delta, dora["dora_scale"], False, 0.8).half()
    torch.testing.assert_close(got.cpu(), expected, rtol=2e-3, atol=2e-3)
    undo()
    _assert_same_state(model, state)


def test_lycoris_norm_layer_weight_and_bias(sd1, sd1_index, tmp_path):
    norm = "down_blocks.0.attentions.0.norm"  # GroupNorm(8, 32)
    before = weight_of(sd1, f"unet.{norm}")
    bias_before = resolve_module(sd1, f"unet.{norm}").bias.detach().clone()
    w_norm, b_norm = randn(32, generator=gen(95)), randn(32, generator=gen(96))
    path = save_safetensors(
        with_prefix(kohya_name(norm), {"w_norm": w_norm, "b_norm": b_norm}), tmp_path / "n.safetensors"
    )
    with applied(LoraPatch([NetworkWeight(load_network(path, sd1_index), unet=0.5)]), sd1):
        torch.testing.assert_close(weight_of(sd1, f"unet.{norm}"), before + 0.5 * w_norm)
        torch.testing.assert_close(
            resolve_module(sd1, f"unet.{norm}").bias.detach(), bias_before + 0.5 * b_norm
        )
    assert torch.equal(weight_of(sd1, f"unet.{norm}"), before)


def test_sd2_linear_proj_in_takes_conv_shaped_factors_and_sd1_conv_takes_linear_ones(
    sd1, sd1_index, tmp_path
):
    sd2 = tiny_loaded_model("sd2")
    proj_in = "down_blocks.0.attentions.0.proj_in"
    g = gen(97)
    up, down = randn(32, 2, generator=g), randn(2, 32, generator=g)
    conv_shaped = {"lora_up.weight": up[:, :, None, None], "lora_down.weight": down[:, :, None, None]}
    linear_shaped = {"lora_up.weight": up, "lora_down.weight": down}
    for model, index, parts, name in (
        (sd2, build_index(sd2), conv_shaped, "sd2"),
        (sd1, sd1_index, linear_shaped, "sd1"),
    ):
        before = weight_of(model, f"unet.{proj_in}")
        tensors = with_prefix("lora_unet_input_blocks_1_1_proj_in", parts)
        after = patched_weight(model, index, tmp_path, tensors, f"unet.{proj_in}", name=name)
        assert after.shape == before.shape
        torch.testing.assert_close(after, before + (up @ down).reshape(before.shape))


def test_safetensors_metadata_is_read_without_tensors(tmp_path):
    metadata = {"ss_output_name": "a", "ss_tag_frequency": json.dumps({"x": {"cat": 3}})}
    path = save_safetensors({"w": torch.ones(3)}, tmp_path / "m.safetensors", metadata)
    assert read_safetensors_metadata(path) == metadata
    (tmp_path / "bad.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(LoraError, match=r"bad\.safetensors: not a readable safetensors file"):
        read_safetensors_metadata(tmp_path / "bad.safetensors")
