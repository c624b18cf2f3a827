"""ControlNet preprocessors against expected maps on simple shapes, their table and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdwebui.engine.controlnet.preprocessors import (
    MissingAnnotatorError,
    PreprocessorInputError,
    PreprocessParams,
    UnknownModuleError,
    control_types,
    module_aliases,
    module_detail,
    module_names,
    resolve_params,
    run_preprocessor,
)
from sdwebui.engine.controlnet.preprocessors.colorfix import colorfix_x0
from sdwebui.engine.controlnet.preprocessors.inpaint import (
    inpaint_hint,
    inpaint_only_blend,
    inpaint_only_image,
)
from sdwebui.engine.errors import RequestError


def square(size: int = 128, inner: tuple[int, int] = (32, 96), fg: int = 255, bg: int = 0) -> Image.Image:
    array = np.full((size, size, 3), bg, dtype=np.uint8)
    array[inner[0] : inner[1], inner[0] : inner[1]] = fg
    return Image.fromarray(array)


def run(
    name: str, image: Image.Image, resolution: int = 128, a: float = -1, b: float = -1, **kw
) -> np.ndarray:
    params = resolve_params(name, resolution, a, b)
    return np.asarray(run_preprocessor(name, image, params, **kw))


def test_none_and_invert_are_exact():
    image = square(64)
    assert np.array_equal(run("none", image), np.asarray(image))
    assert np.array_equal(run("invert", image), 255 - np.asarray(image))
    # the alias works as well as the internal name
    assert np.array_equal(run("invert (from white bg & black line)", image), 255 - np.asarray(image))


def test_canny_marks_the_square_border_only():
    result = run("canny", square(), 128)
    assert result.shape == (128, 128, 3)
    gray = result[:, :, 0]
    assert set(np.unique(gray)) == {0, 255}
    edge = gray > 0
    rows, cols = np.nonzero(edge)
    assert 30 <= rows.min() <= 33 and 94 <= rows.max() <= 97
    assert 30 <= cols.min() <= 33 and 94 <= cols.max() <= 97
    assert not edge[40:88, 40:88].any() and not edge[:20].any()
    # processor_res scales the shortest side: 64 -> a 64x64 map
    assert run("canny", square(), 64).shape == (64, 64, 3)
    # thresholds above the step's gradient find nothing
    assert not run("canny", square(fg=40), 128, 250, 255).any()


def test_threshold_binarizes_at_threshold_a():
    array = np.zeros((64, 128, 3), dtype=np.uint8)
    array[:, :64] = 100
    array[:, 64:] = 200
    result = run("threshold", Image.fromarray(array), 64, 127)
    assert result.shape == (64, 128, 3)
    assert (result[:, :60] == 0).all() and (result[:, 68:] == 255).all()
    assert (run("threshold", Image.fromarray(array), 64, 50) == 255).all()


def test_blur_gaussian_spreads_a_step_symmetrically():
    result = run("blur_gaussian", square(), 128, 4.0).astype(int)[:, :, 0]
    assert result[64, 64] == 255 and result[0, 0] == 0
    assert 60 < result[64, 32] < 195  # the border is smoothed
    assert abs(result[64, 31] - (255 - result[64, 32])) <= 2  # symmetric around the edge
    sharper = run("blur_gaussian", square(), 128, 1.0).astype(int)[:, :, 0]
    assert sharper[64, 28] < result[64, 28]


def test_tile_resample_downsamples_by_rate():
    image = square(128)
    assert np.array_equal(run("tile_resample", image, a=1.0), np.asarray(image))
    assert run("tile_resample", image, a=2.0).shape == (64, 64, 3)
    assert run("tile_resample", image, a=4.0).shape == (32, 32, 3)


def test_scribble_xdog_draws_the_line():
    array = np.full((128, 128, 3), 255, dtype=np.uint8)
    array[:, 62:66] = 0  # a black vertical line on white
    result = run("scribble_xdog", Image.fromarray(array), 128, 32)[:, :, 0]
    assert (result[:, 62:66] == 255).all()
    assert (result[:, :40] == 0).all() and (result[:, 90:] == 0).all()


def test_shuffle_moves_content_reproducibly():
    array = np.zeros((128, 128, 3), dtype=np.uint8)
    array[:64, :64] = (255, 0, 0)
    array[64:, 64:] = (0, 0, 255)
    image = Image.fromarray(array)
    params = PreprocessParams(resolution=128, seed=3)
    one = np.asarray(run_preprocessor("shuffle", image, params))
    assert one.shape == array.shape
    assert np.array_equal(one, np.asarray(run_preprocessor("shuffle", image, params)))
    other = np.asarray(run_preprocessor("shuffle", image, PreprocessParams(resolution=128, seed=4)))
    assert not np.array_equal(one, other) and not np.array_equal(one, array)
    assert one[:, :, 1].max() == 0  # only the image's own colours (no green anywhere)


def test_color_grid_is_constant_per_64px_cell():
    array = np.zeros((128, 128, 3), dtype=np.uint8)
    array[:, 64:] = (0, 200, 0)
    result = run("t2ia_color_grid", Image.fromarray(array), 128)
    assert result.shape == (128, 128, 3)
    for r in (0, 64):
        for c in (0, 64):
            cell = result[r : r + 64, c : c + 64]
            assert (cell == cell[0, 0]).all()
    assert result[0, 0, 1] < result[0, 127, 1]


def test_inpaint_only_keeps_the_mask_as_alpha_and_the_engine_helpers():
    image = square(64, fg=200, bg=50)
    mask = Image.fromarray(np.pad(np.full((16, 16), 255, np.uint8), 24))
    result = run_preprocessor("inpaint_only", image, PreprocessParams(), mask=mask)
    assert result.mode == "RGBA"
    alpha = np.asarray(result)[:, :, 3]
    assert (alpha[24:40, 24:40] == 255).all() and alpha.sum() == 255 * 256
    hint = inpaint_hint(result)
    assert hint.shape == (3, 64, 64)
    assert (hint[:, 30, 30] == -1).all() and torch.allclose(hint[:, 0, 0], torch.tensor(50 / 255))
    generated = torch.ones(3, 64, 64)
    blended = inpaint_only_blend(generated, result)
    assert torch.allclose(blended[:, 32, 32], torch.ones(3)) and torch.allclose(
        blended[:, 0, 0], hint[:, 0, 0]
    )
    final = np.asarray(inpaint_only_image(Image.new("RGB", (64, 64), (255, 0, 255)), result))
    assert tuple(final[32, 32]) == (255, 0, 255)  # the masked part: generated
    assert tuple(final[2, 2]) == (50, 50, 50)  # the rest: the unit image
    assert tuple(final[60, 60]) == (200, 200, 200)
    with pytest.raises(PreprocessorInputError, match="mask"):
        run_preprocessor("inpaint_only", image, PreprocessParams())


def test_colorfix_takes_the_low_frequencies_of_the_unit_image():
    detail = torch.zeros(1, 4, 16, 16)
    detail[:, :, ::2, ::2] = 1.0
    pred = detail + 5.0
    origin = torch.full((1, 4, 16, 16), -2.0)
    fixed = colorfix_x0(pred, origin, variation=8)
    assert abs(fixed.mean().item() - (-2.0)) < 0.1  # the colour (mean) of the unit image
    centre = fixed[0, 0, 4:12, 4:12]
    assert torch.allclose(
        centre[::2, ::2] - centre[1::2, 1::2], torch.ones(4, 4), atol=0.1
    )  # the detail kept


def test_defaults_and_module_tables_follow_the_extension():
    canny = resolve_params("canny")
    assert (canny.resolution, canny.threshold_a, canny.threshold_b) == (512, 100.0, 200.0)
    assert resolve_params("canny", 256, 10, 20).threshold_b == 20.0
    assert resolve_params("threshold").threshold_a == 127.0
    assert resolve_params("blur_gaussian").threshold_a == 9.0
    assert resolve_params("scribble_xdog").threshold_a == 32.0
    names = module_names()
    assert names[0] == "none"
    assert {"canny", "invert", "threshold", "tile_resample", "shuffle", "color", "inpaint_only"} <= set(names)
    assert "depth" not in names and "lineart" not in names  # no annotator weights here
    assert module_aliases()["color"] == "t2ia_color_grid"
    detail = module_detail()["canny"]["sliders"]
    assert [s["name"] for s in detail] == ["Resolution", "Low Threshold", "High Threshold"]
    assert detail[1] == {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1}
    types = control_types(
        ["None", "control_v11p_sd15_canny [1a2b3c4d]", "control_v11f1e_sd15_tile [5e6f7a8b]"]
    )
    assert types["Canny"] == {
        "module_list": ["none", "canny", "invert (from white bg & black line)"],
        "model_list": ["None", "control_v11p_sd15_canny [1a2b3c4d]"],
        "default_option": "canny",
        "default_model": "control_v11p_sd15_canny [1a2b3c4d]",
    }
    assert types["Tile"]["default_option"] == "tile_resample"
    assert types["All"]["default_option"] == "none" and types["All"]["default_model"] == "None"


def test_unknown_module_and_missing_weights_are_request_errors(tmp_path):
    with pytest.raises(UnknownModuleError) as unknown:
        run_preprocessor("cany", square(), PreprocessParams())
    assert isinstance(unknown.value, RequestError) and unknown.value.field == "module"
    assert "'cany'" in str(unknown.value) and "canny" in str(unknown.value)
    with pytest.raises(MissingAnnotatorError) as missing:
        run_preprocessor("depth_midas", square(), PreprocessParams(), annotator_dir=tmp_path)
    assert "dpt_hybrid-midas-501f0c75.pt" in str(missing.value) and "ControlNetAnnotators" in str(
        missing.value
    )
    with pytest.raises(RequestError, match="processor_res"):
        run_preprocessor("canny", square(), PreprocessParams(resolution=0))


def test_softedge_hed_runs_from_its_weight_file_in_the_real_layout(tmp_path):
    from sdwebui.engine.controlnet.preprocessors.hed import ControlNetHED

    with pytest.raises(MissingAnnotatorError, match="models/ControlNetAnnotators/hed/ControlNetHED.pth"):
        run_preprocessor("softedge_hed", square(), PreprocessParams(resolution=64), annotator_dir=tmp_path)
    assert "hed" not in module_names(tmp_path)
    torch.manual_seed(0)
    state = ControlNetHED().state_dict()  # lllyasviel/Annotators' keys: norm, block1.convs.0.weight, ...
    assert {"norm", "block1.convs.0.weight", "block5.convs.2.bias", "block3.projection.weight"} <= set(state)
    torch.save(state, tmp_path / "ControlNetHED.pth")
    assert "hed" in module_names(tmp_path) and module_aliases(tmp_path)["hed"] == "softedge_hed"
    image = Image.new("RGB", (96, 64), "black")
    image.paste((255, 255, 255), (24, 16, 72, 48))
    edges = run_preprocessor("softedge_hed", image, PreprocessParams(resolution=64), annotator_dir=tmp_path)
    assert edges.size == (96, 64)  # the shortest side at the processor resolution
    grey = np.asarray(edges.convert("L"), dtype=np.int16)
    assert grey.std() > 0  # the map depends on the image: flat inside, different at the square's border
    bigger = run_preprocessor("hed", image, PreprocessParams(resolution=128), annotator_dir=tmp_path)
    assert bigger.size == (192, 128)
    # softedge_hedsafe quantises the same probabilities to three levels; scribble_hed draws binary lines
    safe = np.asarray(
        run_preprocessor("softedge_hedsafe", image, PreprocessParams(resolution=64), annotator_dir=tmp_path)
    )
    assert set(np.unique(safe)) <= {0, 127, 255} and not safe[:, :, 0][grey <= 84].any()
    scribble = run_preprocessor(
        "scribble_hed", image, PreprocessParams(resolution=64), annotator_dir=tmp_path
    )
    assert set(np.unique(np.asarray(scribble))) <= {0, 255}
