"""A1111 compatibility of the extension facade: X/Y/Z axis indices as A1111's API clients send them, and the
modules community extensions import besides the core four (devices, infotext_utils,
generation_parameters_copypaste)."""

from __future__ import annotations

import textwrap

import pytest
import torch
from PIL import Image

from modules import devices, infotext_utils, scripts, shared
from modules.paths import REPO_DIR
from sdwebui.engine.requests import Img2ImgRequest
from sdwebui.jobs.queue import JobError
from sdwebui.services import ScriptCall
from tests.sample_extensions.harness import generate, make_app, reset_scripts

xyz = scripts.load_module(
    str(REPO_DIR / "extensions-builtin/xyz-plot/scripts/xyz_grid.py"), "xyz_compat_test"
)


# --- X/Y/Z plot: A1111 1.10 axis indices per tab ---
A1111_TXT2IMG_PREFIX = ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale",
                        "Prompt S/R", "Prompt order", "Sampler", "Hires sampler", "Checkpoint name"]  # fmt: skip
A1111_IMG2IMG_PREFIX = ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "CFG Scale", "Image CFG Scale",
                        "Prompt S/R", "Prompt order", "Sampler", "Checkpoint name"]  # fmt: skip


def test_axis_indices_follow_a1111_per_tab():
    t2i, i2i = xyz.axes_for_tab(False), xyz.axes_for_tab(True)
    assert [a.label for a in t2i[: len(A1111_TXT2IMG_PREFIX)]] == A1111_TXT2IMG_PREFIX
    assert [a.label for a in i2i[: len(A1111_IMG2IMG_PREFIX)]] == A1111_IMG2IMG_PREFIX
    assert xyz.find_axis(6).label == "CFG Scale" and xyz.find_axis(5, is_img2img=True).label == "CFG Scale"
    assert xyz.find_axis(26).label == "Denoising" and xyz.find_axis(25, is_img2img=True).label == "Denoising"
    assert xyz.find_axis(42).label == "Size" and xyz.find_axis(43).label == "Width"  # ours after A1111's
    assert xyz.find_axis("cfg scale") is xyz.find_axis(6) and xyz.find_axis("6") is xyz.find_axis(6)
    assert xyz.find_axis("Sampler", True) is not xyz.find_axis("Sampler", False)  # one per tab, as A1111


def test_unavailable_axes_are_named_errors():
    for label in (
        "Hires steps",
        "VAE",
        "Face restore",
        "Refiner checkpoint",
        "Token merging ratio",
        "Styles",
    ):
        axis = xyz.find_axis(label)
        if label == "Styles":
            assert axis.why_unavailable(False) == ""  # Styles are honoured
            continue
        with pytest.raises(RuntimeError, match=f"the {label} axis is not available"):
            xyz.check_available(axis, False)
    with pytest.raises(RuntimeError, match="Denoising axis is not available: on txt2img"):
        xyz.check_available(xyz.find_axis("Denoising"), False)
    xyz.check_available(xyz.find_axis("Denoising", True), True)
    with pytest.raises(RuntimeError, match="Hires steps axis is not available on the img2img tab"):
        xyz.find_axis("Hires steps", True)
    with pytest.raises(RuntimeError, match="out of range"):
        xyz.find_axis(99)
    with pytest.raises(RuntimeError, match="not available: noise is always drawn on the CPU"):
        xyz.confirm_rng_source(None, ["GPU"])


def test_ui_lists_only_honoured_axes():
    labels = [a.label for a in xyz.axes_for_tab(False) if not a.why_unavailable(False)]
    assert "CFG Scale" in labels and "Hires steps" not in labels and "Denoising" not in labels


def test_prompt_order_size_and_schedule_axes():
    axis = xyz.find_axis("Prompt order")
    orders = xyz.expand_values(axis, "cat, dog")
    assert orders == [["cat", "dog"], ["dog", "cat"]]

    class P:
        prompt, negative_prompt, width, height, scheduler = "a cat and a dog", "", 64, 64, None

    p = P()
    axis.apply(p, ["dog", "cat"], orders)
    assert p.prompt == "a dog and a cat"
    xyz.apply_size(p, "128x96", [])
    assert (p.width, p.height) == (128, 96)
    with pytest.raises(RuntimeError, match="bad Size"):
        xyz.apply_size(p, "big", [])
    xyz.apply_schedule_type(p, "karras", [])
    assert p.scheduler == "Karras"
    with pytest.raises(RuntimeError, match="Unknown schedule type: nope"):
        xyz.confirm_schedule_types(p, ["nope"])


@pytest.fixture
def app(tmp_path, tiny_sd1_model):
    ext = tmp_path / "data" / "extensions" / "compat-ext" / "scripts"
    ext.mkdir(parents=True)
    (ext / "compat.py").write_text(COMPAT_EXTENSION)
    services, _ = make_app(tmp_path / "data", tiny_sd1_model)
    yield services
    services.jobs.shutdown()
    reset_scripts()


def xyz_args(x_type, x_values, **changes):
    args = dict(x_type=x_type, x_values=x_values, x_values_dropdown=[], y_type=0, y_values="", y_values_dropdown=[],
                z_type=0, z_values="", z_values_dropdown=[], draw_legend=True, include_lone_images=True,
                include_sub_grids=False, no_fixed_seeds=False, vary_seeds_x=False, vary_seeds_y=False,
                vary_seeds_z=False, margin_size=0, csv_mode=False)  # fmt: skip
    args.update(changes)
    return list(args.values())


def test_xyz_over_the_job_queue_with_a1111_indices(app):
    result = generate(
        app, request={"batch_size": 1}, script_name="X/Y/Z plot", script_args=xyz_args(6, "1, 4")
    )
    assert ["CFG scale: 1," in t for t in result.infotexts[1:]] == [True, False]
    assert "CFG scale: 4," in result.infotexts[2]
    clip = generate(
        app, request={"batch_size": 1}, script_name="X/Y/Z plot", script_args=xyz_args("Clip skip", "2")
    )
    assert "Clip skip: 2," in clip.infotexts[1]
    with pytest.raises(JobError, match="Hires steps axis is not available"):
        generate(app, script_name="X/Y/Z plot", script_args=xyz_args(5, "10"))
    with pytest.raises(JobError, match="Denoising axis is not available"):
        generate(app, script_name="X/Y/Z plot", script_args=xyz_args("Denoising", "0.5"))


def test_xyz_img2img_indices(app):
    request = Img2ImgRequest(prompt="a cat", seed=5, steps=2, width=64, height=64, batch_size=1,
                             sampler_name="Euler", init_images=[Image.new("RGB", (64, 64), "gray")],
                             do_not_save_samples=True)  # fmt: skip
    call = ScriptCall("img2img", script_name="X/Y/Z plot", script_args=xyz_args(25, "0.5, 1.0"))  # Denoising
    result = app.submit_generation(request, script_call=call).wait(180)
    assert ["Denoising strength: 0.5" in t for t in result.infotexts[1:]] == [True, False]


# --- devices, infotext_utils, generation_parameters_copypaste ---
COMPAT_EXTENSION = textwrap.dedent("""
    import gradio as gr
    import torch

    from modules import devices, scripts
    from modules.generation_parameters_copypaste import parse_generation_parameters as old_parse
    from modules.infotext_utils import PasteField, create_override_settings_dict, parse_generation_parameters

    SEEN = {}


    class CompatProbe(scripts.Script):
        def title(self):
            return "Compat probe"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            self.infotext_fields = [PasteField(gr.Checkbox(value=True, label="Probe"), "Probe")]
            return [self.infotext_fields[0].component]

        def process(self, p, enabled):
            SEEN["device"], SEEN["dtype"] = devices.device, devices.dtype
            with devices.autocast():
                x = devices.cond_cast_unet(torch.ones(2, dtype=torch.float64))
            SEEN["cast"] = x.dtype
            p.extra_generation_params["Probe"] = "Clip skip 2"
            p.extra_generation_params["Probe device"] = str(devices.get_optimal_device())

        def postprocess(self, p, processed, enabled):
            SEEN["parsed"] = parse_generation_parameters(processed.infotexts[0])
            SEEN["old_parsed"] = old_parse(processed.infotexts[0])
            SEEN["overrides"] = create_override_settings_dict(["Clip skip: 2", "Unknown thing: 3"])
            devices.torch_gc()
""")


def test_extension_using_devices_and_infotext_utils_runs_in_a_generation(app, tiny_sd1_model):
    result = generate(app)
    module = next(m for path, m in scripts.loaded_modules.items() if path.endswith("compat.py"))
    seen = module.SEEN
    assert seen["device"] == tiny_sd1_model.device and seen["dtype"] == tiny_sd1_model.dtype
    assert seen["cast"] == tiny_sd1_model.dtype
    assert "Probe device: cpu" in result.infotexts[0]
    parsed = seen["parsed"]
    assert parsed["Prompt"] == "a cat" and parsed["Steps"] == "2" and parsed["Probe"] == "Clip skip 2"
    assert parsed["Size-1"] == "64" and seen["old_parsed"] == parsed
    assert seen["overrides"] == {"CLIP_stop_at_last_layers": 2}


def test_devices_without_a_model_follow_the_flags():
    shared.reset()
    assert devices.get_optimal_device() == devices._policy().device
    assert devices.dtype_vae == devices._policy().vae_dtype
    assert devices.get_device_for("interrogate") in (devices.cpu, devices.get_optimal_device())
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        _ = devices.nonsense
    with pytest.raises(devices.NansException, match="in unet"):
        devices.test_for_nans(torch.full((2,), float("nan")), "unet")
    devices.test_for_nans(torch.zeros(2), "unet")


def test_infotext_utils_helpers():
    text = "a cat\nNegative prompt: ugly\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x32, Clip skip: 2"
    parsed = infotext_utils.parse_generation_parameters(text, skip_fields=["Seed"])
    assert parsed["Negative prompt"] == "ugly" and parsed["Size-2"] == "32" and "Seed" not in parsed
    assert ("Clip skip", "CLIP_stop_at_last_layers", 2) in infotext_utils.get_override_settings(parsed)
    binding = infotext_utils.ParamBinding(paste_button=None, tabname="txt2img", source_tabname="extras")
    infotext_utils.register_paste_params_button(binding)
    infotext_utils.add_paste_fields("my_tab", None, [(None, "Steps")])
    assert infotext_utils.registered_param_bindings[-1] is binding
    assert infotext_utils.paste_fields["my_tab"]["fields"][0].target == "Steps"
    infotext_utils.connect_paste_params_buttons()
    infotext_utils.reset()
    assert infotext_utils.registered_param_bindings == [] and infotext_utils.paste_fields == {}
    red = Image.new("RGB", (4, 4), "red")
    import base64
    import io

    buf = io.BytesIO()
    red.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    assert infotext_utils.image_from_url_text(url).getpixel((0, 0)) == (255, 0, 0)
