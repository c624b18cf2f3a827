"""Model-based preprocessors from random weights of their very architectures, saved under the extension's
file names in a models/ControlNetAnnotators folder: each runs, gives a map of the right size that depends on
the image, and without its file answers with the error naming it."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image, ImageDraw

from sdwebui.engine.controlnet.preprocessors import (
    BrokenAnnotatorError,
    MissingAnnotatorError,
    PreprocessParams,
    anime_face,
    depth_anything,
    efficientnet,
    lineart,
    mlsd,
    module_aliases,
    module_names,
    normal_bae,
    openpose,
    openpose_net,
    pidinet,
    run_preprocessor,
    vit_dpt,
)


def shapes(width: int = 96, height: int = 64) -> Image.Image:
    image = Image.new("RGB", (width, height), (20, 30, 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle([12, 10, 44, 50], fill=(240, 240, 220))
    draw.line([(50, 5), (90, 60)], fill=(200, 40, 40), width=3)
    return image


def save(state: dict[str, torch.Tensor], folder, relative: str, wrap: str | None = None) -> None:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({wrap: state} if wrap else state, path)


def random_state(
    net: torch.nn.Module, seed: int = 0, prefix: str = "", std: float | None = 0.2, unit_norms: bool = False
) -> dict[str, torch.Tensor]:
    """The network's parameters drawn anew (normal with `std`; None: PyTorch's default initialisation);
    `unit_norms`: batch norms left at scale 1 (deep random stacks otherwise shrink the signal to nothing)."""
    torch.manual_seed(seed)
    for module in net.modules():
        if std is None and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for p in net.parameters() if std is not None else ():
        torch.nn.init.normal_(p, std=std)
    for module in net.modules() if unit_norms else ():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_parameters()
    return {prefix + k: v for k, v in net.state_dict().items()}


def check_map(
    name: str, folder, resolution: int = 64, channels_differ: bool = False, width: int = 96
) -> np.ndarray:
    """The map of `shapes(width, 64)` at `resolution` (shortest side): RGB, the image's aspect, not flat,
    and not the map of a flat grey image."""
    params = PreprocessParams(resolution=resolution)
    result = run_preprocessor(name, shapes(width, 64), params, annotator_dir=folder)
    assert result.mode == "RGB" and result.size == (resolution * width // 64, resolution)
    array = np.asarray(result)
    assert array.dtype == np.uint8 and array.std() > 0
    other = run_preprocessor(name, Image.new("RGB", (width, 64), "gray"), params, annotator_dir=folder)
    assert not np.array_equal(np.asarray(other), array)  # the map is of the image
    if not channels_differ:
        assert np.array_equal(array[:, :, 0], array[:, :, 2])  # a grey map
    return array


def check_missing(name: str, folder, relative: str) -> None:
    with pytest.raises(MissingAnnotatorError, match=f"models/ControlNetAnnotators/{relative}"):
        run_preprocessor(name, shapes(), PreprocessParams(resolution=64), annotator_dir=folder)
    assert name not in module_names(folder) and name not in module_aliases(folder).values()


def test_lineart_realistic_coarse_and_anime(tmp_path):
    for name, relative in (
        ("lineart_realistic", lineart.REALISTIC),
        ("lineart_coarse", lineart.COARSE),
        ("lineart_anime", lineart.ANIME),
    ):
        check_missing(name, tmp_path, relative)
    realistic = lineart.LineGenerator()  # the published width: 64, three residual blocks
    assert {"model0.1.weight", "model1.3.bias", "model2.2.conv_block.5.weight", "model3.0.weight",
            "model4.1.weight"} <= set(realistic.state_dict())  # fmt: skip
    save(random_state(realistic), tmp_path, lineart.REALISTIC)
    save(random_state(lineart.LineGenerator(width=8, residual_blocks=2), seed=1), tmp_path, lineart.COARSE)
    # netG.pth was saved from nn.DataParallel: its keys start with "module."
    anime = lineart.AnimeLineGenerator(width=4)
    save(random_state(anime, prefix="module."), tmp_path, lineart.ANIME)
    assert {"model.model.0.weight", "model.model.1.model.3.model.3.model.3.model.1.weight"} <= set(
        anime.state_dict()
    )
    assert {"lineart", "lineart_coarse", "lineart_anime"} <= set(module_names(tmp_path))
    fine = check_map("lineart", tmp_path)
    coarse = check_map("lineart_coarse", tmp_path)
    assert not np.array_equal(fine, coarse)  # each module reads its own file
    check_map("lineart_anime", tmp_path)


def test_a_file_that_is_not_the_annotator_is_a_clear_error(tmp_path):
    save({"something": torch.zeros(2)}, tmp_path, lineart.REALISTIC)
    with pytest.raises(BrokenAnnotatorError, match="sk_model.pth do not load"):
        run_preprocessor("lineart", shapes(), PreprocessParams(resolution=64), annotator_dir=tmp_path)


def test_softedge_pidinet(tmp_path):
    check_missing("softedge_pidinet", tmp_path, pidinet.WEIGHTS)
    net = pidinet.PiDiNet()  # the published carv4 network: 60 channels, dilation 24
    keys = set(net.state_dict())
    assert {"init_block.weight", "block2_1.shortcut.weight", "block4_4.conv1.weight", "dilations.3.conv2_4.weight",
            "attentions.0.conv1.bias", "conv_reduces.2.conv.weight", "classifier.bias"} <= keys  # fmt: skip
    # the published file is a training checkpoint: {"state_dict": {"module.init_block.weight": ...}}
    save(
        random_state(pidinet.PiDiNet(width=8, dilation=4), prefix="module."),
        tmp_path,
        pidinet.WEIGHTS,
        "state_dict",
    )
    assert module_aliases(tmp_path)["pidinet"] == "softedge_pidinet"
    soft = check_map("softedge_pidinet", tmp_path)[:, :, 0]
    # the same file serves softedge_pidisafe (three levels) and scribble_pidinet (binary bold lines)
    params = PreprocessParams(resolution=64)
    safe = np.asarray(run_preprocessor("softedge_pidisafe", shapes(), params, annotator_dir=tmp_path))[
        :, :, 0
    ]
    assert set(np.unique(safe)) <= {0, 127, 255} and not safe[soft <= 84].any()
    scribble = np.asarray(run_preprocessor("scribble_pidinet", shapes(), params, annotator_dir=tmp_path))
    assert set(np.unique(scribble)) <= {0, 255}
    sketch = np.asarray(run_preprocessor("t2ia_sketch_pidi", shapes(), params, annotator_dir=tmp_path))[
        :, :, 0
    ]
    assert set(np.unique(sketch)) <= {0, 255} and not sketch[soft <= 126].any() and sketch[soft >= 128].all()


def test_mlsd_draws_the_segments_its_thresholds_keep(tmp_path):
    check_missing("mlsd", tmp_path, mlsd.WEIGHTS)
    net = mlsd.MLSDLarge()
    assert {"backbone.features.0.0.weight", "backbone.features.1.conv.0.0.weight", "backbone.features.13.conv.3.bias",
            "block15.conv1.0.weight", "block22.conv2.1.running_var", "block23.conv3.weight"} <= set(net.state_dict())  # fmt: skip
    save(random_state(net), tmp_path, mlsd.WEIGHTS)

    def lines(a: float, b: float) -> np.ndarray:
        params = PreprocessParams(resolution=64, threshold_a=a, threshold_b=b)
        result = run_preprocessor("mlsd", shapes(), params, annotator_dir=tmp_path)
        assert result.size == (96, 64) and result.mode == "RGB"
        return np.asarray(result)[:, :, 0]

    default = lines(0.1, 0.1)
    assert set(np.unique(default)) == {0, 255}  # white 1 px lines on black
    long_only = lines(0.1, 8.0)
    assert not np.any(long_only & ~default)  # a longer minimum keeps a subset of the segments
    assert not lines(2.0, 0.1).any()  # no centre scores above 2 (a sigmoid)


def stick_figure_maps(joints: dict[int, tuple[int, int]], size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Heat maps with a blob per joint and PAFs along each limb between two of the joints."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    heat = np.zeros((size, size, 19), np.float32)
    for part, (x, y) in joints.items():
        heat[:, :, part] = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 4.0**2))
    pafs = np.zeros((size, size, 38), np.float32)
    for limb, (a, b) in enumerate(openpose.LIMBS):
        if a in joints and b in joints:
            (ax, ay), (bx, by) = joints[a], joints[b]
            unit = np.array([bx - ax, by - ay], np.float32) / np.hypot(bx - ax, by - ay)
            t = np.clip(((xs - ax) * unit[0] + (ys - ay) * unit[1]) / np.hypot(bx - ax, by - ay), 0, 1)
            near = np.hypot(xs - (ax + t * (bx - ax)), ys - (ay + t * (by - ay))) <= 2
            pafs[near, openpose.PAF_CHANNELS[limb][0]] = unit[0]
            pafs[near, openpose.PAF_CHANNELS[limb][1]] = unit[1]
    return heat, pafs


def test_openpose_parses_and_draws_a_person_from_its_maps():
    # neck, right shoulder / elbow / wrist, left shoulder (COCO-18 order)
    joints = {1: (64, 40), 2: (40, 40), 3: (40, 70), 4: (40, 100), 5: (88, 40)}
    heat, pafs = stick_figure_maps(joints)
    people, peaks = openpose.find_people(heat, pafs)
    assert len(people) == 1 and people[0].count == 5
    found = {part: (peaks[i].x, peaks[i].y) for part, i in enumerate(people[0].parts) if i >= 0}
    assert found == joints
    canvas = openpose.draw_people(np.zeros((128, 128, 3), np.uint8), people, peaks)
    assert tuple(canvas[40, 52]) == (153, 0, 0)  # neck - right shoulder: the first limb colour at 60 %
    assert tuple(canvas[100, 40]) == openpose.COLORS[4]  # the right wrist's joint colour
    assert not canvas[5:30, 100:].any()  # nothing away from the figure
    # without the affinity field between them the limbs do not join: no person of 4 parts
    assert openpose.find_people(heat, np.zeros_like(pafs))[0] == []


def test_openpose_runs_from_its_weight_file(tmp_path):
    check_missing("openpose", tmp_path, openpose.BODY)
    with torch.device("meta"):  # the published network's layout, without allocating it
        keys = set(openpose_net.OpenPoseBody().state_dict())
    assert {"conv1_1.weight", "conv4_4_CPM.bias", "conv5_5_CPM_L1.weight", "Mconv1_stage2_L2.weight",
            "Mconv7_stage6_L1.bias", "Mconv7_stage6_L2.weight"} <= keys  # fmt: skip
    save(random_state(openpose_net.OpenPoseBody(width=4)), tmp_path, openpose.BODY)
    assert "openpose" in module_names(tmp_path) and "openpose_full" not in module_names(tmp_path)
    result = run_preprocessor("openpose", shapes(), PreprocessParams(resolution=64), annotator_dir=tmp_path)
    assert result.mode == "RGB" and result.size == (96, 64)
    with pytest.raises(MissingAnnotatorError, match="openpose/hand_pose_model.pth"):
        run_preprocessor("openpose_full", shapes(), PreprocessParams(resolution=64), annotator_dir=tmp_path)


def test_depth_anything(tmp_path):
    check_missing("depth_anything", tmp_path, depth_anything.WEIGHTS)
    with torch.device("meta"):  # the published ViT-L/14 network's layout, without allocating it
        published = vit_dpt.build(
            {"pretrained.cls_token": torch.empty(1, 1, 1024), "pretrained.pos_embed": torch.empty(1, 1370, 1024),
             "depth_head.scratch.layer1_rn.weight": torch.empty(256, 256, 3, 3)}
            | {f"pretrained.blocks.{i}.norm1.weight": torch.empty(1024) for i in range(24)}
            | {f"depth_head.projects.{i}.weight": torch.empty(c, 1024, 1, 1) for i, c in enumerate((256, 512, 1024, 1024))}
        )  # fmt: skip
    keys = set(published.state_dict())
    assert {"pretrained.mask_token", "pretrained.blocks.23.ls2.gamma", "pretrained.blocks.0.attn.qkv.weight",
            "depth_head.resize_layers.3.weight", "depth_head.scratch.refinenet4.resConfUnit2.conv1.bias",
            "depth_head.scratch.output_conv2.2.weight"} <= keys  # fmt: skip
    assert published.pretrained.blocks[0].attn.heads == 16
    tiny = vit_dpt.DepthAnything(dim=16, depth=8, features=4, channels=[4, 4, 8, 8], grid=37)
    state = random_state(tiny)
    save(state, tmp_path, depth_anything.WEIGHTS)
    array = check_map("depth_anything", tmp_path)
    # v2: the same layout as safetensors; its head reads blocks 1, 3, 5, 7 instead of the last four
    check_missing("depth_anything_v2", tmp_path, depth_anything.WEIGHTS_V2)
    (tmp_path / "depth_anything_v2").mkdir()
    safetensors.torch.save_file(state, tmp_path / depth_anything.WEIGHTS_V2)
    assert not np.array_equal(check_map("depth_anything_v2", tmp_path), array)
    (tmp_path / depth_anything.WEIGHTS_V2).write_bytes(b"not safetensors")
    with pytest.raises(BrokenAnnotatorError, match="depth_anything_v2_vitl.safetensors do not load"):
        run_preprocessor(
            "depth_anything_v2", shapes(), PreprocessParams(resolution=64), annotator_dir=tmp_path
        )


def test_seg_anime_face_paints_its_classes(tmp_path):
    check_missing("seg_anime_face", tmp_path, anime_face.WEIGHTS)
    net = anime_face.AnimeFaceUNet()
    assert {"en_block0.0.0.weight", "en_block0.1.conv.0.0.weight", "en_block3.6.conv.3.running_mean",
            "en_block4.2.conv.2.weight", "de_block4.1.weight", "de_block0.1.bias"} <= set(net.state_dict())  # fmt: skip
    save(random_state(net, std=None), tmp_path, anime_face.WEIGHTS)
    array = check_map("seg_anime_face", tmp_path, channels_differ=True, width=64)  # the net sees 512 x 512
    colours = {tuple(c) for c in array.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in anime_face.PALETTE.tolist()} and len(colours) > 1


def test_normal_bae(tmp_path):
    check_missing("normal_bae", tmp_path, normal_bae.WEIGHTS)
    spec = efficientnet.BlockSpec
    stages = [  # a narrow EfficientNet: B5's stage kinds, kernels and strides, one block each
        [spec(8, 4, 8, 3, 1, 2, False)], [spec(4, 8, 8, 3, 2, 1, True)], [spec(8, 8, 16, 5, 2, 2, True)],
        [spec(8, 16, 16, 3, 2, 2, True)], [spec(16, 16, 32, 5, 1, 4, True), spec(16, 16, 32, 5, 1, 4, True)],
        [spec(16, 24, 32, 5, 2, 4, True)], [spec(24, 32, 48, 3, 1, 6, True)],
    ]  # fmt: skip
    net = normal_bae.NormalBae(stem=8, stages=stages, head=64, hidden=8)
    keys = set(net.state_dict())
    assert {"encoder.original_model.conv_stem.weight", "encoder.original_model.blocks.0.0.conv_pw.weight",
            "encoder.original_model.blocks.4.1.se.conv_expand.bias", "encoder.original_model.blocks.6.0.bn3.running_var",
            "encoder.original_model.bn2.weight", "decoder.up1._net.4.weight", "decoder.out_conv_res1.6.bias"} <= keys  # fmt: skip
    # the published file is a training checkpoint: {"model": {"module.encoder...": ...}}
    save(random_state(net, prefix="module.", unit_norms=True), tmp_path, normal_bae.WEIGHTS, "model")
    array = check_map("normal_bae", tmp_path, channels_differ=True)
    # unit normals mapped to colours: |2c/255 - 1| over x, y, z sums to about 1 in squares
    unit = (array.astype(np.float32) / 255.0 * 2 - 1) ** 2
    assert np.allclose(unit.sum(axis=2), 1.0, atol=0.05)
