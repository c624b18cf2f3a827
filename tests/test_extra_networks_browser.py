"""The extra networks panel in real Chromium against the real app (app.py, tiny SD1 checkpoint): Lora and
Textual Inversion cards with previews served by name, search, folder tree, sort, a card click adding its
tag with the preferred weight and activation text (negative text to the negative prompt), the edit dialog
writing name.json and showing the training metadata, and a job run from the added tag. One server for the
module; screenshots under test-artifacts/."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import torch
from PIL import Image

from tests.browser import RERUN_FRONT_END_RACES, start_server, stop_server, write_tiny_checkpoint
from tests.lora_fixtures import save_safetensors
from tests.test_lora import lora_tensors
from tests.test_ui_browser import small_job, wait_result

pytest_plugins = ("tests.browser",)  # browser, page, shot fixtures

pytestmark = [pytest.mark.browser, RERUN_FRONT_END_RACES]


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """The browser fixtures' server, over a data dir with three Loras (two in sub-folders) and one embedding."""
    from tests.browser import CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium")
    data_dir = tmp_path_factory.mktemp("en-data")
    lora_dir = data_dir / "models" / "Lora"
    training = {
        "ss_output_name": "painterly",
        "ss_network_dim": "4",
        "ss_tag_frequency": '{"a": {"cube": 3}}',
    }
    save_safetensors(lora_tensors(), lora_dir / "styles" / "style.safetensors", training)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(lora_dir / "styles" / "style.preview.png")
    save_safetensors(lora_tensors(seed=1), lora_dir / "chars" / "hero.safetensors")
    save_safetensors(lora_tensors(seed=2), lora_dir / "zeta.safetensors")
    save_safetensors({"emb_params": torch.randn(2, 32) * 0.5}, data_dir / "embeddings" / "shiny.safetensors")
    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoints"))
    handle = start_server(data_dir, checkpoint)
    yield handle
    stop_server(handle)


def open_lora_tab(page) -> None:
    page.click(
        "#txt2img_extra_networks button:has-text('Extra networks'), #txt2img_extra_networks .label-wrap"
    )
    page.click("#txt2img_lora_tab-button")
    page.wait_for_selector("#txt2img_lora_cards .extra-network-card")


def visible_cards(page, kind: str = "lora") -> list[str]:
    return page.eval_on_selector_all(
        f"#txt2img_{kind}_cards .extra-network-card",
        "cards => cards.filter(c => c.offsetParent !== null).map(c => c.dataset.name)",
    )


def thumb(server, query: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{server.url}/sd_extra_networks/thumb?{query}", timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_cards_search_tree_sort_and_previews_by_name(page, ui_server, shot):
    open_lora_tab(page)
    assert visible_cards(page) == ["hero", "style", "zeta"]  # by name, ascending
    page.wait_for_function(
        "document.querySelector('#txt2img_lora_cards [data-name=style] img.card-preview')?.naturalWidth === 16"
    )
    assert page.locator("#txt2img_lora_cards [data-name=hero] img").count() == 0  # no preview: none asked
    shot(page, "lora-cards")

    page.fill("#txt2img_lora_search", "her")
    assert visible_cards(page) == ["hero"]
    page.fill("#txt2img_lora_search", "painterly")  # the alias is searched too
    assert visible_cards(page) == ["style"]
    page.click("#txt2img_lora_tree .extra-network-dir[data-path='chars/']")
    assert page.input_value("#txt2img_lora_search") == "chars/" and visible_cards(page) == ["hero"]
    page.click("#txt2img_lora_tree .extra-network-dir[data-path='']")
    assert visible_cards(page) == ["hero", "style", "zeta"]

    page.click("#txt2img_lora_sort_dir")
    assert visible_cards(page) == ["zeta", "style", "hero"]
    page.select_option("#txt2img_lora_sort", "path")  # chars/hero, styles/style, zeta: descending
    assert visible_cards(page) == ["zeta", "style", "hero"]
    page.click("#txt2img_lora_sort_dir")
    assert visible_cards(page) == ["hero", "style", "zeta"]

    preview = ui_server.data_dir / "models" / "Lora" / "styles" / "style.preview.png"
    assert thumb(ui_server, "tab=lora&name=style") == (200, preview.read_bytes())
    for query in ("tab=lora&name=../styles/style", f"tab=lora&name={preview}", "tab=x&name=style",
                  "tab=lora&name=hero"):  # fmt: skip
        assert thumb(ui_server, query)[0] == 404, query


def test_edit_dialog_saves_json_and_a_click_adds_the_tag(page, ui_server, shot):
    open_lora_tab(page)
    page.click("#txt2img_lora_cards [data-name=style] .card-edit")
    page.wait_for_selector("#txt2img_extra_edit_dialog", state="visible")
    assert "ss_network_dim" in page.inner_text("#txt2img_extra_edit_training")
    page.fill("#txt2img_extra_edit_activation_text textarea", "oil paint")
    page.fill("#txt2img_extra_edit_negative_text textarea", "blurry")
    page.fill("#txt2img_extra_edit_description textarea", "a painted look")
    weight = page.locator("#txt2img_extra_edit_preferred_weight input[type=number]")
    weight.fill("0.8")
    weight.press("Enter")
    page.click("#txt2img_extra_edit_save")
    page.wait_for_selector("#txt2img_extra_edit_dialog", state="hidden")
    saved = json.loads((ui_server.data_dir / "models" / "Lora" / "styles" / "style.json").read_text())
    assert saved["activation text"] == "oil paint" and saved["preferred weight"] == 0.8
    assert saved["negative text"] == "blurry" and saved["description"] == "a painted look"
    page.wait_for_selector("#txt2img_lora_cards [data-name=style] .card-description")
    shot(page, "saved")

    page.fill("#txt2img_prompt textarea", "a red cube")
    page.click("#txt2img_lora_cards [data-name=style] .card-name")
    assert page.input_value("#txt2img_prompt textarea") == "a red cube <lora:painterly:0.8> oil paint"
    assert page.input_value("#txt2img_neg_prompt textarea") == "(blurry:1)"

    page.click("#txt2img_textual_inversion_tab-button")
    page.click("#txt2img_neg_prompt textarea")  # an embedding goes to the prompt focused last
    page.click("#txt2img_textual_inversion_cards [data-name=shiny]")
    assert page.input_value("#txt2img_neg_prompt textarea") == "(blurry:1) shiny"

    small_job(page, "txt2img")
    page.click("#txt2img_generate")
    info = wait_result(page, "txt2img")
    assert "<lora:painterly:0.8> oil paint" in info and "Lora hashes:" in info and "TI hashes:" in info
