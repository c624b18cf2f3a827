"""The web UI driven in a real Chromium against the real app (app.py, tiny SD1 checkpoint file): txt2img,
inpaint with a brush-drawn mask, PNG Info send-to, interrupt with live preview, settings persistence,
phone width, X/Y/Z plot script, outpainting, Extras. The run's one plain UI server (tests.browser.ui_server),
shared with test_ui_browser_fixes, test_hires_fix and test_refiner."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import urllib.request
from urllib.parse import urljoin

import pytest
from PIL import Image, ImageChops

from sdwebui.outputs.infotext import png_info_with
from tests.browser import RERUN_FRONT_END_RACES, set_number, upload_to_editor, wait_result, wait_ui_loaded
from tests.tiny_models import TINY_RESOLUTION

pytest_plugins = ("tests.browser",)  # browser, ui_server, page, shot fixtures

# reruns only for the named front-end races (tests.browser.FrontEndRace)
pytestmark = [pytest.mark.browser, RERUN_FRONT_END_RACES]


def small_job(page, tab: str, steps: int = 2) -> None:
    set_number(page, f"{tab}_width", 64)
    set_number(page, f"{tab}_height", 64)
    set_number(page, f"{tab}_steps", steps)


def test_txt2img_end_to_end(page, shot):
    shot(page, "loaded")
    page.fill("#txt2img_prompt textarea", "a red apple on a table")
    page.wait_for_function("document.querySelector('#txt2img_token_counter').innerText.includes('/75')")
    assert re.match(r"\d+/75", page.inner_text("#txt2img_token_counter").strip())
    # no ui-config.json value: the size defaults to the checkpoint's native resolution, not SD1's 512
    assert page.input_value("#txt2img_width input[type=number]") == str(TINY_RESOLUTION)
    assert page.input_value("#txt2img_height input[type=number]") == str(TINY_RESOLUTION)
    small_job(page, "txt2img")
    set_number(page, "txt2img_seed", 1234)
    page.click("#txt2img_generate")
    info = wait_result(page, "txt2img")
    shot(page, "generated")
    assert "a red apple on a table" in info
    assert "Seed: 1234" in info
    assert "Steps: 2" in info and "Size: 64x64" in info
    assert page.locator("#txt2img_gallery img").count() >= 1
    # reuse-seed and random-seed buttons
    set_number(page, "txt2img_seed", -1)
    page.click("#txt2img_reuse_seed")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value === '1234'")


def test_error_is_shown_not_an_empty_gallery(page, shot):
    small_job(page, "txt2img")
    set_number(page, "txt2img_width", 68)  # not a multiple of 8: the request is refused by validation
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_status .error-message")
    shot(page, "error")
    assert "width" in page.inner_text("#txt2img_status .error-message").lower()
    assert page.locator("#txt2img_gallery img").count() == 0


# big enough that the editor must fit it into its canvas, small enough for a quick job: the test is on the mask
INPAINT_SIZE = 256


@pytest.mark.parametrize(
    "sub_tab, editor",
    [("img2img_inpaint_tab", "img2maskimg"), ("img2img_inpaint_sketch_tab", "inpaint_sketch")],
    ids=["inpaint-brush-mask", "inpaint-sketch"],
)
def test_inpaint_repaints_only_the_brushed_stroke(page, ui_server, shot, tmp_path, sub_tab, editor):
    source = tmp_path / "source.png"
    original = (40, 120, 200)
    Image.new("RGB", (INPAINT_SIZE, INPAINT_SIZE), original).save(source)
    page.click("#tab_img2img-button")
    page.click(f"#{sub_tab}-button")
    upload_to_editor(page, editor, source)
    shot(page, "uploaded")
    draw_horizontal_stroke(page, editor)
    shot(page, "mask-drawn")
    page.fill("#img2img_prompt textarea", "a yellow sun")
    small_job(page, "img2img")
    set_number(page, "img2img_width", INPAINT_SIZE)
    set_number(page, "img2img_height", INPAINT_SIZE)
    set_number(page, "img2img_mask_blur", 0)
    before = set(ui_server.output_images("img2img"))
    page.click("#img2img_generate")
    info = wait_result(page, "img2img")
    shot(page, "inpainted")
    assert "a yellow sun" in info
    assert "Denoising strength: 0.75" in info and "Mask blur: 0" in info
    saved = [path for path in ui_server.output_images("img2img") if path not in before]
    assert len(saved) == 1, saved
    assert_only_the_stroke_changed(Image.open(saved[0]).convert("RGB"), original)


def test_sketch_runs_img2img_on_the_drawing(page, ui_server, shot, tmp_path):
    source = tmp_path / "source.png"
    Image.new("RGB", (64, 64), (90, 160, 90)).save(source)
    page.click("#tab_img2img-button")
    page.click("#img2img_img2img_sketch_tab-button")
    upload_to_editor(page, "img2img_sketch", source)
    draw_horizontal_stroke(page, "img2img_sketch")
    page.fill("#img2img_prompt textarea", "from a sketch")
    small_job(page, "img2img")
    page.click("#img2img_generate")
    info = wait_result(page, "img2img")
    shot(page, "result")
    assert "from a sketch" in info and "Size: 64x64" in info and "Mask blur" not in info


def draw_horizontal_stroke(page, elem_id: str) -> None:
    """A mouse stroke of ~120 px across the middle of an image editor's canvas."""
    canvas = page.locator(f"#{elem_id} canvas").first
    page.wait_for_timeout(500)  # the editor fits the image into the canvas
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 60, cy - 20)
    page.mouse.down()
    for step in range(1, 13):
        page.mouse.move(cx - 60 + step * 10, cy - 20, steps=2)
    page.mouse.up()
    page.wait_for_timeout(500)


def assert_only_the_stroke_changed(result: Image.Image, original: tuple) -> None:
    size = INPAINT_SIZE
    assert result.size == (size, size)
    changed = Image.eval(
        ImageChops.difference(result, Image.new("RGB", result.size, original)).convert("L"),
        lambda v: 255 if v > 8 else 0,
    )
    bbox = changed.getbbox()
    assert bbox is not None, "the masked stroke was not repainted"
    left, top, right, bottom = bbox
    # only the brushed, horizontal stroke changed: pixels outside the mask are the original's
    assert right - left > 2 * (bottom - top), bbox
    painted = sum(1 for value in changed.getdata() if value)
    assert 0.002 * size * size < painted < 0.3 * size * size, painted
    for corner in ((0, 0), (size - 1, 0), (0, size - 1), (size - 1, size - 1), (size // 2, size - 12)):
        assert result.getpixel(corner) == original, corner


def read_in_pnginfo(page, path, text: str, expected: str) -> None:
    """Drop a PNG carrying `text` as its parameters on the PNG Info tab and wait until they are shown."""
    Image.new("RGB", (64, 64), (30, 30, 200)).save(path, pnginfo=png_info_with(text))
    page.click("#tab_pnginfo-button")
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        f"document.querySelector('#pnginfo_generation_info textarea').value.includes({json.dumps(expected)})"
    )


def test_pnginfo_send_to_txt2img(page, shot, tmp_path):
    text = (
        "a castle on a hill\nNegative prompt: blurry\n"
        "Steps: 7, Sampler: Euler, Schedule type: Automatic, CFG scale: 5.5, Seed: 987654, Size: 128x192"
    )
    read_in_pnginfo(page, tmp_path / "with-params.png", text, "Seed: 987654")
    shot(page, "read")
    page.click("#pnginfo_send_txt2img")
    page.wait_for_function(
        "document.querySelector('#txt2img_prompt textarea').value === 'a castle on a hill'"
    )
    shot(page, "sent")
    assert page.input_value("#txt2img_neg_prompt textarea") == "blurry"
    assert page.input_value("#txt2img_seed input") == "987654"
    assert page.input_value("#txt2img_steps input[type=number]") == "7"
    assert page.input_value("#txt2img_width input[type=number]") == "128"
    assert page.input_value("#txt2img_height input[type=number]") == "192"


def test_interrupt_stops_a_long_job(page, shot):
    page.fill("#txt2img_prompt textarea", "a long job")
    small_job(page, "txt2img", steps=150)
    set_number(page, "txt2img_batch_count", 50)
    page.click("#txt2img_generate")
    page.wait_for_function(
        "(document.querySelector('#txt2img_progress .progress-text') || {innerText: ''}).innerText.includes('Step')",
        timeout=60_000,
    )
    # the live preview (latents -> RGB every N steps) shows in the gallery while the job still runs
    page.wait_for_function(
        "document.querySelector('#txt2img_gallery img')"
        " && document.querySelector('#txt2img_progress .progressDiv[data-state=running]')",
        timeout=30_000,
    )
    shot(page, "running")
    progress_text = page.inner_text("#txt2img_progress .progress-text")
    assert re.search(r"Step \d+/150", progress_text), progress_text
    page.click("#txt2img_interrupt")
    page.wait_for_function(
        "!document.querySelector('#txt2img_progress .progressDiv')"
        " && /interrupted/i.test(document.querySelector('#txt2img_status').innerText)",
        timeout=30_000,
    )
    shot(page, "interrupted")


def test_skip_abandons_the_current_image_and_goes_on(page, shot):
    page.fill("#txt2img_prompt textarea", "skip the first")
    small_job(page, "txt2img", steps=150)
    set_number(page, "txt2img_batch_count", 2)
    set_number(page, "txt2img_seed", 100)
    page.click("#txt2img_generate")
    page.wait_for_function(
        "/Batch 1\\/2, Step \\d+\\/150/.test((document.querySelector('#txt2img_progress .progress-text') || {innerText: ''}).innerText)",
        timeout=60_000,
    )  # the first image is running (a wait that saw only the second would fail here, not below)
    page.click("#txt2img_skip")
    info = wait_result(page, "txt2img")
    shot(page, "skipped")
    # the first image (seed 100) was abandoned; the second (seed 101) finished: one image, no grid
    assert "Seed: 101" in info, info
    assert page.locator("#txt2img_gallery img").count() == 1


def test_settings_persist_across_reload(page, ui_server, shot):
    page.click("#tab_settings-button")
    page.click("#settings_ui-button")
    box = "#setting_show_progress_every_n_steps input[type=number]"
    # A value different from the stored one, so that a rerun (or an earlier test) cannot make Apply a no-op.
    current = int(page.input_value(box))
    wanted = 3 if current != 3 else 4
    set_number(page, "setting_show_progress_every_n_steps", wanted)
    page.wait_for_function(f"document.querySelector('{box}').value === '{wanted}'")
    page.click("#settings_submit")
    page.wait_for_function(
        "/changed|error|not applied/i.test(document.querySelector('#settings_result').innerText)"
    )
    try:
        assert "1 setting(s) changed: show_progress_every_n_steps" in page.inner_text("#settings_result")
        shot(page, "applied")
        saved = json.loads((ui_server.data_dir / "config.json").read_text())
        assert saved["show_progress_every_n_steps"] == wanted
        page.reload()
        wait_ui_loaded(page)
        page.click("#tab_settings-button")
        page.click("#settings_ui-button")
        page.wait_for_function(f"document.querySelector('{box}').value === '{wanted}'")
        shot(page, "after-reload")
    finally:  # the server is shared with later tests (live previews every N steps)
        set_option(ui_server.url, "show_progress_every_n_steps", current)


def set_option(url: str, key: str, value) -> None:
    """One setting through the API (POST /sdapi/v1/options), as a test's clean-up."""
    body = json.dumps({key: value}).encode()
    request = urllib.request.Request(
        url + "/sdapi/v1/options", data=body, headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=60).read()


def test_phone_width_has_no_horizontal_scroll(browser, ui_server, shot):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    phone.goto(ui_server.url + "/")
    phone.wait_for_selector("#txt2img_prompt textarea")
    shot(phone, "phone")
    widths = phone.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    context.close()
    assert widths[0] <= widths[1] + 1, widths


def gallery_image(page, tab: str, index: int = 0) -> Image.Image:
    """The image the browser shows in the gallery, fetched from its URL."""
    src = page.locator(f"#{tab}_gallery img").nth(index).get_attribute("src")
    return Image.open(io.BytesIO(page.request.get(urljoin(page.url, src)).body())).convert("RGB")


def choose(page, dropdown, option: str) -> None:
    dropdown.click()
    page.locator("ul[role=listbox] li[role=option]", has_text=option).first.click()


def test_xyz_plot_script_makes_a_grid(page, shot):
    page.fill("#txt2img_prompt textarea", "a grid of steps")
    small_job(page, "txt2img")
    set_number(page, "txt2img_seed", 5)
    choose(page, page.locator("#txt2img_script_list input"), "X/Y/Z plot")
    scripts = page.locator("#txt2img_script_container")
    choose(page, scripts.get_by_label("X type"), "Steps")
    scripts.get_by_label("X values").first.fill("1,2")
    shot(page, "script-chosen")
    page.click("#txt2img_generate")
    info = wait_result(page, "txt2img")
    shot(page, "grid")
    assert "Steps: 1" in info and "Seed: 5" in info  # the grid carries its first cell's infotext
    grid = gallery_image(page, "txt2img")
    side = TINY_RESOLUTION
    assert 2 * side <= grid.width < 3 * side and side < grid.height < 2 * side, grid.size  # 2 cells + legend
    x0, top = grid.width - 2 * side, grid.height - side  # cells sit at the bottom right of the margins
    left = grid.crop((x0, top, x0 + side, grid.height))
    right = grid.crop((x0 + side, top, grid.width, grid.height))
    assert ImageChops.difference(left, right).getbbox() is not None  # 1 step and 2 steps differ
    assert page.locator("#txt2img_gallery img").count() == 1  # the grid only (no sub-images asked)


def test_outpaint_right_keeps_the_original(page, ui_server, shot, tmp_path):
    source = tmp_path / "small.png"
    original = (200, 60, 30)
    Image.new("RGB", (64, 64), original).save(source)
    page.click("#tab_img2img-button")
    page.locator("#img2img_image input[type=file]").set_input_files(str(source))
    page.wait_for_selector("#img2img_image img")
    page.fill("#img2img_prompt textarea", "more to the right")
    small_job(page, "img2img")
    page.click("#img2img_outpainting")  # open the accordion
    page.locator("#img2img_outpaint_enable input").check()
    # Inpaint settings show on the plain img2img sub-tab only while outpainting (the new area is inpainted)
    set_number(page, "img2img_mask_blur", 0)
    for side in ("left", "up", "down"):
        page.locator("#img2img_outpaint_directions").get_by_label(side).uncheck()
    set_number(page, "img2img_outpaint_pixels", 32)
    shot(page, "outpaint-set")
    before = set(ui_server.output_images("img2img"))
    page.click("#img2img_generate")
    info = wait_result(page, "img2img")
    shot(page, "outpainted")
    assert "Size: 96x64" in info
    saved = [path for path in ui_server.output_images("img2img") if path not in before]
    assert len(saved) == 1, saved
    result = Image.open(saved[0]).convert("RGB")
    assert result.size == (96, 64)
    assert all(result.getpixel((x, y)) == original for x in (0, 30, 63) for y in (0, 32, 63))
    assert any(result.getpixel((x, 32)) != original for x in range(64, 96))  # the new strip was painted


def test_extras_upscale_saves_into_the_configured_folder(page, ui_server, shot, tmp_path):
    source = tmp_path / "tiny.png"
    Image.new("RGB", (20, 10), (0, 255, 0)).save(source)
    page.click("#tab_extras-button")
    page.locator("#extras_image input[type=file]").set_input_files(str(source))
    page.wait_for_selector("#extras_image img")
    set_number(page, "extras_upscaling_resize", 2)
    before = set(ui_server.output_images("extras"))  # the server is shared: count this job's files only
    page.click("#extras_generate")
    page.wait_for_function("/saved to|error/i.test(document.querySelector('#extras_status').innerText)")
    shot(page, "upscaled")
    assert "40x20" in page.inner_text("#extras_status")
    # outputs/extras-images: outdir_extras_samples
    saved = [path for path in ui_server.output_images("extras") if path not in before]
    assert [Image.open(path).size for path in saved] == [(40, 20)]


def test_queue_place_shown_behind_an_api_job(page, ui_server, shot):
    """UI and API share one queue: a UI job waiting behind an API job says so, then runs."""
    body = json.dumps({"prompt": "api job", "steps": 150, "n_iter": 50, "width": 64, "height": 64}).encode()
    api_call = urllib.request.Request(
        ui_server.url + "/sdapi/v1/txt2img", data=body, headers={"Content-Type": "application/json"}
    )
    api_thread = threading.Thread(target=lambda: urllib.request.urlopen(api_call, timeout=120).read())
    api_thread.start()
    try:
        wait_api_job_running(ui_server.url)
        page.fill("#txt2img_prompt textarea", "waits its turn")
        small_job(page, "txt2img")
        page.click("#txt2img_generate")
        page.wait_for_function(
            "/In queue: 1 job ahead/.test(document.querySelector('#txt2img_progress').innerText)"
        )
        shot(page, "queued")
    finally:
        urllib.request.urlopen(urllib.request.Request(ui_server.url + "/sdapi/v1/interrupt", method="POST"))
        api_thread.join(60)
    info = wait_result(page, "txt2img")
    assert "waits its turn" in info


def wait_api_job_running(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with urllib.request.urlopen(url + "/sdapi/v1/progress?skip_current_image=true") as response:
            if json.loads(response.read())["state"]["sampling_step"] > 0:
                return
        time.sleep(0.2)
    raise AssertionError("the API job did not start")


def test_styles_save_and_apply_then_ctrl_enter_generates(page, ui_server, shot):
    page.fill("#txt2img_prompt textarea", "oil painting")
    page.fill("#txt2img_neg_prompt textarea", "blurry")
    page.fill("#txt2img_style_name input", "painterly")
    page.click("#txt2img_style_create")
    page.wait_for_function(
        "/Saved style painterly/.test(document.querySelector('#txt2img_style_status').innerText)"
    )
    assert "painterly" in (ui_server.data_dir / "styles.csv").read_text()
    page.fill("#txt2img_prompt textarea", "a lighthouse")
    page.fill("#txt2img_neg_prompt textarea", "")
    choose(page, page.locator("#txt2img_styles input"), "painterly")
    page.click("#txt2img_style_apply")
    page.wait_for_function(
        "document.querySelector('#txt2img_prompt textarea').value === 'a lighthouse, oil painting'"
    )
    assert page.input_value("#txt2img_neg_prompt textarea") == "blurry"
    shot(page, "style-applied")
    small_job(page, "txt2img")
    page.locator("#txt2img_prompt textarea").press("Control+Enter")
    info = wait_result(page, "txt2img")
    shot(page, "generated-by-ctrl-enter")
    assert info.startswith("a lighthouse, oil painting") and "Negative prompt: blurry" in info


def test_pnginfo_send_to_img2img(page, shot, tmp_path):
    text = "a quiet harbour\nSteps: 9, Sampler: Euler, CFG scale: 6, Seed: 4242, Size: 64x64, Denoising strength: 0.4"
    read_in_pnginfo(page, tmp_path / "with-params.png", text, "Seed: 4242")
    page.click("#pnginfo_send_img2img")
    page.wait_for_function("document.querySelector('#img2img_prompt textarea')?.value === 'a quiet harbour'")
    page.wait_for_selector("#img2img_image img")
    shot(page, "sent")
    assert page.input_value("#img2img_seed input") == "4242"
    assert page.input_value("#img2img_steps input[type=number]") == "9"
    assert page.input_value("#img2img_denoising_strength input[type=number]") == "0.4"
    page.click("#img2img_generate")
    info = wait_result(page, "img2img")
    assert "a quiet harbour" in info and "Seed: 4242" in info and "Denoising strength: 0.4" in info


def test_checkpoint_switch_from_the_top_bar(page, ui_server, shot):
    """The quicksettings dropdown switches the model through the job queue; generation then uses it."""
    dropdown = page.locator("#setting_quick_sd_model_checkpoint input")
    before = dropdown.input_value()
    choose(page, dropdown, "shapes64")
    page.wait_for_function(
        "document.querySelector('#setting_quick_sd_model_checkpoint input').value.includes('shapes64')"
    )
    try:
        page.fill("#txt2img_prompt textarea", "a red circle")
        small_job(page, "txt2img")
        page.click("#txt2img_generate")
        info = wait_result(page, "txt2img")
        shot(page, "default-model")
        assert "Model: shapes64" in info
        with urllib.request.urlopen(ui_server.url + "/sdapi/v1/options") as response:
            assert "shapes64" in json.loads(response.read())["sd_model_checkpoint"]
    finally:
        choose(page, dropdown, before)
        page.wait_for_function(
            f"document.querySelector('#setting_quick_sd_model_checkpoint input').value === {json.dumps(before)}"
        )


def test_inpaint_upload_repaints_only_the_uploaded_mask(page, ui_server, shot, tmp_path):
    original = (200, 200, 40)
    Image.new("RGB", (64, 64), original).save(tmp_path / "image.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))  # repaint the right half
    mask.save(tmp_path / "mask.png")
    page.click("#tab_img2img-button")
    page.click("#img2img_inpaint_upload_tab-button")
    page.locator("#img_inpaint_base input[type=file]").set_input_files(str(tmp_path / "image.png"))
    page.locator("#img_inpaint_mask input[type=file]").set_input_files(str(tmp_path / "mask.png"))
    page.wait_for_selector("#img_inpaint_base img")
    page.wait_for_selector("#img_inpaint_mask img")
    page.fill("#img2img_prompt textarea", "uploaded mask")
    small_job(page, "img2img")
    set_number(page, "img2img_mask_blur", 0)
    set_number(page, "img2img_denoising_strength", 1)
    before = set(ui_server.output_images("img2img"))
    page.click("#img2img_generate")
    info = wait_result(page, "img2img")
    shot(page, "inpainted")
    assert "uploaded mask" in info and "Mask blur: 0" in info
    (saved,) = [path for path in ui_server.output_images("img2img") if path not in before]
    result = Image.open(saved).convert("RGB")
    left, right = result.crop((0, 0, 32, 64)), result.crop((32, 0, 64, 64))
    assert ImageChops.difference(left, Image.new("RGB", left.size, original)).getbbox() is None
    assert ImageChops.difference(right, Image.new("RGB", right.size, original)).getbbox() is not None


def test_batch_folder_in_and_out(page, shot, tmp_path):
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for name, colour in (("one", (200, 40, 40)), ("two", (40, 40, 200))):
        Image.new("RGB", (64, 64), colour).save(source / f"{name}.png")
    (source / "notes.txt").write_text("not an image")
    page.click("#tab_img2img-button")
    page.click("#img2img_batch_tab-button")
    page.fill("#img2img_batch_input_dir textarea", str(source))
    page.fill("#img2img_batch_output_dir textarea", str(target))
    page.fill("#img2img_prompt textarea", "batch job")
    small_job(page, "img2img")
    page.click("#img2img_generate")
    page.wait_for_function(
        "/Batch: 2 image\\(s\\) written|error/i.test(document.querySelector('#img2img_status').innerText)",
        timeout=90_000,
    )
    shot(page, "batch-done")
    assert sorted(p.name for p in target.iterdir()) == ["one.png", "two.png"]
    assert Image.open(target / "one.png").size == (64, 64)
