"""A1111's Hires. fix: the second pass at the hires size through the engine (tiny models), its size rules,
upscalers, infotext and paste-back, and the API's fields over real HTTP."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.hires import HiresFix
from sdwebui.engine.infotext_fields import parse_infotext
from sdwebui.engine.requests import RequestError, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.outputs.infotext import read_infotext
from tests.api_server import start_server, write_tiny_checkpoints
from tests.browser import RERUN_FRONT_END_RACES, set_number, wait_result, wait_ui_loaded

pytest_plugins = ("tests.browser",)  # browser, ui_server, page, shot fixtures

SIZE = 64


def request(hires: HiresFix | None = None, **changes) -> Txt2ImgRequest:
    base = dict(prompt="a cat", negative_prompt="blurry", seed=42, steps=3, width=SIZE, height=SIZE)
    base.update(changes)
    return Txt2ImgRequest(sampler_name=base.pop("sampler_name", "Euler"), hires=hires, **base)


def run(model, req, ctx=None):
    return generate(model, req, ctx or JobContext(), EngineSettings(save_images=False))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_output_has_the_hires_size_and_the_pass_samples(tiny_sd1_model):
    steps = []
    ctx = JobContext(on_step=lambda info: steps.append((info.step, info.steps, info.pass_index)))
    result = run(tiny_sd1_model, request(HiresFix(hr_scale=1.5, denoising_strength=0.5)), ctx)
    assert result.images[0].image.size == (96, 96)
    # progress spans both passes: 3 first-pass steps, then 3 hires steps (hr_second_pass_steps 0 = steps)
    assert steps == [(1, 6, 0), (2, 6, 0), (3, 6, 0), (4, 6, 1), (5, 6, 1), (6, 6, 1)]


def test_second_pass_steps_are_their_own(tiny_sd1_model):
    steps = []
    ctx = JobContext(on_step=lambda info: steps.append((info.steps, info.pass_index)))
    run(tiny_sd1_model, request(HiresFix(hr_second_pass_steps=2)), ctx)
    assert steps == [(5, 0)] * 3 + [(5, 1)] * 2


def test_latent_second_pass_changes_the_image_vs_plain_upscale(tiny_sd1_model):
    plain = run(tiny_sd1_model, request(HiresFix(hr_scale=2, hr_upscaler="Lanczos", denoising_strength=0)))
    latent = run(tiny_sd1_model, request(HiresFix(hr_scale=2, hr_upscaler="Latent")))
    nearest = run(tiny_sd1_model, request(HiresFix(hr_scale=2, hr_upscaler="Latent (nearest)")))
    a, b, c = (pixels(r.images[0].image) for r in (plain, latent, nearest))
    assert a.shape == b.shape == c.shape == (128, 128, 3)
    assert np.abs(a - b).mean() > 0.5 and np.abs(b - c).mean() > 0.0
    again = run(tiny_sd1_model, request(HiresFix(hr_scale=2, hr_upscaler="Latent")))
    assert np.array_equal(pixels(again.images[0].image), b)  # the hires noise comes from the seeds


def test_denoise_zero_with_lanczos_is_the_lanczos_upscale_of_the_first_pass(tiny_sd1_model):
    first = run(tiny_sd1_model, request()).images[0].image
    steps = []
    ctx = JobContext(on_step=lambda info: steps.append(info.pass_index))
    hires = HiresFix(hr_scale=2, hr_upscaler="Lanczos", denoising_strength=0)
    result = run(tiny_sd1_model, request(hires), ctx)
    expected = first.resize((128, 128), resample=Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(result.images[0].image), pixels(expected))
    assert steps == [0, 0, 0]  # no second sampling


def test_image_upscaler_with_denoise_resamples(tiny_sd1_model):
    only = run(tiny_sd1_model, request(HiresFix(hr_upscaler="Nearest", denoising_strength=0)))
    resampled = run(tiny_sd1_model, request(HiresFix(hr_upscaler="Nearest", denoising_strength=0.6)))
    a, b = pixels(only.images[0].image), pixels(resampled.images[0].image)
    assert a.shape == b.shape == (128, 128, 3) and np.abs(a - b).mean() > 0.5


def test_latent_upscale_only_at_denoise_zero_and_img2img_refuses_hires(tiny_sd1_model):
    from sdwebui.engine.requests import Img2ImgRequest

    steps = []
    ctx = JobContext(on_step=lambda info: steps.append(info.pass_index))
    result = run(tiny_sd1_model, request(HiresFix(denoising_strength=0)), ctx)
    assert result.images[0].image.size == (128, 128) and steps == [0, 0, 0]
    img2img = Img2ImgRequest(init_images=[Image.new("RGB", (64, 64))], width=64, height=64, hires=HiresFix())
    with pytest.raises(RequestError) as error:
        img2img.validate()
    assert error.value.field == "enable_hr"


@pytest.mark.parametrize(
    ("hires", "first", "final"),
    [
        (HiresFix(hr_scale=2), (64, 96), (128, 192)),
        (HiresFix(hr_scale=1.3), (64, 64), (80, 80)),  # int(83.2) = 83 -> the latent grid
        (HiresFix(hr_scale=4, hr_resize_x=128), (64, 96), (128, 192)),  # resize wins, 0 keeps the aspect
        (HiresFix(hr_resize_y=160), (64, 128), (80, 160)),
        (HiresFix(hr_resize_x=128, hr_resize_y=96), (64, 64), (128, 96)),  # cover, then centre crop
        (HiresFix(hr_resize_x=96, hr_resize_y=160), (64, 64), (96, 160)),
    ],
)
def test_size_rules(hires, first, final):
    assert hires.size(*first).final == final


def test_resize_takes_precedence_through_the_engine(tiny_sd1_model):
    result = run(tiny_sd1_model, request(HiresFix(hr_scale=3, hr_resize_x=128, hr_resize_y=96)))
    assert result.images[0].image.size == (128, 96)


def test_interrupt_in_the_second_pass_returns_the_last_estimate(tiny_sd1_model):
    ctx = JobContext()

    def on_step(info):
        if info.pass_index == 1:
            ctx.interrupt()

    ctx.on_step = on_step
    result = run(tiny_sd1_model, request(HiresFix(denoising_strength=1.0)), ctx)
    assert result.interrupted and result.images[0].image.size == (128, 128)
    assert pixels(result.images[0].image).std() > 0


def test_hires_prompt_and_cfg_change_the_image(tiny_sd1_model):
    base = run(tiny_sd1_model, request(HiresFix()))
    other_prompt = run(tiny_sd1_model, request(HiresFix(hr_prompt="a red dog")))
    other_cfg = run(tiny_sd1_model, request(HiresFix(hr_cfg=2.0)))
    for result in (other_prompt, other_cfg):
        assert not np.array_equal(pixels(result.images[0].image), pixels(base.images[0].image))


def test_hires_prompt_gets_the_styles(tiny_sd1_model, tmp_path):
    from sdwebui.config.styles import StyleDatabase

    (tmp_path / "styles.csv").write_text('name,prompt,negative_prompt\nwrap,"best, {prompt}",\n')
    settings = EngineSettings(save_images=False, styles=StyleDatabase(tmp_path / "styles.csv"))
    styled = generate(
        tiny_sd1_model, request(HiresFix(hr_prompt="a dog"), styles=["wrap"]), JobContext(), settings
    )
    by_hand = run(tiny_sd1_model, request(HiresFix(hr_prompt="best, a dog"), prompt="best, a cat"))
    assert np.array_equal(pixels(styled.images[0].image), pixels(by_hand.images[0].image))


def test_sdxl_hires_pass(tiny_sdxl_model):
    result = run(tiny_sdxl_model, request(HiresFix(hr_scale=1.5), steps=2))
    assert result.images[0].image.size == (96, 96)


def test_infotext_keys_and_parse_back(tiny_sd1_model):
    hires = HiresFix(
        hr_scale=1.5,
        hr_upscaler="Latent (bicubic)",
        hr_second_pass_steps=2,
        denoising_strength=0.45,
        hr_sampler_name="DPM++ 2M",
        hr_scheduler="Karras",
        hr_prompt="a dog",
        hr_negative_prompt="ugly",
        hr_cfg=5.0,
    )
    text = run(tiny_sd1_model, request(hires)).images[0].infotext
    parsed = parse_infotext(text)
    assert parsed["Size-1"] == str(SIZE)  # the first pass's size, as A1111
    assert parsed["Denoising strength"] == "0.45"
    assert parsed["Hires upscale"] == "1.5" and parsed["Hires steps"] == "2"
    assert parsed["Hires upscaler"] == "Latent (bicubic)"
    assert parsed["Hires sampler"] == "DPM++ 2M" and parsed["Hires schedule type"] == "Karras"
    assert parsed["Hires prompt"] == "a dog" and parsed["Hires negative prompt"] == "ugly"
    assert parsed["Hires CFG Scale"] == "5"
    resized = run(tiny_sd1_model, request(HiresFix(hr_resize_x=96, hr_resize_y=80))).images[0].infotext
    parsed = parse_infotext(resized)
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == ("96", "80")
    for key in ("Hires upscale", "Hires sampler", "Hires steps", "Hires prompt", "Hires CFG Scale"):
        assert f"{key}:" not in resized  # only what differs, as A1111 writes them
    assert parsed["Hires sampler"] == "Use same sampler"  # A1111's parser default, for paste-back


def test_legacy_hires_sampler_names_split_on_parse():
    text = "a cat\nSteps: 3, Sampler: Euler, Seed: 1, Size: 64x64, Denoising strength: 0.5, Hires sampler: DPM++ 2M Karras"
    parsed = parse_infotext(text)
    assert (parsed["Hires sampler"], parsed["Hires schedule type"]) == ("DPM++ 2M", "Karras")
    assert (
        parse_infotext(text.replace("DPM++ 2M Karras", "Euler"))["Hires schedule type"]
        == "Use same scheduler"
    )


@pytest.mark.parametrize(
    ("hires", "field"),
    [
        (HiresFix(hr_scale=0), "hr_scale"),
        (HiresFix(hr_scale=100), "hr_scale"),
        (HiresFix(hr_upscaler=""), "hr_upscaler"),
        (HiresFix(hr_second_pass_steps=-1), "hr_second_pass_steps"),
        (HiresFix(denoising_strength=1.5), "denoising_strength"),
        (HiresFix(hr_resize_x=4096), "hr_resize_x"),
        (HiresFix(hr_scale=8), "hr_scale"),  # 64 * 8 is fine, 512 * 8 is not
    ],
)
def test_bad_values_name_the_field(hires, field):
    with pytest.raises(RequestError) as error:
        request(hires, width=512, height=512).validate()
    assert error.value.field == field


def test_an_upscaler_the_app_does_not_have_names_hr_upscaler():
    from sdwebui.engine import hires as hires_module

    hires_module.check_upscaler(HiresFix(hr_upscaler="Latent (bicubic)"), None)
    hires_module.check_upscaler(HiresFix(hr_upscaler="Lanczos"), None)
    with pytest.raises(RequestError) as error:  # a model name is known only with the app's upscaler files
        hires_module.check_upscaler(HiresFix(hr_upscaler="Bogus"), None)
    assert error.value.field == "hr_upscaler" and "Bogus" in str(error.value)


# -- over real HTTP ----------------------------------------------------------------------------------------
TINY = {"prompt": "a cat", "seed": 7, "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("hires-api")
    write_tiny_checkpoints(data_dir, ("alpha",))
    with start_server(data_dir) as srv:
        yield srv


def post(server, body):
    return requests.post(server.api + "/txt2img", json=body, timeout=300)


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_api_hires_size_infotext_and_upscale_only(server):
    r = post(server, {**TINY, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent (nearest-exact)",
                      "hr_second_pass_steps": 1, "denoising_strength": 0.5, "hr_cfg": 4})  # fmt: skip
    assert r.status_code == 200, r.text
    image = decode(r.json()["images"][0])
    assert image.size == (128, 128)
    parsed = parse_infotext(read_infotext(image))
    assert parsed["Hires upscaler"] == "Latent (nearest-exact)" and parsed["Hires steps"] == "1"
    assert parsed["Denoising strength"] == "0.5" and parsed["Hires CFG Scale"] == "4"
    assert json.loads(r.json()["info"])["width"] == 64  # the first pass's size, as A1111's info
    first = decode(post(server, TINY).json()["images"][0])
    body = {**TINY, "enable_hr": True, "hr_resize_x": 96, "hr_resize_y": 0, "hr_scale": 3,
            "hr_upscaler": "Lanczos", "denoising_strength": 0}  # fmt: skip
    only = decode(post(server, body).json()["images"][0])
    expected = first.resize((96, 96), resample=Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(only.convert("RGB")), pixels(expected.convert("RGB")))


def test_api_hr_fields_count_only_with_enable_hr(server):
    r = post(server, {**TINY, "enable_hr": False, "hr_scale": 2, "hr_upscaler": "Latent"})
    assert r.status_code == 200 and decode(r.json()["images"][0]).size == (64, 64)


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ({"hr_scale": 0}, "hr_scale", "between"),
        ({"hr_scale": 100}, "hr_scale", "between"),
        ({"hr_upscaler": "Bogus"}, "hr_upscaler", "Lanczos"),
        ({"hr_second_pass_steps": 500}, "hr_second_pass_steps", "150"),
        ({"denoising_strength": 2}, "denoising_strength", "between 0 and 1"),
        ({"hr_sampler_name": "Eulerish"}, "hr_sampler_name", "Euler a"),
        ({"hr_scheduler": "sometimes"}, "hr_scheduler", "schedule type"),
        ({"hr_sampler_name": "Euler a", "hr_scheduler": "Karras"}, "hr_scheduler", "Karras"),
        ({"hr_checkpoint_name": "other.safetensors"}, "hr_checkpoint_name", "unknown checkpoint"),
        ({"hr_resize_x": 4096}, "hr_resize_x", "2048"),
    ],
)
def test_api_bad_hires_values_are_422_naming_the_field(server, body, field, detail):
    r = post(server, {**TINY, "enable_hr": True, **body})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and detail in r.json()["detail"], r.json()


def test_api_hires_size_checked_once_the_native_size_is_known(server):
    body = {**TINY, "enable_hr": True, "hr_resize_x": 0, "hr_resize_y": 2048, "width": 512}
    del body["height"]  # the model's native 64: the hires width would be 16384, known only when the job runs
    r = post(server, body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "hr_resize_y" and "16384x2048" in r.json()["detail"]


# -- the UI's accordion, resolution and paste-back -----------------------------------------------------------
class _Backend:
    def samplers(self):
        from sdwebui.engine import samplers

        return samplers.sampler_names()

    def schedulers(self):
        return ["Automatic", "Karras"]

    def upscaler_models(self):
        return None  # no upscaler files: the latent modes and the plain resamplers

    def checkpoints(self):
        return ["alpha.safetensors [0123456789]", "beta.safetensors"]


def _ui(tmp_path):
    import gradio as gr

    from webui.params import build_hires, build_params
    from webui.prompt_row import PromptRow
    from webui.ui_config import UiConfig

    cfg = UiConfig(tmp_path / "ui-config.json")
    with gr.Blocks():
        params = build_params(
            "txt2img", cfg, _Backend().samplers(), ["Automatic", "Karras"], "Euler", native_size=64
        )
        hires = build_hires("txt2img", cfg, _Backend(), params)
        row = PromptRow.__new__(PromptRow)  # only its two prompt boxes are read by the paste
        row.prompt, row.negative_prompt = gr.Textbox(), gr.Textbox()
    return params, hires, row


def _values(params, hires, **changes):
    values = {params.sampler_name: "Euler", params.scheduler: "Automatic", params.steps: 3, params.width: 64,
              params.height: 64, params.batch_count: 1, params.batch_size: 1, params.cfg_scale: 7.0,
              params.seed: 42, params.subseed: -1, params.subseed_strength: 0.0, params.seed_resize_from_w: 0,
              params.seed_resize_from_h: 0}  # fmt: skip
    values.update({c: c.value for c in hires.components()})
    values.update({getattr(hires, name): value for name, value in changes.items()})
    return values


def test_ui_accordion_resolves_to_the_hires_request_and_pastes_back(tmp_path, tiny_sd1_model):
    from sdwebui.config.options import Options, default_templates
    from sdwebui.config.resolve import RawFields, resolve
    from webui.paste import field_updates

    params, hires, row = _ui(tmp_path)
    assert hires.hr_upscaler.value == "Latent" and "Lanczos" in [c[0] for c in hires.hr_upscaler.choices]
    values = _values(params, hires, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2,
                     hr_sampler_name="DPM++ 2M", hr_prompt="a dog", denoising_strength=0.4)  # fmt: skip
    raw = RawFields(prompt="a cat", **params.request_fields(values), **hires.request_fields(values))
    req = resolve(raw, Options(default_templates())).request
    assert req.hires.hr_scale == 1.5 and req.hires.hr_sampler_name == "DPM++ 2M" and req.hires.hr_cfg is None
    assert req.hires.hr_scheduler is None  # "Use same scheduler"
    text = run(tiny_sd1_model, req.replace(do_not_save_samples=True)).images[0].infotext
    # paste back into a fresh accordion: every hires control comes back
    params, fresh, row = _ui(tmp_path)
    updates = field_updates(parse_infotext(text), row, params, fresh.paste_fields())
    assert updates[fresh.enable_hr] is True and updates[fresh.hr_scale] == 1.5
    assert updates[fresh.hr_second_pass_steps] == 2 and updates[fresh.denoising_strength] == 0.4
    assert (
        updates[fresh.hr_sampler_name] == "DPM++ 2M" and updates[fresh.hr_scheduler] == "Use same scheduler"
    )
    assert updates[fresh.hr_upscaler] == "Latent" and updates[fresh.hr_prompt] == "a dog"
    assert (updates[fresh.hr_resize_x], updates[fresh.hr_resize_y]) == (0, 0)
    assert req.hires.hr_checkpoint_name is None  # "Use same checkpoint"
    pasted = field_updates({"Hires checkpoint": "alpha [0123456789]"}, row, params, fresh.paste_fields())
    assert pasted[fresh.hr_checkpoint_name] == "alpha.safetensors [0123456789]"
    plain = field_updates(parse_infotext(run(tiny_sd1_model, request()).images[0].infotext), row, params,
                          fresh.paste_fields())  # fmt: skip
    assert plain[fresh.enable_hr] is False
    off = resolve(
        RawFields(prompt="x", **hires.request_fields(_values(params, hires))), Options(default_templates())
    )
    assert off.request.hires is None


def test_ui_final_resolution_text():
    from webui.params import final_resolution

    assert final_resolution(True, 512, 768, 2, 0, 0) == (
        "from <span class='resolution'>512x768</span> to <span class='resolution'>1024x1536</span>"
    )
    assert final_resolution(True, 512, 512, 2, 1024, 768).endswith(">1024x768</span>")
    assert final_resolution(True, 512, 768, 2, 0, 600).endswith(">400x600</span>")
    assert final_resolution(False, 512, 512, 2, 0, 0) == ""


# -- in a real Chromium --------------------------------------------------------------------------------------
@pytest.mark.browser
@RERUN_FRONT_END_RACES
def test_browser_hires_accordion_generates_at_the_hires_size(page, shot):
    wait_ui_loaded(page)
    page.fill("#txt2img_prompt textarea", "a red apple")
    for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 2)):
        set_number(page, elem_id, value)
    page.click("#txt2img_enable_hr input[type=checkbox]")
    page.wait_for_selector("#txt2img_hr_scale", state="visible")
    set_number(page, "txt2img_hr_scale", 1.5)
    set_number(page, "txt2img_hires_steps", 1)
    page.wait_for_function(
        "document.querySelector('#txtimg_hr_finalres').innerText.includes('from 64x64 to 96x96')"
    )
    shot(page, "accordion")
    page.click("#txt2img_generate")
    info = wait_result(page, "txt2img", timeout=120_000)
    shot(page, "generated")
    assert "Hires upscale: 1.5" in info and "Hires steps: 1" in info and "Hires upscaler: Latent" in info
    page.wait_for_function("document.querySelector('#txt2img_gallery img')?.naturalWidth === 96")


def test_limits_count_the_hires_pass():
    from sdwebui.engine.requests import JobLimits

    limits = JobLimits(steps=10, image_pixels=100 * 100)
    with pytest.raises(RequestError) as error:
        limits.check(request(HiresFix(hr_scale=2)))
    assert error.value.field == "hr_scale" and "limit_image_pixels" in error.value.reason
    with pytest.raises(RequestError) as error:
        limits.check(request(HiresFix(hr_resize_x=128)))
    assert error.value.field == "hr_resize_x"
    with pytest.raises(RequestError) as error:
        limits.check(request(HiresFix(hr_scale=1.5, hr_second_pass_steps=20)))
    assert error.value.field == "hr_second_pass_steps"
    limits.check(request(HiresFix(hr_scale=1.5)))  # 96x96 fits


@pytest.mark.browser
@RERUN_FRONT_END_RACES
def test_browser_png_info_pastes_hires_back(page, shot, tmp_path):
    from sdwebui.outputs.infotext import png_info_with

    text = (
        "a castle\nSteps: 4, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 64x96, "
        "Denoising strength: 0.35, Hires upscale: 1.75, Hires steps: 3, Hires upscaler: Lanczos, "
        "Hires sampler: DPM++ 2M, Hires prompt: a tower"
    )
    path = tmp_path / "hires.png"
    Image.new("RGB", (64, 64)).save(path, pnginfo=png_info_with(text))
    page.click("#tab_pnginfo-button")
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        "document.querySelector('#pnginfo_generation_info textarea').value.includes('Hires upscale')"
    )
    page.click("#pnginfo_send_txt2img")
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value === 'a castle'")
    page.wait_for_function("document.querySelector('#txt2img_hr_scale input[type=number]')?.value === '1.75'")
    shot(page, "pasted")
    assert page.is_checked("#txt2img_enable_hr input[type=checkbox]")
    assert page.input_value("#txt2img_hires_steps input[type=number]") == "3"
    assert page.input_value("#txt2img_denoising_strength input[type=number]") == "0.35"
    assert page.input_value("#txt2img_hr_upscaler input") == "Lanczos"
    assert page.input_value("#txt2img_hr_sampler input") == "DPM++ 2M"
    assert page.input_value("#txt2img_hr_prompt textarea") == "a tower"
    assert "to 112x168" in page.inner_text("#txtimg_hr_finalres")


def test_live_previews_in_both_passes(tiny_sd1_model):
    seen = []
    ctx = JobContext(on_step=lambda info: seen.append((info.pass_index, tuple(info.latents.shape[2:]))))
    settings = EngineSettings(save_images=False, live_preview_every=1)
    generate(tiny_sd1_model, request(HiresFix(hr_scale=2, hr_second_pass_steps=2)), ctx, settings)
    assert seen == [(0, (8, 8))] * 3 + [(1, (16, 16))] * 2  # the denoised latents of each pass at its size
