"""depth_midas / normal_midas from a tiny random MiDaS DPT-Hybrid saved in the published file's original
(timm) key layout under models/ControlNetAnnotators/midas/dpt_hybrid-midas-501f0c75.pt."""

from __future__ import annotations

import base64
import io
import re
import shutil

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from transformers import DPTConfig

from sdwebui.engine.controlnet.preprocessors import (
    BrokenAnnotatorError,
    PreprocessParams,
    find,
    midas,
    module_aliases,
    run_preprocessor,
)
from tests.api_server import start_server, write_tiny_checkpoints
from tests.test_controlnet_annotators import check_map, check_missing, random_state, save, shapes

# transformers' names -> the original ones (written out here independently of midas.py's table)
_ORIGINAL = (
    (r"dpt\.embeddings\.backbone\.bit\.embedder\.convolution\.", "pretrained.model.patch_embed.backbone.stem.conv."),
    (r"dpt\.embeddings\.backbone\.bit\.embedder\.norm\.", "pretrained.model.patch_embed.backbone.stem.norm."),
    (r"dpt\.embeddings\.backbone\.bit\.encoder\.stages\.(\d+)\.layers\.", r"pretrained.model.patch_embed.backbone.stages.\1.blocks."),
    (r"dpt\.embeddings\.projection\.", "pretrained.model.patch_embed.proj."),
    (r"dpt\.embeddings\.cls_token", "pretrained.model.cls_token"),
    (r"dpt\.embeddings\.position_embeddings", "pretrained.model.pos_embed"),
    (r"dpt\.encoder\.layer\.(\d+)\.layernorm_before\.", r"pretrained.model.blocks.\1.norm1."),
    (r"dpt\.encoder\.layer\.(\d+)\.layernorm_after\.", r"pretrained.model.blocks.\1.norm2."),
    (r"dpt\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"pretrained.model.blocks.\1.attn.proj."),
    (r"dpt\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"pretrained.model.blocks.\1.mlp.fc1."),
    (r"dpt\.encoder\.layer\.(\d+)\.output\.dense\.", r"pretrained.model.blocks.\1.mlp.fc2."),
    (r"dpt\.layernorm\.", "pretrained.model.norm."),
    (r"neck\.reassemble_stage\.readout_projects\.(\d)\.0\.", lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.0.project.0."),
    (r"neck\.reassemble_stage\.layers\.(\d)\.projection\.", lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.3."),
    (r"neck\.reassemble_stage\.layers\.(\d)\.resize\.", lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.4."),
    (r"neck\.convs\.(\d)\.", lambda m: f"scratch.layer{int(m[1]) + 1}_rn."),
    (r"neck\.fusion_stage\.layers\.(\d)\.projection\.", lambda m: f"scratch.refinenet{4 - int(m[1])}.out_conv."),
    (r"neck\.fusion_stage\.layers\.(\d)\.residual_layer(\d)\.convolution(\d)\.",
     lambda m: f"scratch.refinenet{4 - int(m[1])}.resConfUnit{m[2]}.conv{m[3]}."),
    (r"head\.head\.", "scratch.output_conv."),
)  # fmt: skip


def original_layout(net: midas.MidasHybrid) -> dict[str, torch.Tensor]:
    """The network's state as the published file keys it: timm names, one qkv per block, the classifier."""
    state, qkv = {}, {}
    for key, value in net.model.state_dict().items():
        split = re.fullmatch(
            r"dpt\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(.*)", key
        )
        if split:
            qkv.setdefault((split[1], split[3]), {})[split[2]] = value
            continue
        pattern, replacement = next((p, r) for p, r in _ORIGINAL if re.match(p, key))
        state[re.sub(pattern, replacement, key, count=1)] = value
    for (block, leaf), parts in qkv.items():
        state[f"pretrained.model.blocks.{block}.attn.qkv.{leaf}"] = torch.cat(
            [parts[p] for p in ("query", "key", "value")]
        )
    width = state["pretrained.model.cls_token"].shape[-1]
    return state | {
        "pretrained.model.head.weight": torch.zeros(3, width),
        "pretrained.model.head.bias": torch.zeros(3),
    }


def tiny_hybrid() -> midas.MidasHybrid:
    """ViT 2 x 64 on a one-block-per-stage BiT of 128 (GroupNorm's 32 groups need >= 32 channels inside)."""
    sizes = midas.HybridSizes(hidden=64, blocks=2, intermediate=128, grid=4, stem=32, widths=(128, 128, 128),
                              depths=(1, 1, 1), reassembled=(64, 64), fusion=32)  # fmt: skip
    return midas.MidasHybrid(sizes.config())


@pytest.fixture(scope="module")
def annotators(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ControlNetAnnotators")
    torch.manual_seed(0)
    net = tiny_hybrid()
    random_state(net.model, std=None)  # PyTorch's initialisation: a deep random stack stays alive
    save(original_layout(net), folder, midas.WEIGHTS)
    return folder


def test_the_published_layout_is_what_the_file_converter_fills():
    with torch.device("meta"):  # the published ViT-B / ResNet-50 network, without allocating it
        published = midas.MidasHybrid(DPTConfig(is_hybrid=True, reassemble_factors=[1, 1, 1, 0.5],
                                                neck_hidden_sizes=[256, 512, 768, 768], readout_type="project"))  # fmt: skip
    state = original_layout(published)
    assert len(state) == 368  # what the original model holds (its ViT classifier among them)
    assert {"pretrained.model.patch_embed.backbone.stem.conv.weight", "pretrained.model.patch_embed.proj.weight",
            "pretrained.model.patch_embed.backbone.stages.2.blocks.8.norm3.bias", "pretrained.model.blocks.11.attn.qkv.weight",
            "pretrained.act_postprocess3.0.project.0.weight", "pretrained.act_postprocess4.4.weight",
            "scratch.layer4_rn.weight", "scratch.refinenet4.resConfUnit1.conv1.weight",
            "scratch.output_conv.4.bias"} <= set(state)  # fmt: skip
    assert set(midas.to_transformers(state)) == set(published.model.state_dict())
    assert midas.HybridSizes.of(state) == midas.HybridSizes()  # the sizes read from the file
    config = midas.HybridSizes().config()
    assert (config.num_attention_heads, config.image_size, config.backbone_out_indices[2:]) == (
        12,
        384,
        [8, 11],
    )


def test_depth_midas(annotators, tmp_path):
    check_missing("depth_midas", tmp_path, midas.WEIGHTS)
    assert module_aliases(annotators)["depth"] == "depth_midas"
    assert [s.label for s in find("depth_midas").sliders()] == ["Resolution"]
    depth = check_map("depth_midas", annotators, width=96)[:, :, 0]
    assert depth.min() <= 2 and depth.max() >= 253  # spread over 0..255 per image
    large = np.asarray(
        run_preprocessor("depth_midas", shapes(), PreprocessParams(resolution=128), annotator_dir=annotators)
    )
    assert large.shape == (128, 192, 3)


def test_normal_midas_flattens_the_background(annotators, tmp_path):
    check_missing("normal_midas", tmp_path, midas.WEIGHTS)
    assert find("normal_midas").defaults().threshold_a == 0.4
    normal = check_map("normal_midas", annotators, channels_differ=True)
    assert (normal[:, :, 0] >= 127).all()  # z (red after the BGR flip) faces the viewer
    params = PreprocessParams(resolution=64, threshold_a=1.01)  # everything is background: flat (0, 0, 1)
    flat = np.asarray(run_preprocessor("normal_midas", shapes(), params, annotator_dir=annotators))
    assert (flat == [255, 127, 127]).all(axis=2).all()


def test_a_file_missing_a_tensor_names_the_file(tmp_path):
    net = tiny_hybrid()
    state = original_layout(net)
    del state["scratch.refinenet2.out_conv.weight"]
    save(state, tmp_path, midas.WEIGHTS)
    with pytest.raises(BrokenAnnotatorError, match="dpt_hybrid-midas-501f0c75.pt do not load"):
        run_preprocessor(
            "depth_midas", Image.new("RGB", (64, 64)), PreprocessParams(resolution=64), annotator_dir=tmp_path
        )


@pytest.mark.slow  # a server of its own (~1 min on the shared machine)
def test_detect_over_http(annotators, tmp_path):
    write_tiny_checkpoints(tmp_path, ("alpha",))
    (tmp_path / "models" / "ControlNetAnnotators" / "midas").mkdir(parents=True)
    shutil.copy(annotators / midas.WEIGHTS, tmp_path / "models" / "ControlNetAnnotators" / midas.WEIGHTS)
    buffer = io.BytesIO()
    shapes().save(buffer, format="PNG")
    body = {"controlnet_module": "depth_midas", "controlnet_input_images": [base64.b64encode(buffer.getvalue()).decode()],
            "controlnet_processor_res": 64}  # fmt: skip
    with start_server(tmp_path) as server:
        r = requests.post(server.url + "/controlnet/detect", json=body, timeout=120)
    assert r.status_code == 200, r.text
    depth = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    expected = run_preprocessor(
        "depth_midas", shapes(), PreprocessParams(resolution=64), annotator_dir=annotators
    )
    assert depth.size == (96, 64) and np.array_equal(np.asarray(depth.convert("RGB")), np.asarray(expected))
