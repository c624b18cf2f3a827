"""Browser checks of the UI fixes of issue 12, in real Chromium against the real app (app.py, tiny SD1
checkpoint): send-to carries the parameters, a failed job clears the gallery, Ctrl+Up/Down emphasis,
Interrupt/Skip only while a job runs, layout (no empty band, tooltips, Inpaint settings only on the masked
sub-tabs, the X/Y/Z checkbox row and legend), the brush scaled to the image, /docs offline, gallery files
complete with their parameters. The run's shared UI server (tests.browser.ui_server); screenshots under
test-artifacts/."""

from __future__ import annotations

import io
from urllib.parse import urljoin, urlparse

import pytest
from PIL import Image, ImageChops

from sdwebui.outputs.infotext import read_infotext
from tests.browser import RERUN_FRONT_END_RACES
from tests.test_ui_browser import (
    choose,
    draw_horizontal_stroke,
    gallery_image,
    set_number,
    set_option,
    small_job,
    upload_to_editor,
    wait_result,
)
from tests.tiny_models import TINY_RESOLUTION

pytest_plugins = ("tests.browser",)  # browser, ui_server, page, shot fixtures

pytestmark = [pytest.mark.browser, RERUN_FRONT_END_RACES]  # reruns: named front-end races only


def box(page, selector: str) -> dict:
    found = page.locator(selector).first.bounding_box()
    assert found is not None, f"{selector} is not shown"
    return found


def generate_txt2img(page, prompt: str, seed: int, steps: int = 2) -> str:
    page.fill("#txt2img_prompt textarea", prompt)
    small_job(page, "txt2img", steps=steps)
    set_number(page, "txt2img_seed", seed)
    page.click("#txt2img_generate")
    return wait_result(page, "txt2img")


def test_send_to_img2img_inpaint_and_extras_carry_the_parameters(page, ui_server, shot):
    page.fill("#txt2img_neg_prompt textarea", "fog")
    set_number(page, "txt2img_cfg_scale", 5.5)
    info = generate_txt2img(page, "a blue boat", seed=4321, steps=3)
    assert "Seed: 4321" in info and "CFG scale: 5.5" in info
    page.click("#txt2img_send_to_img2img")
    page.wait_for_function("document.querySelector('#img2img_prompt textarea')?.value === 'a blue boat'")
    page.wait_for_selector("#img2img_image img")
    shot(page, "sent-to-img2img")
    assert page.input_value("#img2img_neg_prompt textarea") == "fog"
    assert page.input_value("#img2img_seed input") == "4321"
    assert page.input_value("#img2img_steps input[type=number]") == "3"
    assert page.input_value("#img2img_cfg_scale input[type=number]") == "5.5"

    page.click("#tab_txt2img-button")
    page.click("#txt2img_send_to_inpaint")
    page.wait_for_selector("#img2img_inpaint_controls", state="visible")
    page.wait_for_function("!document.querySelector('#img2maskimg').innerText.includes('Upload an image')")
    shot(page, "sent-to-inpaint")
    assert page.input_value("#img2img_prompt textarea") == "a blue boat"
    # the inpaint sub-tab is the one that runs: without a mask it says so (the plain img2img would run)
    page.click("#img2img_generate")
    page.wait_for_selector("#img2img_status .error-message")
    assert "draw a mask" in page.inner_text("#img2img_status .error-message")

    page.click("#tab_txt2img-button")
    page.click("#txt2img_send_to_extras")
    page.wait_for_selector("#extras_image img")
    set_number(page, "extras_upscaling_resize", 2)
    before = set(ui_server.output_images("extras"))  # the server is shared: this job's file only
    page.click("#extras_generate")
    page.wait_for_function("/saved to|error/i.test(document.querySelector('#extras_status').innerText)")
    shot(page, "sent-to-extras")
    assert "a blue boat" in page.inner_text("#extras_status")
    (saved,) = [path for path in ui_server.output_images("extras") if path not in before]
    parameters = read_infotext(Image.open(saved))
    assert parameters is not None and parameters.startswith("a blue boat") and "Seed: 4321" in parameters


def test_failed_job_clears_the_gallery_and_shows_the_error_in_its_place(page, shot):
    generate_txt2img(page, "first a good one", seed=3)
    gallery = box(page, "#txt2img_gallery")
    assert page.locator("#txt2img_gallery img").count() >= 1
    set_number(page, "txt2img_width", 68)  # refused: not a multiple of 8
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_status .error-message")
    shot(page, "failed")
    assert page.locator("#txt2img_gallery img").count() == 0  # the old image is gone
    assert not page.locator("#txt2img_gallery").is_visible()
    error = box(page, "#txt2img_status .error-message")
    assert abs(error["y"] - gallery["y"]) < 60 and error["height"] >= 60, (error, gallery)
    assert page.inner_text("#html_info_txt2img").strip() == ""  # no infotext of the image that went
    set_number(page, "txt2img_width", 64)
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_status .error-message", state="detached")
    wait_result(page, "txt2img")
    assert page.locator("#txt2img_gallery").is_visible()


def press_emphasis(page, key: str, start: int, end: int | None = None) -> str:
    page.evaluate(
        "([start, end]) => { const box = document.querySelector('#txt2img_prompt textarea');"
        " box.focus(); box.setSelectionRange(start, end); }",
        [start, start if end is None else end],
    )
    page.keyboard.press(f"Control+{key}")
    return page.input_value("#txt2img_prompt textarea")


def test_ctrl_up_down_change_the_emphasis_as_a1111(page, ui_server):
    page.fill("#txt2img_prompt textarea", "a cat, a dog")
    assert press_emphasis(page, "ArrowUp", 2, 5) == "a (cat:1.1), a dog"  # the selection
    assert press_emphasis(page, "ArrowUp", 3, 6) == "a (cat:1.2), a dog"
    assert press_emphasis(page, "ArrowDown", 4) == "a (cat:1.1), a dog"  # caret inside the parens
    assert press_emphasis(page, "ArrowDown", 4) == "a cat, a dog"  # weight 1 drops the parens
    assert press_emphasis(page, "ArrowDown", 10) == "a cat, a (dog:0.9)"  # the word at the caret
    page.fill("#txt2img_prompt textarea", "((old style))")
    assert press_emphasis(page, "ArrowUp", 2, 11) == "(old style:1.3)"  # 1.1^2 = 1.2, one step up
    page.fill("#txt2img_prompt textarea", "x <lora:thing:0.8>")
    assert press_emphasis(page, "ArrowUp", 8) == "x <lora:thing:0.85>"  # extra networks: steps of 0.05
    # Gradio got the edited value: the job runs with it
    page.fill("#txt2img_prompt textarea", "a cat")
    press_emphasis(page, "ArrowUp", 2, 5)
    small_job(page, "txt2img")
    page.click("#txt2img_generate")
    assert wait_result(page, "txt2img").startswith("a (cat:1.1)")


def test_interrupt_and_skip_show_only_while_a_job_runs_and_fit_their_buttons(page, shot):
    assert not page.locator("#txt2img_interrupt").is_visible()
    assert not page.locator("#txt2img_skip").is_visible()
    page.fill("#txt2img_prompt textarea", "a long job")
    small_job(page, "txt2img", steps=150)
    set_number(page, "txt2img_batch_count", 20)
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_interrupt", state="visible")
    shot(page, "running")
    assert page.locator("#txt2img_skip").is_visible()
    for button in ("#txt2img_interrupt", "#txt2img_skip"):
        scroll, client = page.evaluate(
            f"(() => {{ const b = document.querySelector('{button}'); return [b.scrollWidth, b.clientWidth]; }})()"
        )
        assert scroll <= client, (button, scroll, client)  # the label fits its button
    generate, interrupt = box(page, "#txt2img_generate"), box(page, "#txt2img_interrupt")
    assert (
        interrupt["x"] >= generate["x"] - 1
        and interrupt["x"] + interrupt["width"] <= generate["x"] + generate["width"] + 1
    )
    page.wait_for_function(
        "/Step \\d+\\/150/.test((document.querySelector('#txt2img_progress .progress-text') || {innerText: ''}).innerText)",
        timeout=60_000,
    )
    page.click("#txt2img_interrupt")
    page.wait_for_selector("#txt2img_interrupt", state="hidden", timeout=60_000)
    assert not page.locator("#txt2img_skip").is_visible()


def test_layout_band_tooltips_inpaint_settings_and_xyz_row(page, shot):
    shot(page, "txt2img")
    negative = box(page, "#txt2img_neg_prompt")
    networks = box(page, "#txt2img_extra_networks")  # the (closed) Extra networks accordion under the prompts
    settings = box(page, "#txt2img_settings")
    prompts = box(page, "#txt2img_prompt_container")
    actions = box(page, "#txt2img_actions_column")
    assert networks["y"] >= negative["y"] + negative["height"] - 1
    band = settings["y"] - (networks["y"] + networks["height"])
    assert band < 40, f"{band:.0f} px of empty band between the prompts and the parameters"
    assert actions["y"] + actions["height"] <= prompts["y"] + prompts["height"] + 12, (actions, prompts)
    # every icon-only button says what it does
    untitled = page.evaluate(
        """[...document.querySelectorAll('button')].filter(b => b.offsetParent !== null
            && b.innerText.trim() && !/[A-Za-z]{3}/.test(b.innerText) && !b.title).map(b => b.id || b.innerText)"""
    )
    assert untitled == [], untitled
    assert page.get_attribute("#txt2img_reuse_seed", "title")
    assert page.get_attribute("#txt2img_send_to_img2img", "title")

    choose(page, page.locator("#txt2img_script_list input"), "X/Y/Z plot")
    page.wait_for_selector("#txt2img_script_container label:has-text('Vary seeds for Z')")
    shot(page, "xyz")
    widths = page.evaluate(
        """[...document.querySelectorAll('#txt2img_script_container label')]
            .filter(l => l.offsetParent !== null && l.querySelector('input[type=checkbox]'))
            .map(l => [l.innerText.trim(), l.getBoundingClientRect().width, l.getBoundingClientRect().height])"""
    )
    assert len(widths) >= 8, widths
    crushed = [w for w in widths if w[1] < 120 or w[2] > 45]  # a label squeezed into a column wraps
    assert crushed == [], crushed

    page.click("#tab_img2img-button")
    page.wait_for_selector("#img2img_image")
    shot(page, "img2img")
    assert not page.locator("#img2img_inpaint_controls").is_visible()
    page.click("#img2img_inpaint_tab-button")
    page.wait_for_selector("#img2img_inpaint_controls", state="visible")
    page.click("#img2img_img2img_sketch_tab-button")
    page.wait_for_selector("#img2img_inpaint_controls", state="hidden")
    page.click("#img2img_inpaint_upload_tab-button")
    page.wait_for_selector("#img2img_inpaint_controls", state="visible")
    shot(page, "inpaint-upload")


def test_xyz_legend_is_not_cut_off(page, shot):
    page.fill("#txt2img_prompt textarea", "legend")
    small_job(page, "txt2img")
    choose(page, page.locator("#txt2img_script_list input"), "X/Y/Z plot")
    scripts = page.locator("#txt2img_script_container")
    choose(page, scripts.get_by_label("X type"), "CFG Scale")
    scripts.get_by_label("X values").first.fill("1,2")
    choose(page, scripts.get_by_label("Y type"), "Steps")
    scripts.get_by_label("Y values").first.fill("1,2")
    page.click("#txt2img_generate")
    wait_result(page, "txt2img")
    grid = gallery_image(page, "txt2img")
    grid.save(shot.folder / "grid.png")
    side = TINY_RESOLUTION
    x0, top = grid.width - 2 * side, grid.height - 2 * side

    def dark(x: int, y: int) -> bool:
        return sum(grid.getpixel((x, y))) < 600

    inked = [x for x in range(grid.width) if any(dark(x, y) for y in range(top))]
    assert inked, "no column labels drawn"
    # each label stays over its own column: inside the grid, with a gap where the two columns meet
    assert min(inked) >= x0 and max(inked) < grid.width - 1, (min(inked), max(inked), x0, grid.width)
    assert any(x not in inked for x in range(x0 + side - 2, x0 + side + 3))
    row_labels = [x for x in range(x0) if any(dark(x, y) for y in range(top, grid.height))]
    assert row_labels and min(row_labels) > 0 and max(row_labels) < x0 - 1


def test_brush_is_scaled_to_a_small_image(page, ui_server, shot, tmp_path):
    original = (60, 60, 160)
    Image.new("RGB", (64, 64), original).save(tmp_path / "small.png")
    page.click("#tab_img2img-button")
    page.click("#img2img_inpaint_tab-button")
    upload_to_editor(page, "img2maskimg", tmp_path / "small.png")
    page.wait_for_function("document.querySelector('#img2maskimg_brush_size input')?.value === '3'")
    page.wait_for_timeout(1000)  # brush_size.js moves the editor's size slider
    draw_horizontal_stroke(page, "img2maskimg")
    shot(page, "stroke")
    page.fill("#img2img_prompt textarea", "thin stroke")
    small_job(page, "img2img")
    set_number(page, "img2img_mask_blur", 0)
    set_number(page, "img2img_denoising_strength", 1)
    before = set(ui_server.output_images("img2img"))
    page.click("#img2img_generate")
    wait_result(page, "img2img")
    (saved,) = [path for path in ui_server.output_images("img2img") if path not in before]
    changed = ImageChops.difference(Image.open(saved).convert("RGB"), Image.new("RGB", (64, 64), original))
    bbox = changed.convert("L").point(lambda v: 255 if v > 8 else 0).getbbox()
    assert bbox is not None, "the stroke was not repainted"
    # the fixed 24 px brush painted a band 50 px high on this 64 px image; scaled to it, a thin line
    assert bbox[3] - bbox[1] <= 10, bbox


def test_docs_and_redoc_work_offline(browser, ui_server, shot):
    context = browser.new_context()
    page = context.new_page()
    outside: list[str] = []

    def only_loopback(route):
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    try:
        page.goto(ui_server.url + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert "Stable Diffusion web UI API" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        shot(page, "docs")
        page.goto(ui_server.url + "/redoc")
        page.wait_for_selector("h1:has-text('Stable Diffusion web UI API')", timeout=60_000)
        shot(page, "redoc")
    finally:
        context.close()
    assert outside == [], outside


def test_gallery_files_are_complete_and_carry_their_parameters(page, ui_server):
    generate_txt2img(page, "served whole", seed=77)
    src = page.locator("#txt2img_gallery img").first.get_attribute("src")
    response = page.request.get(urljoin(page.url, src))
    body = response.body()
    assert response.status == 200
    assert int(response.headers["content-length"]) == len(body)
    image = Image.open(io.BytesIO(body))
    parameters = read_infotext(image)
    assert parameters is not None and parameters.startswith("served whole") and "Seed: 77" in parameters
    saved = ui_server.output_images("txt2img")[-1]  # the file the engine saved for this job
    assert ImageChops.difference(image.convert("RGB"), Image.open(saved).convert("RGB")).getbbox() is None


def test_live_preview_method_full_shows_the_vae_decode(page, ui_server, shot):
    """show_progress_type: "Full" previews are the VAE's decode at image size; "Approx cheap" ones are the
    latent-size linear map."""
    page.click("#tab_settings-button")
    page.click("#settings_ui-button")
    choose(page, page.locator("#setting_show_progress_type input"), "Full")
    page.click("#settings_submit")
    page.wait_for_function(
        "/changed|error|not applied/i.test(document.querySelector('#settings_result').innerText)"
    )
    assert "show_progress_type" in page.inner_text("#settings_result")
    try:
        page.click("#tab_txt2img-button")
        page.fill("#txt2img_prompt textarea", "a preview")
        small_job(page, "txt2img", steps=150)
        set_number(page, "txt2img_batch_count", 5)
        page.click("#txt2img_generate")
        page.wait_for_function(
            "document.querySelector('#txt2img_gallery img')"
            " && document.querySelector('#txt2img_progress .progressDiv[data-state=running]')",
            timeout=60_000,
        )
        shot(page, "full-preview")
        assert gallery_image(page, "txt2img").size == (TINY_RESOLUTION, TINY_RESOLUTION)
        page.click("#txt2img_interrupt")
        page.wait_for_selector("#txt2img_interrupt", state="hidden", timeout=60_000)
    finally:
        set_option(ui_server.url, "show_progress_type", "Approx cheap")
