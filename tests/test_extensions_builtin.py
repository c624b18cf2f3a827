"""The shipped dogfood scripts: X/Y/Z plot, Prompts from file or textbox, Infotext note."""

from __future__ import annotations

import numpy as np
import pytest

from modules import scripts
from modules.paths import REPO_DIR
from sdwebui.jobs.queue import JobError
from tests.sample_extensions.harness import generate, make_app, reset_scripts


def load(rel: str):
    path = REPO_DIR / "extensions-builtin" / rel
    return scripts.load_module(str(path), f"builtin_under_test_{path.stem}")


xyz = load("xyz-plot/scripts/xyz_grid.py")
pff = load("prompts-from-file/scripts/prompts_from_file.py")


@pytest.mark.parametrize(
    ("axis", "text", "expected"),
    [
        ("Steps", "1-5 (+2)", [1, 3, 5]),
        ("Steps", "1-10 [5]", [1, 3, 5, 7, 10]),
        ("Seed", "10-1 (-3)", [10, 7, 4, 1]),
        ("Seed", "1-3, 7", [1, 2, 3, 7]),
        ("CFG Scale", "1-2 (+0.5)", [1.0, 1.5, 2.0]),
        ("CFG Scale", "0.5-1.5 [3]", [0.5, 1.0, 1.5]),
        ("Sampler", 'Euler a, "DPM++ 2M"', ["Euler a", "DPM++ 2M"]),
        ("Prompt S/R", "cat, dog, a, b", ["cat", "dog", "a", "b"]),
    ],
)
def test_axis_values(axis, text, expected):
    assert xyz.expand_values(xyz.find_axis(axis), text) == expected


def test_axis_errors():
    with pytest.raises(RuntimeError, match="bad value for Steps"):
        xyz.expand_values(xyz.find_axis("Steps"), "1, x")
    with pytest.raises(RuntimeError, match="unknown axis type"):
        xyz.find_axis("Nope")
    with pytest.raises(RuntimeError, match="Unknown sampler"):
        xyz.confirm_samplers(None, ["Not a sampler"])
    assert xyz.find_axis(4) is xyz.find_axis("steps")


def test_axis_selection_switches_to_a_dropdown():
    text, dropdown = xyz.select_axis("Sampler", False)
    assert text["visible"] is False and dropdown["visible"] is True and "Euler" in dropdown["choices"]
    text, dropdown = xyz.select_axis("Sampler", True)
    assert text["visible"] is True and dropdown["visible"] is False
    assert xyz.select_axis("Steps", False)[0]["visible"] is True
    assert xyz.select_axis(9, False, is_img2img=True)[1]["visible"] is True  # img2img index 9 = Sampler


def test_prompt_line_parsing():
    assert pff.parse_line("a dog") == {"prompt": "a dog"}
    assert pff.parse_line('--prompt "a bird" --steps 3 --cfg_scale 5 --tiling false') == {
        "prompt": "a bird",
        "steps": 3,
        "cfg_scale": 5.0,
        "tiling": False,
    }
    with pytest.raises(RuntimeError, match="unknown option '--bogus'"):
        pff.parse_line("--bogus 1")
    with pytest.raises(RuntimeError, match="bad value for --steps"):
        pff.parse_line("--steps many")


@pytest.fixture
def app(tmp_path, tiny_sd1_model):
    services, _ = make_app(tmp_path / "data", tiny_sd1_model)
    yield services
    services.jobs.shutdown()
    reset_scripts()


def xyz_args(**changes):
    args = dict(x_type="Seed", x_values="", x_values_dropdown=[], y_type="Nothing", y_values="",
                y_values_dropdown=[], z_type="Nothing", z_values="", z_values_dropdown=[], draw_legend=True,
                include_lone_images=True, include_sub_grids=False, no_fixed_seeds=False, vary_seeds_x=False,
                vary_seeds_y=False, vary_seeds_z=False, margin_size=0, csv_mode=False)  # fmt: skip
    args.update(changes)
    return list(args.values())


def pixels(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_xyz_grid_cells_labels_and_placement(app):
    args = xyz_args(x_type="Seed", x_values="1-3 (+2)", y_type="Steps", y_values="1, 2")
    result = generate(app, request={"batch_size": 1}, script_name="X/Y/Z plot", script_args=args)
    grid, cells = result.pil_images[0], result.pil_images[1:]
    assert len(cells) == 4  # 2 x values * 2 y values
    assert [("Seed: 1" in t, "Steps: 1" in t) for t in result.infotexts[1:3]] == [(True, True), (False, True)]
    assert "Seed: 3, " in result.infotexts[2] and "Steps: 2," in result.infotexts[3]
    pad_left, pad_top = grid.width - 2 * 64, grid.height - 2 * 64
    assert pad_left > 0 and pad_top > 0  # room for the row and column labels
    for i, cell in enumerate(cells):
        col, row = i % 2, i // 2
        box = (pad_left + col * 64, pad_top + row * 64, pad_left + (col + 1) * 64, pad_top + (row + 1) * 64)
        assert np.array_equal(pixels(grid.crop(box)), pixels(cell))
    # legend area is drawn (not the black grid background) and contains dark text pixels
    header = pixels(grid.crop((pad_left, 0, grid.width, pad_top)))
    assert header.max() == 255 and header.min() < 100
    assert np.abs(pixels(cells[0]) - pixels(cells[1])).mean() > 1  # seeds differ -> images differ


def test_xyz_labels_and_sampler_prompt_axes(app):
    runner = scripts.scripts_txt2img
    script, _ = runner.selectable_script("x/y/z plot")
    args = xyz_args(x_type="Prompt S/R", x_values="cat, dog", y_type="Sampler", y_values="Euler, DDIM",
                    z_type="CFG Scale", z_values="1-2 [2]", include_sub_grids=True)  # fmt: skip
    p = _p(runner, script, args)
    processed = runner.run(p, *p.script_args)
    assert processed.xyz_cells == 8
    assert processed.xyz_labels == [["cat", "dog"], ["Euler", "DDIM"], ["CFG Scale: 1.0", "CFG Scale: 2.0"]]
    assert len(processed.images) == 1 + 2 + 8  # main grid, 2 z sub-grids, 8 cells
    prompts = [t.split("\n")[0] for t in processed.infotexts[3:]]
    assert prompts == ["a cat", "a dog"] * 4
    assert ["Sampler: DDIM" in t for t in processed.infotexts[3:7]] == [False, False, True, True]


def test_xyz_checkpoint_axis(app):
    title = app.models.checkpoint_titles()[0]
    args = xyz_args(x_type="Checkpoint name", x_values=f'"{title}"', include_lone_images=False)
    result = generate(app, request={"batch_size": 1}, script_name="X/Y/Z plot", script_args=args)
    assert len(result.images) == 1 and app.models.current_title().startswith(title)  # + " [hash]" once read
    bad = xyz_args(x_type="Checkpoint name", x_values="missing-model")
    with pytest.raises(JobError, match="Unknown checkpoint"):
        generate(app, script_name="X/Y/Z plot", script_args=bad)


def _p(runner, script, args):
    from modules.processing import StableDiffusionProcessingTxt2Img

    full = runner.resolve_script_args("X/Y/Z plot", args)
    p = StableDiffusionProcessingTxt2Img(prompt="a cat", seed=3, steps=1, width=64, height=64,
                                         sampler_name="Euler", do_not_save_samples=True)  # fmt: skip
    p.scripts, p.script_args = runner, full
    return p


def test_prompts_from_file(app):
    text = 'a dog\n\n--prompt "a bird" --seed 7 --steps 1\n'
    args = [False, False, "start", text]
    result = generate(app, request={"batch_size": 1, "prompt": ""}, script_name="Prompts from file or textbox",
                      script_args=args)  # fmt: skip
    assert result.prompts == ["a dog", "a bird"]
    assert result.seeds[1] == 7 and "Steps: 1," in result.infotexts[1]
    with pytest.raises(JobError, match="unknown option"):
        generate(
            app, script_name="Prompts from file or textbox", script_args=[False, False, "start", "--x 1"]
        )


def test_infotext_note_alwayson(app):
    result = generate(app, alwayson_scripts={"Infotext note": [True, "hello  world"]})
    assert all("Note: hello world" in t for t in result.infotexts)
    assert "Note:" not in generate(app).infotexts[0]
