"""The A1111 facade pieces on their own: argument placement, callbacks, p conversion, hooks on the engine."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from modules import images, processing, script_callbacks, scripts, shared, ui_components
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import Img2ImgRequest, RequestError
from sdwebui.engine.settings import EngineSettings
from sdwebui.outputs.infotext import read_infotext


class Always(scripts.Script):
    def title(self):
        return "Always"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [
            gr.Checkbox(value=True, label="on"),
            gr.Slider(minimum=0, maximum=10, value=3, step=1, label="n"),
        ]


class SelectA(scripts.Script):
    def title(self):
        return "Select A"

    def ui(self, is_img2img):
        return [gr.Textbox(label="a")]

    def run(self, p, a):
        return ("ran A", a)


class SelectB(scripts.Script):
    def title(self):
        return "Select B"

    def show(self, is_img2img):
        return not is_img2img

    def ui(self, is_img2img):
        return [
            gr.Number(value=1, label="x"),
            gr.Number(value=2, label="y"),
            gr.Dropdown(choices=["u", "v"], value="u"),
        ]

    def run(self, p, x, y, z):
        return ("ran B", x, y, z)


def runner(is_img2img=False) -> scripts.ScriptRunner:
    classes = [
        scripts.ScriptClassData(c, f"/x/{c.__name__}.py", "/x", None, "ext")
        for c in (SelectA, Always, SelectB)
    ]
    return scripts.ScriptRunner(classes, is_img2img=is_img2img)


def test_argument_positions_as_a1111():
    r = runner()
    r.ensure_ui()
    assert [(s.title(), s.args_from, s.args_to) for s in r.alwayson_scripts + r.selectable_scripts] == [
        ("Always", 1, 3),
        ("Select A", 3, 4),
        ("Select B", 4, 7),
    ]
    assert r.default_args == [0, True, 3, "", 1, 2, "u"]
    args = r.resolve_script_args("select b", [7, 8, "v"], {"Always": {"args": [False]}})
    assert args == [2, False, 3, "", 7, 8, "v"]
    assert r.run(object(), *args) == ("ran B", 7, 8, "v")
    assert r.resolve_script_args("Select B", [9]) == [2, True, 3, "", 9, 2, "u"]  # short list: defaults kept
    assert r.run(object(), *r.resolve_script_args(None)) is None
    with pytest.raises(RequestError, match="script_name: selectable script 'Nope' not found"):
        r.resolve_script_args("Nope")
    with pytest.raises(RequestError, match="selectable script in the always on"):
        r.resolve_script_args(None, None, {"Select A": {"args": []}})
    info = {i["name"]: i for i in r.infos_for_api()}
    assert info["select b"]["args"][2]["choices"] == ["u", "v"] and info["always"]["is_alwayson"] is True
    assert info["always"]["args"][1] == {"label": "n", "value": 3, "minimum": 0, "maximum": 10, "step": 1}
    assert r.titles_for_api() == ["select a", "always", "select b"]  # load order, alwayson included (A1111)
    assert runner(is_img2img=True).titles_for_api() == ["select a", "always"]  # Select B hidden on img2img


def test_callbacks_isolated_and_removed_per_script(caplog):
    seen = []
    token = script_callbacks.current_script_file.set("/ext/a.py")
    script_callbacks.on_cfg_after_cfg(lambda params: (_ for _ in ()).throw(RuntimeError("bad")), name="bad")
    script_callbacks.current_script_file.reset(token)
    token = script_callbacks.current_script_file.set("/ext/b.py")
    script_callbacks.on_cfg_after_cfg(lambda params: seen.append(params.sampling_step))
    script_callbacks.current_script_file.reset(token)
    try:
        with caplog.at_level(logging.ERROR):
            script_callbacks.cfg_after_cfg_callback(script_callbacks.AfterCFGCallbackParams(None, 4, 10))
        assert seen == [4]
        assert any("/ext/a.py" in r.getMessage() for r in caplog.records)
        script_callbacks.remove_callbacks_for_script("/ext/a.py")
        assert [cb.script for cb in script_callbacks.callback_map["callbacks_cfg_after_cfg"]] == ["/ext/b.py"]
    finally:
        script_callbacks.clear_callbacks()


def test_shared_state_reaches_the_job_context():
    ctx = JobContext()
    job_state = shared.State(ctx)
    job_state.begin("txt2img")
    with shared.job_scope(shared.JobScope(job_state)):
        assert not shared.state.skipped
        ctx.skip()  # the queue's skip/interrupt are visible to scripts through shared.state
        assert shared.state.skipped and not shared.state.interrupted
        shared.state.interrupt()
        assert ctx.interrupted and shared.state.interrupted and shared.state.job == "txt2img"
    # outside the job: the idle state, untouched by the job's interrupt
    assert shared.state.job == "" and not shared.state.interrupted and not shared.state.skipped
    assert shared.OptionInfo(1, "x").info("y").label == "x (y)"


def test_override_settings_visible_only_inside_the_job():
    shared.opts.set("samples_format", "png")
    token = shared.push_overrides({"samples_format": "jpg", "my_ext_x": 3})
    try:
        assert shared.opts.samples_format == "jpg" and shared.opts.get("my_ext_x") == 3
    finally:
        shared.pop_overrides(token)
    assert shared.opts.samples_format == "png" and shared.opts.get("my_ext_x") is None


def test_p_conversion():
    image = Image.new("RGB", (64, 64))
    p = processing.StableDiffusionProcessingImg2Img(
        prompt="x", init_images=[image], mask_blur=6, denoising_strength=0.5, width=64, height=64, steps=3
    )
    p.image_mask = Image.new("L", (64, 64), 255)
    request = p.to_request()
    assert isinstance(request, Img2ImgRequest) and request.mask is p.mask
    assert (request.mask_blur_x, request.mask_blur_y, request.denoising_strength) == (6, 6, 0.5)
    with pytest.raises(TypeError, match="unexpected arguments"):
        processing.StableDiffusionProcessingTxt2Img(promt="typo")
    hr = processing.StableDiffusionProcessingTxt2Img(enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos")
    assert (hr.to_request().hires.hr_scale, hr.to_request().hires.hr_upscaler) == (1.5, "Lanczos")
    back = processing.processing_from_request(request)
    assert back.init_images == [image] and back.denoising_strength == 0.5


class Inverter(scripts.Script):
    """Exercises process_batch, postprocess_batch_list (tensors) and postprocess_image on the real engine."""

    calls: list = []

    def title(self):
        return "Inverter"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process_batch(self, p, *args, batch_number, prompts, seeds, subseeds):
        Inverter.calls.append(("batch", batch_number, list(prompts), list(seeds)))

    def postprocess_batch_list(self, p, pp, *args, batch_number):
        pp.images = [1 - t for t in pp.images]  # invert as tensors

    def postprocess_image(self, p, pp, *args):
        pp.image = pp.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def test_image_hooks_on_the_engine(tiny_sd1_model):
    classes = [scripts.ScriptClassData(Inverter, "/x/inv.py", "/x", None, "inv")]
    r = scripts.ScriptRunner(classes)
    r.ensure_ui()

    def engine(req, hooks):
        return generate(tiny_sd1_model, req, JobContext(), EngineSettings(save_images=False), hooks)

    def run(with_scripts: bool):
        p = processing.StableDiffusionProcessingTxt2Img(
            prompt="a", seed=1, steps=1, width=64, height=64, n_iter=2, sampler_name="Euler"
        )
        p.scripts, p.script_args, p.engine_run = (r if with_scripts else None), [0], engine
        return processing.process_images(p)

    Inverter.calls = []
    plain, hooked = run(False), run(True)
    assert Inverter.calls == [("batch", 0, ["a"], [1]), ("batch", 1, ["a"], [2])]
    expected = 255 - np.asarray(plain.images[1])[:, ::-1]
    assert np.abs(np.asarray(hooked.images[1], dtype=np.int16) - expected).max() <= 1
    assert hooked.all_seeds == [1, 2] and hooked.infotexts[1].startswith("a\nSteps: 1")


def test_images_save_image_with_callbacks(tmp_path):
    seen = []
    script_callbacks.on_before_image_saved(lambda params: params.pnginfo.update(parameters="changed"))
    script_callbacks.on_image_saved(lambda params: seen.append(params.filename))
    try:
        path, txt = images.save_image(Image.new("RGB", (8, 8)), str(tmp_path), "grid", seed=3, info="orig")
    finally:
        script_callbacks.clear_callbacks()
    assert seen == [path] and txt is None and path.endswith(".png") and "grid-3" in path
    assert read_infotext(Image.open(path)) == "changed"
    grid = images.image_grid([Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")], rows=1)
    assert grid.size == (24, 8) and grid.getpixel((20, 4)) == (0, 0, 255)


def test_ui_components_render_as_known_gradio_blocks():
    from modules.ui_components import DropdownMulti, FormRow, InputAccordion, ToolButton

    with gr.Blocks() as demo:
        with FormRow():
            button = ToolButton(value="x")
        with InputAccordion(True, label="Feature", open=True) as enabled:
            gr.Slider(label="s")
        multi = DropdownMulti(choices=["a", "b"], label="d")
    kinds = {c["type"] for c in demo.get_config_file()["components"]}
    assert kinds == {"accordion", "button", "checkbox", "dropdown", "form", "row", "slider"}
    assert isinstance(enabled, gr.Checkbox) and enabled.value is True and multi.multiselect is True
    assert "tool" in button.elem_classes
    assert not (Path(ui_components.__file__).with_suffix(".pyi")).exists()  # no Gradio stub written


def test_shared_sd_model_view(tiny_sd1_model):
    with shared.job_scope(shared.JobScope(shared.State(), model=tiny_sd1_model)):
        model = shared.sd_model
        assert model.is_sd1 and not model.is_sdxl and not model.is_sd2
        assert model.unet is tiny_sd1_model.unet and model.loaded_model is tiny_sd1_model
        assert model.sd_checkpoint_info.title == tiny_sd1_model.info.title
        assert model.sd_checkpoint_info.model_name == tiny_sd1_model.info.name
    assert shared.sd_model is None  # no job and no app bound: no model


class MaskProbe(scripts.Script):
    seen: dict = {}

    def title(self):
        return "Mask probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible if is_img2img else False

    def process(self, p, *args):
        MaskProbe.seen["process"] = (len(p.init_images), p.image_mask is not None, p.denoising_strength)

    def on_mask_blend(self, p, mba, *args):
        MaskProbe.seen.setdefault("blends", 0)
        MaskProbe.seen["blends"] += 1
        assert mba.blended_latent.shape == mba.current_latent.shape


def test_img2img_inpaint_hooks_on_the_engine(tiny_sd1_model):
    r = scripts.ScriptRunner(
        [scripts.ScriptClassData(MaskProbe, "/x/m.py", "/x", None, "m")], is_img2img=True
    )
    r.ensure_ui()
    assert (
        scripts.ScriptRunner([scripts.ScriptClassData(MaskProbe, "/x/m.py", "/x", None, "m")]).scripts == []
    )
    init = Image.new("RGB", (64, 64), (120, 80, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    p = processing.StableDiffusionProcessingImg2Img(
        prompt="x", init_images=[init], mask=mask, denoising_strength=1.0, steps=2, width=64, height=64,
        sampler_name="Euler", seed=1,
    )  # fmt: skip
    p.scripts, p.script_args = r, [0]
    p.engine_run = lambda req, hooks: generate(
        tiny_sd1_model, req, JobContext(), EngineSettings(save_images=False), hooks
    )
    MaskProbe.seen = {}
    processed = processing.process_images(p)
    assert MaskProbe.seen["process"] == (1, True, 1.0)
    assert MaskProbe.seen["blends"] >= 1 and len(processed.images) == 1
