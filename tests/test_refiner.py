"""The SDXL refiner (A1111's refiner_checkpoint / refiner_switch_at): the last pass continues on the refiner from
the switch step, through the engine with tiny SDXL models and over real HTTP with tiny checkpoint files."""

from __future__ import annotations

import base64
import contextlib
import io

import numpy as np
import pytest
import requests
from PIL import Image

from sdwebui.engine import samplers
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.hires import HiresFix
from sdwebui.engine.infotext_fields import parse_infotext
from sdwebui.engine.passes import RefinerSwitch
from sdwebui.engine.requests import RequestError, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.outputs.infotext import read_infotext
from tests import tiny_models
from tests.api_server import start_server, write_settings
from tests.browser import RERUN_FRONT_END_RACES, set_number, wait_result, wait_ui_loaded

pytest_plugins = ("tests.browser",)  # browser, ui_server, page, shot fixtures


class OneRefiner:
    """The engine's PassCheckpoints with one model, counting its uses."""

    def __init__(self, model):
        self.model, self.used = model, []

    @contextlib.contextmanager
    def use(self, name, field_name):
        self.used.append(name)
        yield self.model


def unet_calls(model, label, calls):
    return model.unet.register_forward_pre_hook(lambda *_: calls.append(label))


def request(**changes) -> Txt2ImgRequest:
    base = dict(prompt="a cat", seed=3, steps=4, width=64, height=64, sampler_name="Euler")
    return Txt2ImgRequest(**{**base, **changes})


def run(base, refiner, req, ctx=None):
    settings = EngineSettings(save_images=False, checkpoints=OneRefiner(refiner))
    return generate(base, req, ctx or JobContext(), settings)


def expected_switch(steps: int, switch_at: float, config) -> int:
    scheduler = samplers.create_scheduler("Euler", "Automatic", config, None)
    samplers.set_timesteps(scheduler, steps, device="cpu")
    return RefinerSwitch("r", switch_at).switch_step([float(t) for t in scheduler.timesteps])


def test_switch_step_is_a1111s_timestep_rule():
    switch = RefinerSwitch("r", 0.5)
    assert switch.switch_step([999, 749, 499, 249]) == 2  # (999 - 499) / 1000 = 0.5 >= 0.5
    assert switch.switch_step([999, 899]) == 2  # never reached: no switch
    assert RefinerSwitch("r", 0.0).switch_step([999, 500]) == 0


@pytest.mark.parametrize("switch_at", [0.5, 0.8])
def test_the_last_steps_run_on_the_refiner_and_change_the_image(
    tiny_sdxl_model, tiny_sdxl_refiner_model, switch_at
):
    calls, steps = [], []
    hooks = [
        unet_calls(tiny_sdxl_model, "base", calls),
        unet_calls(tiny_sdxl_refiner_model, "refiner", calls),
    ]
    try:
        ctx = JobContext(on_step=lambda info: steps.append((info.step, info.steps)))
        refined = run(tiny_sdxl_model, tiny_sdxl_refiner_model, request(refiner_checkpoint="refiner",
                      refiner_switch_at=switch_at), ctx)  # fmt: skip
        plain_calls = len(calls)
        plain = run(tiny_sdxl_model, tiny_sdxl_refiner_model, request())
    finally:
        for hook in hooks:
            hook.remove()
    k = expected_switch(4, switch_at, tiny_sdxl_model.scheduler_config)
    assert 0 < k < 4
    per_step = plain_calls // 4  # CFG: one or two U-Net calls a step
    assert calls[:plain_calls] == ["base"] * (k * per_step) + ["refiner"] * ((4 - k) * per_step)
    assert steps == [(i, 4) for i in range(1, 5)]  # progress counts the refiner's steps in the pass
    a, b = (np.asarray(r.images[0].image, dtype=np.int16) for r in (refined, plain))
    assert np.abs(a - b).max() > 0  # the refiner's last steps are small changes of a nearly clean image
    params = parse_infotext(refined.images[0].infotext)
    assert params["Refiner"] == tiny_sdxl_refiner_model.info.name and params["Refiner switch at"] == str(
        switch_at
    )
    assert "Refiner" not in parse_infotext(plain.images[0].infotext)


def test_with_hires_the_refiner_takes_the_hires_pass(tiny_sdxl_model, tiny_sdxl_refiner_model):
    calls = []
    hook = unet_calls(tiny_sdxl_refiner_model, "refiner", calls)
    hires = HiresFix(hr_scale=1.5, denoising_strength=0.5, hr_second_pass_steps=2)
    steps = []
    try:
        ctx = JobContext(on_step=lambda info: steps.append(info.pass_index))
        result = run(tiny_sdxl_model, tiny_sdxl_refiner_model,
                     request(hires=hires, refiner_checkpoint="r", refiner_switch_at=0.0), ctx)  # fmt: skip
    finally:
        hook.remove()
    assert result.images[0].image.size == (96, 96)
    assert steps == [0] * 4 + [1] * 2 and calls  # A1111's hires_fix_refiner_pass "second pass"


def test_interrupt_at_the_switch_returns_the_last_estimate(tiny_sdxl_model, tiny_sdxl_refiner_model):
    ctx = JobContext()
    ctx.on_step = lambda info: ctx.interrupt() if info.step == 2 else None
    result = run(
        tiny_sdxl_model, tiny_sdxl_refiner_model, request(refiner_checkpoint="r", refiner_switch_at=0.5), ctx
    )
    assert result.interrupted and len(result.images) == 1
    assert "Refiner" not in parse_infotext(result.images[0].infotext)  # the switch never came


def test_bad_refiner_fields_name_the_field(tiny_sdxl_model):
    with pytest.raises(RequestError) as caught:
        request(refiner_checkpoint="r", refiner_switch_at=1.5).validate()
    assert caught.value.field == "refiner_switch_at"
    with pytest.raises(RequestError) as caught:  # a bare engine call has no model manager to switch with
        generate(
            tiny_sdxl_model, request(refiner_checkpoint="r"), JobContext(), EngineSettings(save_images=False)
        )
    assert caught.value.field == "refiner_checkpoint"


# -- over real HTTP ----------------------------------------------------------------------------------------
TINY = {"prompt": "a cat", "seed": 7, "width": 64, "height": 64, "steps": 4, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("refiner-api")
    tiny_models.write_sdxl_base_and_refiner(data_dir / "models" / "Stable-diffusion")
    write_settings(data_dir, {"sd_checkpoints_limit": 2, "sd_model_checkpoint": "base.safetensors"})
    with start_server(data_dir) as srv:
        yield srv


def post(server, body, path="/txt2img"):
    return requests.post(server.api + path, json=body, timeout=300)


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_api_refiner_switches_names_it_and_pastes_back(server):
    plain = post(server, TINY)
    r = post(server, {**TINY, "refiner_checkpoint": "refiner", "refiner_switch_at": 0.5})
    assert r.status_code == 200, r.text
    image = decode(r.json()["images"][0])
    params = parse_infotext(read_infotext(image))
    assert params["Refiner"].startswith("refiner [") and params["Refiner switch at"] == "0.5"
    a, b = (np.asarray(decode(x.json()["images"][0]).convert("RGB"), dtype=np.int16) for x in (r, plain))
    assert np.abs(a - b).mean() > 0.5
    again = post(server, {**TINY, "refiner_checkpoint": params["Refiner"], "refiner_switch_at": 0.5})
    assert again.status_code == 200, again.text  # the infotext's "name [hash]" names the refiner
    assert np.array_equal(np.asarray(decode(again.json()["images"][0]).convert("RGB"), dtype=np.int16), a)
    assert json_info(r)["sd_model_name"] == "base"  # the job's model stays the base
    assert server.log().count("Loaded refiner") == 1  # kept in RAM (sd_checkpoints_limit 2): loaded once
    pasted = requests.post(server.api + "/png-info", json={"image": r.json()["images"][0]}, timeout=60).json()
    assert pasted["parameters"]["Refiner"] == params["Refiner"]


def json_info(response):
    import json

    return json.loads(response.json()["info"])


@pytest.mark.parametrize("field", ["refiner_checkpoint", "hr_checkpoint_name"])
def test_api_unknown_checkpoint_is_422_naming_it(server, field):
    body = {**TINY, field: "nope", "enable_hr": True}
    r = post(server, body)
    assert r.status_code == 422, r.text
    assert field in r.text and "nope" in r.text and "base" in r.text


def test_api_refiner_none_and_img2img(server):
    assert post(server, {**TINY, "refiner_checkpoint": "None", "refiner_switch_at": 0.5}).status_code == 200
    init = base64.b64encode(_png(Image.new("RGB", (64, 64), (200, 80, 40)))).decode()
    body = {**TINY, "init_images": [init], "denoising_strength": 0.8, "refiner_checkpoint": "refiner"}
    r = post(server, body, "/img2img")
    assert r.status_code == 200, r.text
    assert "Refiner: refiner [" in json_info(r)["infotexts"][0]


def test_api_hires_checkpoint(server):
    body = {**TINY, "enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.6, "hr_second_pass_steps": 2}
    same = post(server, body)
    other = post(server, {**body, "hr_checkpoint_name": "base.safetensors"})
    assert same.status_code == other.status_code == 200, other.text
    params = parse_infotext(read_infotext(decode(other.json()["images"][0])))
    assert params["Hires checkpoint"].startswith("base [")
    a, b = (np.asarray(decode(x.json()["images"][0]).convert("RGB")) for x in (same, other))
    assert np.array_equal(a, b)  # the same weights: the same image, only the infotext names it


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- the UI accordion ----------------------------------------------------------------------------------------
def test_ui_refiner_accordion_resolves_and_pastes_back(tmp_path):
    import gradio as gr

    from sdwebui.config.options import Options, default_templates
    from sdwebui.config.resolve import RawFields, resolve
    from webui.params import build_params
    from webui.paste import field_updates
    from webui.prompt_row import PromptRow
    from webui.refiner import build_refiner
    from webui.ui_config import UiConfig

    class Backend:
        def checkpoints(self):
            return ["base.safetensors [aaaaaaaaaa]", "refiner.safetensors [0123456789]"]

    cfg = UiConfig(tmp_path / "ui-config.json")
    with gr.Blocks():
        params = build_params("txt2img", cfg, ["Euler"], ["Automatic"], "Euler", native_size=64)
        refiner = build_refiner("txt2img", cfg, Backend())
        row = PromptRow.__new__(PromptRow)  # only its two prompt boxes are read by the paste
        row.prompt, row.negative_prompt = gr.Textbox(), gr.Textbox()
    off = resolve(RawFields(prompt="x", **refiner.request_fields({c: c.value for c in refiner.components()})),
                  Options(default_templates())).request  # fmt: skip
    assert off.refiner_checkpoint is None
    values = {refiner.checkpoint: "refiner.safetensors [0123456789]", refiner.switch_at: 0.6}
    on = resolve(
        RawFields(prompt="x", **refiner.request_fields(values)), Options(default_templates())
    ).request
    assert (on.refiner_checkpoint, on.refiner_switch_at) == ("refiner.safetensors [0123456789]", 0.6)
    parsed = parse_infotext("x\nSteps: 4, Seed: 1, Refiner: refiner [0123456789], Refiner switch at: 0.6")
    updates = field_updates(parsed, row, params, refiner.paste_fields())
    assert updates[refiner.checkpoint] == "refiner.safetensors [0123456789]"
    assert updates[refiner.switch_at] == 0.6


@pytest.mark.browser
@RERUN_FRONT_END_RACES
def test_browser_refiner_accordion_switches_and_names_the_refiner(page, shot):
    wait_ui_loaded(page)
    page.fill("#txt2img_prompt textarea", "a red apple")
    for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 4)):
        set_number(page, elem_id, value)
    page.click("#txt2img_refiner")  # the accordion's header opens it
    dropdown = page.locator("#txt2img_refiner_checkpoint input")
    dropdown.click()
    page.locator("ul[role=listbox] li[role=option]", has_text="tiny-sd1").first.click()
    set_number(page, "txt2img_refiner_switch_at", 0.5)
    shot(page, "refiner")
    page.click("#txt2img_generate")
    info = wait_result(page, "txt2img", timeout=120_000)
    shot(page, "generated")
    assert "Refiner: tiny-sd1 [" in info and "Refiner switch at: 0.5" in info
