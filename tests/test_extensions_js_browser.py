"""In Chromium: an extension's JavaScript using A1111's page API (onUiLoaded, onUiUpdate, onUiTabChange,
onOptionsChanged, gradioApp(), get_uiCurrentTab(Content), opts, titles, updateInput) runs after our UI is
built, and what it writes into the prompt box reaches the generation (tests/sample_extensions/sample-routes-js)."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from tests.browser import end_test_page, start_server, stop_server, write_tiny_checkpoint
from tests.sample_extensions.harness import SAMPLES

pytest_plugins = ("tests.browser",)  # the browser and module_page fixtures
pytestmark = [pytest.mark.browser]

STATE = "() => window.sampleRoutesJs"


@pytest.fixture(scope="module")
def js_server(tmp_path_factory, browser):  # browser first: it skips without Chromium
    data_dir = tmp_path_factory.mktemp("js-ui")
    shutil.copytree(SAMPLES / "sample-routes-js", data_dir / "extensions" / "sample-routes-js")
    (data_dir / "config.json").write_text(json.dumps({"eta_noise_seed_delta": 31}))
    handle = start_server(data_dir, write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoints")))
    yield handle
    stop_server(handle)


@pytest.fixture
def js_page(module_page, js_server, request):
    page = module_page.get()  # the module's page, freshly loaded (tests.browser.page)
    errors: list[str] = []

    def on_error(exc) -> None:
        errors.append(str(exc))

    page.on("pageerror", on_error)
    module_page.load(js_server.url)
    yield page
    page.remove_listener("pageerror", on_error)
    end_test_page(module_page, request)
    assert not errors, errors


def top_tab(page, label: str):
    return page.locator("#tabs button[role='tab']", has_text=label).first


def test_extension_js_runs_on_the_built_ui_and_its_prompt_reaches_the_job(js_page, js_server):
    page = js_page
    page.wait_for_function("() => window.sampleRoutesJs && sampleRoutesJs.loaded === 1")
    state = page.evaluate(STATE)
    assert state["tabAtLoad"] == "txt2img" and state["updates"] > 0
    assert state["domContentLoaded"] is True  # loaded in the page's <head>, as A1111 (aspect ratio helper)
    assert page.input_value("#txt2img_prompt textarea") == "written by extension js"
    page.wait_for_function("() => opts.eta_noise_seed_delta === 31 && sampleRoutesJs.optsSeen.includes(31)")
    assert page.evaluate("() => typeof opts.samples_format") == "string"
    page.wait_for_function("() => document.querySelector('#txt2img_generate').title !== ''")
    assert page.get_attribute("#txt2img_generate", "title") == "sample-routes-js tooltip"

    for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 2)):
        box = page.locator(f"#{elem_id} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
    page.click("#txt2img_generate")
    page.wait_for_function(
        "() => { const i = document.querySelector('#html_info_txt2img .infotext'); return i && i.innerText.includes('Seed:'); }",
        timeout=180_000,
    )
    saved = js_server.output_images("txt2img")
    assert saved, "no image saved"
    parameters = Image.open(saved[-1]).info["parameters"]
    assert parameters.startswith("written by extension js\n")  # updateInput reached Gradio's state


def test_tab_change_and_options_changed_callbacks(js_page):
    page = js_page
    page.wait_for_function("() => window.sampleRoutesJs && sampleRoutesJs.loaded === 1")
    top_tab(page, "img2img").click()
    page.wait_for_function("() => sampleRoutesJs.tabs.includes('tab_img2img')")
    assert page.evaluate("() => get_uiCurrentTab().textContent.trim()") == "img2img"
    assert page.evaluate("() => get_uiCurrentTabContent().id") == "tab_img2img"

    top_tab(page, "Settings").click()
    page.wait_for_function(
        "() => get_uiCurrentTabContent() && get_uiCurrentTabContent().id === 'tab_settings'"
    )
    page.locator("#settings button[role='tab']", has_text="Sampler parameters").first.click()
    box = page.locator("#setting_eta_noise_seed_delta input[type=number]")
    box.fill("42")
    box.press("Enter")
    page.click("#settings_submit")
    page.wait_for_function("() => opts.eta_noise_seed_delta === 42", timeout=60_000)
    assert 42 in page.evaluate("() => sampleRoutesJs.optsSeen")
    box.fill("31")
    box.press("Enter")
    page.click("#settings_submit")  # the same "1 setting(s) changed" message as before: opts still follow
    page.wait_for_function("() => opts.eta_noise_seed_delta === 31", timeout=60_000)
