"""Forge's "VAE / Text Encoder" selector in real Chromium against the real app (app.py, a transformer-only
tiny Flux dev file whose VAE and text encoders lie in models/VAE and models/text_encoder): choosing the
parts in the top bar's dropdown lets a txt2img job run, its infotext names them (`Module 1: ae`), and PNG
Info's "Send to txt2img" chooses them again."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from sdwebui.models.model import ModelFamily
from tests import dit_fixtures as fx
from tests.browser import RERUN_FRONT_END_RACES, start_server, stop_server
from tests.test_ui_browser import read_in_pnginfo, small_job, wait_result

pytest_plugins = ("tests.browser",)  # browser, page, shot fixtures

pytestmark = [pytest.mark.browser, RERUN_FRONT_END_RACES]

PARTS = ("ae.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors")


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """The browser fixtures' server, on the tiny Flux dev and its three part files."""
    from tests.browser import CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium")
    data_dir = tmp_path_factory.mktemp("flux-ui-data")
    model = fx.tiny_dit_model(ModelFamily.FLUX_DEV, tmp_path_factory.mktemp("flux-build"))
    checkpoint = fx.write_flux_transformer_only(
        model, tmp_path_factory.mktemp("checkpoints") / "flux1-dev-tiny.safetensors"
    )
    fx.write_parts(model, data_dir / "models" / "text_encoder", data_dir / "models" / "VAE")
    handle = start_server(data_dir, checkpoint)
    yield handle
    stop_server(handle)


def chosen_parts(server) -> list[str]:
    with urllib.request.urlopen(f"{server.url}/sdapi/v1/options", timeout=30) as response:
        return json.load(response)["forge_additional_modules"]


def choose_none(server) -> None:
    body = json.dumps({"forge_additional_modules": []}).encode()
    request = urllib.request.Request(
        f"{server.url}/sdapi/v1/options", body, {"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=120).close()


def wait_chosen(server, wanted: list[str], timeout: float = 60) -> None:
    """The dropdown's change reaches the setting through the job queue: wait for it before generating."""
    deadline = time.monotonic() + timeout
    while chosen_parts(server) != wanted:
        assert time.monotonic() < deadline, chosen_parts(server)
        time.sleep(0.2)


def test_choosing_the_parts_in_the_dropdown_runs_flux_and_names_them(page, ui_server, shot, tmp_path):
    # the model's family sets the page (Forge's presets): Euler, CFG 1, Distilled CFG Scale 3.5 shown
    cfg = "#txt2img_cfg_scale input[type=number]"
    page.wait_for_function(f"document.querySelector('{cfg}').value === '1'")
    assert page.input_value("#txt2img_distilled_cfg_scale input[type=number]") == "3.5"
    assert page.input_value("#txt2img_sampling input") == "Euler"
    selector = page.locator("#setting_quick_forge_additional_modules")
    for part in PARTS:
        selector.locator("input").click()
        page.locator("ul[role=listbox] li[role=option]", has_text=part).first.click()
    page.keyboard.press("Escape")
    for part in PARTS:  # each choice shows as a token in the dropdown
        assert part in selector.inner_text()
    shot(page, "parts-chosen")
    wait_chosen(ui_server, list(PARTS))
    page.fill("#txt2img_prompt textarea", "a cat")
    small_job(page, "txt2img", steps=1)
    page.click("#txt2img_generate")
    info = wait_result(page, "txt2img")
    shot(page, "generated")
    assert "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16" in info, info
    assert "Model: flux1-dev-tiny" in info
    assert "Sampler: Euler," in info and "CFG scale: 1," in info and "Distilled CFG Scale: 3.5" in info
    # cleared elsewhere (the API), then pasted back from the image's parameters
    choose_none(ui_server)
    page.reload()
    page.wait_for_function("document.body.dataset.uiLoaded === '1'")
    assert "ae.safetensors" not in selector.inner_text()
    read_in_pnginfo(page, tmp_path / "flux.png", info, "Module 3: t5xxl_fp16")
    page.click("#pnginfo_send_txt2img")
    wait_chosen(ui_server, list(PARTS))
    assert all(part in selector.inner_text() for part in PARTS)
    shot(page, "pasted")
