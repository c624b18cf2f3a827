"""The one resolution path (sdwebui.config.resolve): each setting that reaches a request, through the API's
payload mapping and through the UI's fields; the engine and one real server check what the settings do."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import gradio as gr
import pytest
import requests
from PIL import Image

from sdwebui.api import models
from sdwebui.api.mapping import build_request
from sdwebui.config.options import Options, default_templates
from sdwebui.config.paths import DataPaths
from sdwebui.config.resolve import RawFields, RawImg2ImgFields, SettingsSource, resolve
from sdwebui.config.styles import StyleDatabase
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate, plan_job
from sdwebui.engine.requests import RequestError
from tests import tiny_models
from tests.api_server import start_server

MAX_PIXELS = 4096 * 4096
STYLES_CSV = 'name,prompt,negative_prompt\nbest,"best, {prompt}",blurry\n'
INIT = Image.new("RGB", (64, 64), (120, 40, 200))


@pytest.fixture
def options() -> Options:
    return Options(default_templates())


@pytest.fixture
def styles(tmp_path) -> StyleDatabase:
    (tmp_path / "styles.csv").write_text(STYLES_CSV)
    return StyleDatabase(tmp_path / "styles.csv")


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def through_api(options, db, overrides=None, **fields):
    """The API's path: a payload as a client sends it -> mapping.build_request."""
    if "init_images" in fields:
        fields["init_images"] = [_png(image) for image in fields["init_images"]]
        payload = models.Img2ImgPayload(**fields, override_settings=overrides)
    else:
        payload = models.Txt2ImgPayload(**fields, override_settings=overrides)
    return build_request(payload, options, db, MAX_PIXELS)


def through_ui(options, db, overrides=None, **fields):
    """The UI's path: the tab's fields as a RawFields record -> resolve (what UiBackend.resolve runs)."""
    record = RawImg2ImgFields if "init_images" in fields else RawFields
    return resolve(record(**fields), options, overrides, SettingsSource(styles=db)).request


FRONT_ENDS = pytest.mark.parametrize("front", [through_api, through_ui], ids=["api", "ui"])


@FRONT_ENDS
def test_clip_skip_comes_from_the_setting_and_an_override_wins(front, options, styles):
    assert front(options, styles, prompt="a").clip_skip == 1
    options.set("CLIP_stop_at_last_layers", 2)  # the quicksettings slider
    assert front(options, styles, prompt="a").clip_skip == 2
    request = front(options, styles, {"CLIP_stop_at_last_layers": 3.0}, prompt="a")
    assert request.clip_skip == 3 and request.override_settings == {"CLIP_stop_at_last_layers": 3}
    with pytest.raises(RequestError) as err:
        front(options, styles, {"CLIP_stop_at_last_layers": 13}, prompt="a")
    assert err.value.field == "override_settings" and "CLIP_stop_at_last_layers" in err.value.reason


@FRONT_ENDS
def test_default_sampler_and_schedule_type_apply_when_none_is_sent(front, options, styles):
    request = front(options, styles, prompt="a")
    assert (request.sampler_name, request.scheduler) == ("Euler a", "Automatic")
    options.set("default_sampler", "DPM++ 2M")
    options.set("default_scheduler", "Karras")
    request = front(options, styles, prompt="a")
    assert (request.sampler_name, request.scheduler) == ("DPM++ 2M", "Karras")
    request = front(options, styles, prompt="a", sampler_name="Euler", scheduler="Automatic")
    assert (request.sampler_name, request.scheduler) == ("Euler", "Automatic")  # what was sent wins
    assert front(options, styles, {"default_sampler": "Euler"}, prompt="a").sampler_name == "Euler"
    with pytest.raises(RequestError) as err:
        front(options, styles, {"default_sampler": "Nope"}, prompt="a")
    assert err.value.field == "override_settings" and "default_sampler" in err.value.reason


def test_eta_settings_are_the_jobs_unless_the_request_sends_eta(options, styles):
    options.set("eta_ddim", 0.3)
    resolved = resolve(RawFields(sampler_name="DDIM"), options, None, SettingsSource(styles=styles))
    assert resolved.request.eta is None and resolved.settings.eta_ddim == 0.3
    resolved = resolve(RawFields(sampler_name="DDIM"), options, {"eta_ddim": 0.6})
    assert resolved.settings.eta_ddim == 0.6  # the override wins over the setting
    assert resolve(RawFields(sampler_name="DDIM", eta=0.9), options).request.eta == 0.9
    assert resolve(RawFields(sampler_name="Euler a"), options).settings.eta_ancestral == 1.0
    # diffusers' ancestral samplers have eta fixed at 1: another eta setting is refused before the job runs
    with pytest.raises(RequestError) as err:
        resolve(RawFields(sampler_name="Euler a"), options, {"eta_ancestral": 0.5})
    assert err.value.field == "eta_ancestral" and "eta=0.5" in err.value.reason
    with pytest.raises(RequestError) as err:
        through_api(options, styles, prompt="a", sampler_name="Euler a", eta=0.5)
    assert err.value.field == "eta"


def test_ensd_and_noise_seed_settings_reach_the_job(options):
    assert resolve(RawFields(), options).settings.eta_noise_seed_delta == 0
    options.set("eta_noise_seed_delta", 31337)
    assert resolve(RawFields(), options).settings.eta_noise_seed_delta == 31337
    assert resolve(RawFields(), options, {"eta_noise_seed_delta": 7}).settings.eta_noise_seed_delta == 7
    with pytest.raises(RequestError):
        resolve(RawFields(), options, {"eta_noise_seed_delta": -1})


def _run(model, options, overrides=None, **fields):
    fields = {"prompt": "a cube", "seed": 11, "steps": 3, "width": 64, "height": 64, **fields}
    resolved = resolve(RawFields(**fields, save_images=False), options, overrides)
    result = generate(model, resolved.request, JobContext(), resolved.settings)
    return result.pil_images[0], result.infotexts[0]


def _same(a: Image.Image, b: Image.Image) -> bool:
    return a.tobytes() == b.tobytes()


def test_ensd_changes_the_step_noise_of_ancestral_samplers_only(tiny_sd1_model, options):
    plain, plain_text = _run(tiny_sd1_model, options, sampler_name="Euler a")
    delta, delta_text = _run(tiny_sd1_model, options, {"eta_noise_seed_delta": 31337}, sampler_name="Euler a")
    assert not _same(plain, delta) and "ENSD: 31337" in delta_text and "ENSD" not in plain_text
    # Euler draws no step noise: the delta changes nothing and is not written
    euler, _ = _run(tiny_sd1_model, options, sampler_name="Euler")
    euler_delta, euler_text = _run(
        tiny_sd1_model, options, {"eta_noise_seed_delta": 31337}, sampler_name="Euler"
    )
    assert _same(euler, euler_delta) and "ENSD" not in euler_text


def test_eta_ddim_setting_changes_the_image(tiny_sd1_model, options):
    deterministic, _ = _run(tiny_sd1_model, options, sampler_name="DDIM")
    noisy, text = _run(tiny_sd1_model, options, {"eta_ddim": 0.8}, sampler_name="DDIM")
    assert not _same(deterministic, noisy) and "Sampler: DDIM" in text


@FRONT_ENDS
def test_noise_multiplier_and_img2img_settings_reach_the_request(front, options, styles):
    request = front(options, styles, prompt="a", init_images=[INIT])
    assert request.initial_noise_multiplier == 1.0 and request.img2img_fix_steps is False
    options.set("initial_noise_multiplier", 0.5)
    options.set("img2img_fix_steps", True)
    options.set("inpainting_mask_weight", 0.25)
    request = front(options, styles, prompt="a", init_images=[INIT])
    assert (request.initial_noise_multiplier, request.img2img_fix_steps) == (0.5, True)
    assert request.inpainting_mask_weight == 0.25
    request = front(options, styles, {"initial_noise_multiplier": 0.7}, prompt="a", init_images=[INIT])
    assert request.initial_noise_multiplier == 0.7  # the override wins over the setting
    request = front(
        options, styles, {"initial_noise_multiplier": 0.7}, prompt="a", init_images=[INIT], initial_noise_multiplier=0.9
    )  # fmt: skip
    assert request.initial_noise_multiplier == 0.9  # a field sent with the request wins over both
    assert request.init_images[0].size == (64, 64)


def test_filename_pattern_format_and_save_settings_reach_the_job(tmp_path, options):
    source = SettingsSource(paths=DataPaths(tmp_path))
    settings = resolve(RawFields(), options, None, source).settings
    assert (settings.filename_pattern, settings.samples_format, settings.save_images) == (
        "[seed]",
        "png",
        True,
    )
    assert settings.outputs_root == DataPaths(tmp_path).outputs_dir
    options.set("samples_filename_pattern", "[seed]-[prompt_words]")
    options.set("samples_format", "webp")
    options.set("samples_save", False)
    options.set("save_images_add_number", False)
    settings = resolve(RawFields(), options, None, source).settings
    assert (settings.filename_pattern, settings.samples_format) == ("[seed]-[prompt_words]", "webp")
    assert settings.save_images is False and settings.add_number is False
    overrides = {"samples_filename_pattern": "[none]", "samples_format": "jpg", "outdir_samples": "mine"}
    settings = resolve(RawFields(), options, overrides, source).settings
    assert (settings.filename_pattern, settings.samples_format) == ("[none]", "jpg")
    assert settings.outputs_root == tmp_path / "mine"
    options.set("samples_filename_pattern", "")  # empty: the default pattern
    assert resolve(RawFields(), options).settings.filename_pattern == "[seed]"
    with pytest.raises(RequestError) as err:
        resolve(RawFields(), options, {"samples_filename_pattern": "[seed]-[lora]"})
    assert err.value.field == "override_settings" and "[lora]" in err.value.reason


def test_the_api_saves_only_when_asked_and_the_ui_as_the_setting_says(options, styles):
    assert through_api(options, styles, prompt="a").do_not_save_samples is True
    request = through_api(options, styles, prompt="a", save_images=True)
    assert request.do_not_save_samples is False and request.do_not_save_grid is False
    assert through_ui(options, styles, prompt="a").do_not_save_samples is False


@FRONT_ENDS
def test_override_settings_are_checked_against_the_options(front, options, styles):
    for overrides, named in (
        ({"no_such_setting": 1}, "no_such_setting"),
        ({"limit_steps": 150}, "limit_steps"),  # a request cannot lift its own limits
        ({"samples_save": "yes"}, "samples_save"),
        ({"eta_ddim": 1.5}, "eta_ddim"),
    ):
        with pytest.raises(RequestError) as err:
            front(options, styles, overrides, prompt="a")
        assert err.value.field == "override_settings" and named in err.value.reason, overrides


@FRONT_ENDS
def test_styles_are_checked_by_the_resolution_and_applied_once_by_the_engine(front, options, styles):
    request = front(options, styles, prompt="a cat", negative_prompt="ugly", styles=["best"])
    assert (request.prompt, request.negative_prompt, request.styles) == ("a cat", "ugly", ["best"])
    state = plan_job(request, resolve(RawFields(), options, None, SettingsSource(styles=styles)).settings)
    assert state.all_prompts == ["best, a cat"] and state.all_negative_prompts == ["ugly, blurry"]
    with pytest.raises(RequestError) as err:
        front(options, styles, prompt="a cat", styles=["nope"])
    assert err.value.field == "styles" and "nope" in err.value.reason


def _data_dir(root: Path) -> Path:
    folder = root / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    tiny_models.write_single_file(tiny_models.tiny_loaded_model("sd1"), folder / "alpha.safetensors")
    (root / "styles.csv").write_text(STYLES_CSV)
    return root


def test_ui_clip_skip_quicksetting_and_styles_reach_the_infotext(tmp_path):
    from modules import cmd_args
    from sdwebui.services import build_services
    from webui.backend import UiBackend
    from webui.params import build_params_for
    from webui.ui_config import UiConfig

    services = build_services(
        cmd_args.parse_args(["--data-dir", str(_data_dir(tmp_path)), "--use-cpu", "all"])
    )
    try:
        backend = UiBackend(services)
        with gr.Blocks():
            params = build_params_for("txt2img", UiConfig(None), backend)
        assert backend.set_option("CLIP_stop_at_last_layers", 2)  # what the quicksettings slider does
        values = {component: component.value for component in params.components()}
        values.update({params.steps: 2, params.seed: 5, params.sampler_name: "Euler"})
        raw = RawFields(prompt="a cat", styles=["best"], **params.request_fields(values))
        result = backend.submit(backend.resolve(raw)).wait(timeout=300)
        (infotext,) = result.infotexts
        assert infotext.startswith("best, a cat\nNegative prompt: blurry\n")
        assert "Clip skip: 2" in infotext and infotext.count("best") == 1
    finally:
        services.jobs.shutdown()


def test_settings_and_overrides_reach_the_infotext_over_http(tmp_path):
    with start_server(_data_dir(tmp_path), ["--use-cpu", "all"]) as server:

        def txt2img(**body) -> dict:
            body = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 3, **body}
            response = requests.post(server.api + "/txt2img", json=body, timeout=300)
            assert response.status_code == 200, response.text
            return json.loads(response.json()["info"])

        overrides = {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337}
        info = txt2img(styles=["best"], sampler_name="Euler a", override_settings=overrides)
        (infotext,) = info["infotexts"]
        assert infotext.startswith("best, a cat\nNegative prompt: blurry\n") and infotext.count("best") == 1
        assert "Clip skip: 2" in infotext and "ENSD: 31337" in infotext and info["clip_skip"] == 2
        changed = {"CLIP_stop_at_last_layers": 2, "default_sampler": "Euler"}  # the tiny model has 2 layers
        assert requests.post(server.api + "/options", json=changed, timeout=60).status_code == 200
        info = txt2img()
        assert info["sampler_name"] == "Euler" and "Clip skip: 2" in info["infotexts"][0]
        info = txt2img(override_settings={"CLIP_stop_at_last_layers": 1})  # the override wins
        assert "Clip skip" not in info["infotexts"][0] and "ENSD" not in info["infotexts"][0]
