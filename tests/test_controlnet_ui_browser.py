"""The ControlNet accordion: its handlers headless (fast), and in real Chromium: upload an image, run the
preprocessor, generate with a ControlNet model from models/ControlNet (the infotext names the unit)."""

from __future__ import annotations

import dataclasses

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from sdwebui.engine.errors import RequestError
from sdwebui.engine.requests import Txt2ImgRequest
from webui.controlnet_ui import build_controlnet, filter_by_type, preview_map, slider_updates

pytest_plugins = ("tests.browser",)  # browser, shot fixtures


@dataclasses.dataclass
class FakeServices:
    controlnets: object = None


@dataclasses.dataclass
class FakeBackend:
    options: dict
    services: FakeServices = dataclasses.field(default_factory=FakeServices)


def square() -> Image.Image:
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[16:48, 16:48] = 255
    return Image.fromarray(array)


def unit_values(unit, **changes) -> dict:
    values = {c: getattr(c, "value", None) for c in unit.unit_components()}
    for name, value in changes.items():
        values[getattr(unit, name)] = value
    return values


def test_accordion_units_reach_the_request_as_the_apis():
    backend = FakeBackend({"control_net_unit_count": 2})
    with gr.Blocks():
        controls = build_controlnet("txt2img", backend, is_img2img=False)
    assert len(controls.units) == 2
    first, second = controls.units
    values = unit_values(first, enabled=True, image=square(), module="canny", weight=0.7, threshold_a=50)
    values |= unit_values(second)
    request = controls.attach(Txt2ImgRequest(prompt="x"), values)
    unit = request.controlnet_units[0]
    assert (unit.enabled, unit.module, unit.weight, unit.threshold_a) == (True, "canny", 0.7, 50)
    assert unit.images[0].image.size == (64, 64) and not request.controlnet_units[1].enabled
    # the alias label the dropdown shows is sent as the module's key
    values[first.module] = "invert (from white bg & black line)"
    assert controls.attach(Txt2ImgRequest(prompt="x"), values).controlnet_units[0].module == "invert"
    values[first.module] = "no-such-module"
    with pytest.raises(RequestError, match=r"args\[0\]\.module"):
        controls.attach(Txt2ImgRequest(prompt="x"), values)
    untouched = Txt2ImgRequest(prompt="x")
    assert controls.attach(untouched, unit_values(first) | unit_values(second)) is untouched


def test_preview_filters_and_sliders():
    backend = FakeBackend({})
    edges, message = preview_map(backend, "canny", square(), None, 64, 100, 200)
    assert message == "" and edges.size == (64, 64)
    assert np.asarray(edges)[32, 32].max() == 0 and np.asarray(edges)[12:20, 24:40].max() == 255
    none, message = preview_map(backend, "depth_midas", square(), None, 64, -1, -1)
    assert none is None and "dpt_hybrid-midas-501f0c75.pt" in message
    modules, models = filter_by_type("Canny", backend)
    assert modules["choices"] == ["none", "canny", "invert (from white bg & black line)"]
    assert modules["value"] == "canny" and models["choices"] == ["None"]
    res, a, b = slider_updates("canny")
    assert (a["label"], a["value"], b["label"], b["value"]) == ("Low Threshold", 100, "High Threshold", 200)
    res, a, b = slider_updates("invert (from white bg & black line)")
    assert not res["visible"] and not a["visible"] and not b["visible"]


PASTED = (
    'ControlNet 0: "Module: inpaint, Model: tiny [0badc0de], Weight: 0.7, Resize Mode: Just Resize, '
    "Processor Res: 96, Threshold A: 50, Threshold B: 150, Guidance Start: 0.1, Guidance End: 0.9, "
    'Pixel Perfect: True, Control Mode: My prompt is more important"'
)


def test_png_info_pastes_controlnet_units_into_the_accordion():
    from types import SimpleNamespace

    from webui import paste

    store = SimpleNamespace(
        library=SimpleNamespace(titles=lambda: ["tiny [12345678]"]), annotator_dir=None, clip_vision_dir=None
    )
    backend = FakeBackend({"control_net_unit_count": 2}, FakeServices(store))
    with gr.Blocks():
        controls = build_controlnet("txt2img", backend, is_img2img=False)
    text = f"a cat\nSteps: 2, Seed: 1, Size: 64x64, {PASTED.replace('inpaint', 'canny')}"
    blank = SimpleNamespace(prompt=None, negative_prompt=None)
    params = SimpleNamespace(**dict.fromkeys(("steps", "cfg_scale", "distilled_cfg_scale", "seed", "width", "height", "subseed",
                             "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")), sampler_name=SimpleNamespace(choices=[]))  # fmt: skip
    updates = paste.field_updates(paste.pasted_params(text), blank, params, controls.paste_fields())
    first, second = controls.units
    got = {name: updates[getattr(first, name)] for name in ("enabled", "module", "model", "weight", "resize_mode",
           "processor_res", "threshold_a", "threshold_b", "guidance_start", "guidance_end", "pixel_perfect",
           "control_mode")}  # fmt: skip
    assert got == {"enabled": True, "module": "canny", "model": "tiny [12345678]", "weight": 0.7,
                   "resize_mode": "Just Resize", "processor_res": 96, "threshold_a": 50, "threshold_b": 150,
                   "guidance_start": 0.1, "guidance_end": 0.9, "pixel_perfect": True,
                   "control_mode": "My prompt is more important"}  # fmt: skip
    assert not any(getattr(second, f.name) in updates for f in dataclasses.fields(second))
    # the module's change handler (fired by the paste) keeps the pasted values, a later change the defaults
    res, a, b = slider_updates("canny", updates[first.pasted])
    assert (res["value"], a["value"], b["value"]) == (96, 50, 150)
    res, a, b = slider_updates("canny", None)
    assert (a["value"], b["value"]) == (100, 200)
    # an alias shows as the dropdown's label
    pasted = paste.pasted_params(f"a cat\nSteps: 2, Seed: 1, Size: 64x64, {PASTED}")
    updates = paste.field_updates(pasted, blank, params, controls.paste_fields())
    assert updates[first.module] == "inpaint_global_harmonious"


# -- in Chromium: the real app with a tiny ControlNet in models/ControlNet -------------------------------------

CONTROLNET_NAME = "control_v11p_sd15_canny"
UNIT = "#txt2img_controlnet_unit_0"


@pytest.fixture(scope="module")
def controlnet_server(tmp_path_factory):
    from tests.browser import CHROMIUM, start_server, stop_server, write_tiny_checkpoint
    from tests.controlnet_fixtures import tiny_controlnet, write_ldm_controlnet

    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium")
    data_dir = tmp_path_factory.mktemp("cn-ui-data")
    write_ldm_controlnet(
        tiny_controlnet("sd1"), "sd1", data_dir / "models" / "ControlNet" / f"{CONTROLNET_NAME}.safetensors"
    )
    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoints"))
    handle = start_server(data_dir, checkpoint)
    yield handle
    stop_server(handle)


def choose(page, dropdown, option: str) -> None:
    dropdown.click()
    page.locator("ul[role=listbox] li[role=option]", has_text=option).first.click()


def preview_pixels(page) -> list[int]:
    """[width, centre red, edge red] of the preprocessed map the page shows."""
    return page.evaluate(
        f"""() => {{
            const img = document.querySelector('{UNIT}_generated_image img');
            const canvas = document.createElement('canvas');
            canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
            const ctx = canvas.getContext('2d');
            ctx.drawImage(img, 0, 0);
            const at = (x, y) => ctx.getImageData(x, y, 1, 1).data[0];
            let edge = 0;
            for (let y = 12; y < 20; y++) edge = Math.max(edge, at(32, y));
            return [img.naturalWidth, at(32, 32), edge];
        }}"""
    )


@pytest.mark.slow  # its own app server: over the suite's time budget; the headless tests cover the handlers
def test_browser_upload_run_preprocessor_and_generate(browser, controlnet_server, shot, tmp_path):
    from tests.browser import front_end_race, set_number, wait_result, wait_ui_loaded

    source = tmp_path / "square.png"
    square().save(source)
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(30_000)
    with front_end_race("the page never rendered the prompt box"):
        page.goto(controlnet_server.url + "/")
        page.wait_for_selector("#txt2img_prompt textarea")
    wait_ui_loaded(page)
    page.click("#txt2img_controlnet")  # open the accordion
    page.locator(f"{UNIT}_input_image input[type=file]").set_input_files(str(source))
    page.wait_for_function(f"document.querySelector('{UNIT}_input_image img') !== null")
    page.wait_for_function(
        f"document.querySelector('{UNIT}_enable_checkbox input').checked"
    )  # upload enables
    page.locator(f"{UNIT}_type_filter_radio label", has_text="Canny").first.click()
    page.wait_for_function(f"document.querySelector('{UNIT}_preprocessor_dropdown input').value === 'canny'")
    set_number(page, "txt2img_controlnet_unit_0_preprocessor_resolution_slider", 64)
    page.click(f"{UNIT}_trigger_preprocessor")
    page.wait_for_function(f"document.querySelector('{UNIT}_generated_image img')?.naturalWidth > 0")
    width, centre, edge = preview_pixels(page)
    shot(page, "preprocessed")
    assert (width, centre, edge) == (64, 0, 255)  # Canny: the square's border only
    # the Canny filter chose the model with "canny" in its name
    page.wait_for_function(
        f"document.querySelector('{UNIT}_model_dropdown input').value.startsWith('{CONTROLNET_NAME} [')"
    )

    page.fill("#txt2img_prompt textarea", "a box")
    for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 2)):
        set_number(page, elem_id, value)
    set_number(page, "txt2img_controlnet_unit_0_control_weight_slider", 0.8)
    page.click("#txt2img_generate")
    info = wait_result(page, "txt2img", timeout=120_000)
    shot(page, "generated")
    assert 'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [' in info
    assert "Weight: 0.8" in info and "Processor Res: 64" in info
    context.close()


@pytest.mark.slow  # the module's own app server (see above)
def test_browser_png_info_pastes_the_unit_into_the_accordion(browser, controlnet_server, shot, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    from tests.browser import front_end_race, wait_ui_loaded

    title = f"{CONTROLNET_NAME} [0badc0de]"  # the same model with another hash: pasted as the listed one
    info = PngInfo()
    info.add_text(
        "parameters",
        f"a box\nSteps: 2, Seed: 5, Size: 64x64, {PASTED.replace('inpaint', 'canny').replace('tiny [0badc0de]', title)}",
    )
    path = tmp_path / "with-controlnet.png"
    Image.new("RGB", (64, 64), (30, 30, 200)).save(path, pnginfo=info)
    page = browser.new_context(viewport={"width": 1280, "height": 1400}).new_page()
    page.set_default_timeout(30_000)
    with front_end_race("the page never rendered the prompt box"):
        page.goto(controlnet_server.url + "/")
        page.wait_for_selector("#txt2img_prompt textarea")
    wait_ui_loaded(page)
    page.click("#tab_pnginfo-button")
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        "document.querySelector('#pnginfo_generation_info textarea').value.includes('ControlNet 0')"
    )
    page.click("#pnginfo_send_txt2img")
    page.wait_for_selector("#tab_txt2img", state="visible")
    page.click("#txt2img_controlnet")  # open the accordion
    page.wait_for_function(f"document.querySelector('{UNIT}_enable_checkbox input')?.checked")
    page.wait_for_function(
        f"document.querySelector('{UNIT}_threshold_A_slider input[type=number]')?.value === '50'"
    )  # the module's change handler kept the pasted thresholds
    shot(page, "pasted")
    value = lambda sel: page.locator(f"{UNIT}_{sel}").first.input_value()  # noqa: E731
    assert value("preprocessor_dropdown input") == "canny"
    assert value("model_dropdown input").startswith(f"{CONTROLNET_NAME} [")
    assert value("control_weight_slider input[type=number]") == "0.7"
    assert value("threshold_B_slider input[type=number]") == "150"
    assert page.locator(f"{UNIT}_pixel_perfect_checkbox input").is_checked()
    assert page.locator(f"{UNIT}_control_mode_radio input[value='My prompt is more important']").is_checked()
