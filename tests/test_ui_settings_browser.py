"""In Chromium: the Clip skip quicksetting reaches the job, Default sampler is the UI's default, an extra-network
tag is an error naming it, and start-up problems (a broken --ckpt, a bad config.json) are shown in the top bar."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.browser import (
    RERUN_FRONT_END_RACES,
    fresh_ui,
    set_number,
    start_server,
    stop_server,
    write_tiny_checkpoint,
)
from tests.waiting import wait_until

pytest_plugins = ("tests.browser",)  # the browser and module_page fixtures
pytestmark = [pytest.mark.browser, RERUN_FRONT_END_RACES]  # reruns: named front-end races only


@pytest.fixture(scope="module")
def settings_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ui-settings")
    write_tiny_checkpoint(data_dir / "models" / "Stable-diffusion")
    broken = tmp_path_factory.mktemp("elsewhere") / "broken.safetensors"
    broken.write_bytes(b"\x00not a checkpoint" * 64)
    (data_dir / "config.json").write_text('["not", "an", "object"]')
    handle = start_server(data_dir, broken)  # --ckpt names the broken file
    yield handle
    stop_server(handle)


def api(server, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server.url + "/sdapi/v1" + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"null")


def generate(page, prompt: str) -> None:
    page.fill("#txt2img_prompt textarea", prompt)
    for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 2)):
        set_number(page, elem_id, value)
    page.click("#txt2img_generate")
    page.wait_for_function(
        """() => {
            const info = document.querySelector('#html_info_txt2img .infotext');
            const error = document.querySelector('#txt2img_status .error-message');
            return (info && info.innerText.includes('Seed:')) || error;
        }""",
        timeout=120_000,
    )


def test_clip_skip_quicksetting_reaches_the_job_and_lora_is_an_error(module_page, settings_server):
    try:
        with fresh_ui(module_page, settings_server.url) as page:
            set_number(page, "setting_quick_CLIP_stop_at_last_layers", 2)
            wait_until(
                lambda: api(settings_server, "/options")["CLIP_stop_at_last_layers"] == 2,
                "the Clip skip quicksetting applied",
                interval=0.3,
            )
            generate(page, "a red cube")
            assert page.locator("#txt2img_status .error-message").count() == 0
            assert "Clip skip: 2" in page.inner_text("#html_info_txt2img .infotext")
            generate(page, "a cat <lora:detail:0.8>")
            assert "<lora:detail:0.8>" in page.inner_text("#txt2img_status .error-message")
    finally:
        api(settings_server, "/options", {"CLIP_stop_at_last_layers": 1})


def test_default_sampler_and_start_up_notices_are_shown(module_page, settings_server):
    api(settings_server, "/options", {"default_sampler": "DPM++ 2M"})
    try:
        wait_until(
            lambda: api(settings_server, "/options")["sd_model_checkpoint"],  # the start-up load is done
            "the start-up model load never finished",
            timeout=120,
            interval=0.5,
        )
        with fresh_ui(module_page, settings_server.url) as page:  # loaded after the change: it shows it
            assert page.input_value("#txt2img_sampling input") == "DPM++ 2M"
            notices = page.inner_text("#startup_notices")
            assert "broken.safetensors" in notices and "tiny-sd1" in notices
            assert "config.json.bad-" in notices
    finally:
        api(settings_server, "/options", {"default_sampler": "Euler a"})
