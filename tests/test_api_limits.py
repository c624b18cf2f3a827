"""What one request may cost (issue 13, findings 4 and 7), over real HTTP on loopback with the real engine on a tiny checkpoint:
prompt length in characters and tokens, images per job, steps, pixels per image and per job, every size field
(seed resize, extras output) bounded by the pixel limit. Each is a 422 naming the field, before anything is
queued; the limits are settings (`limit_*`) that POST /options can change and no request can override."""

from __future__ import annotations

import base64
import io
import json

import pytest
import requests
from PIL import Image

from tests.api_server import start_server, write_settings, write_tiny_checkpoints

TINY = {"width": 64, "height": 64, "steps": 2}
LIMITS = {
    "limit_prompt_chars": 2000,
    "limit_prompt_tokens": 50,
    "limit_images": 8,
    "limit_steps": 30,
    "limit_image_pixels": 256 * 256,
    "limit_job_pixels": 4 * 128 * 128,
}
MAX_IMAGE_PIXELS = 20_000  # --max-image-pixels: images sent in, and what extras may make of them


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("limits-data")
    write_tiny_checkpoints(data_dir, ("alpha",), native_resolution=512)  # declares SD 1.x's native size
    write_settings(data_dir, LIMITS)
    flags = ["--max-image-pixels", str(MAX_IMAGE_PIXELS)]
    with start_server(data_dir, flags) as srv:
        yield srv


def post(server, path, body, **kwargs):
    return requests.post(server.api + path, json=body, timeout=120, **kwargs)


def task_count(server) -> int:
    return len(requests.get(server.api + "/tasks", timeout=30).json())


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_defaults_are_settings_with_sane_values():
    from sdwebui.config.options import default_templates
    from sdwebui.engine.requests import JobLimits

    defaults = {key: info.default for key, info in default_templates().items() if key.startswith("limit_")}
    assert JobLimits.from_settings(defaults) == JobLimits()
    assert defaults["limit_prompt_chars"] >= 10_000 and defaults["limit_prompt_tokens"] >= 750
    assert defaults["limit_steps"] == 150 and defaults["limit_image_pixels"] == 2048 * 2048
    assert defaults["limit_images"] >= 100 and defaults["limit_job_pixels"] >= 64 * 512 * 512


def test_limits_are_shown_in_options(server):
    options = requests.get(server.api + "/options", timeout=30).json()
    assert {key: options[key] for key in LIMITS} == LIMITS


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"prompt": "a" * 2001}, "prompt", "2001 characters exceed the limit of 2000"),
        ({"negative_prompt": "b" * 100_000}, "negative_prompt", "limit_prompt_chars"),
        ({"prompt": "a cat, " * 40}, "prompt", "120 tokens exceed the limit of 50"),
        ({"negative_prompt": "blurry " * 51}, "negative_prompt", "51 tokens exceed the limit of 50"),
        ({"n_iter": 3, "batch_size": 3}, "n_iter", "9 images exceed the limit of 8"),
        ({"steps": 31}, "steps", "31 exceeds the limit of 30"),
        ({"width": 512, "height": 256}, "width", "131072 pixels exceed the limit of 65536"),
        ({"width": 128, "height": 128, "batch_size": 5}, "batch_size", "limit_job_pixels"),
        ({"width": 128, "height": 128, "n_iter": 5}, "batch_size", "81920 pixels"),
        ({"seed_resize_from_w": 40000, "seed_resize_from_h": 40000}, "seed_resize_from_w", "2048"),
        ({"seed_resize_from_w": 10**9, "seed_resize_from_h": 64}, "seed_resize_from_w", "2048"),
        ({"seed_resize_from_w": 64, "seed_resize_from_h": 10**9}, "seed_resize_from_h", "2048"),
        ({"seed_resize_from_w": 512, "seed_resize_from_h": 512}, "seed_resize_from_w", "limit_image_pixels"),
        ({"seed_resize_from_w": 4, "seed_resize_from_h": 64}, "seed_resize_from_w", "between 8 and"),
        ({"override_settings": {"limit_steps": 1000}, "steps": 100}, "override_settings", "limit_steps"),
    ],
)
def test_over_a_limit_is_422_naming_the_field_and_nothing_is_queued(server, body, field, words):
    before = task_count(server)
    r = post(server, "/txt2img", {**TINY, **body})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and words in r.json()["detail"], r.json()
    r = post(server, "/txt2img", {**TINY, **body}, params={"async": "true"})
    assert r.status_code == 422 and r.json()["field"] == field
    assert task_count(server) == before


def test_img2img_is_bounded_too(server):
    image = png_b64(Image.new("RGB", (64, 64), "red"))
    r = post(server, "/img2img", {**TINY, "init_images": [image], "n_iter": 9})
    assert r.status_code == 422 and r.json()["field"] == "n_iter"


def test_within_the_limits_runs(server):
    body = {**TINY, "prompt": "a cat, " * 7, "steps": 30, "batch_size": 2, "n_iter": 4, "seed": 3}
    body.update(seed_resize_from_w=128, seed_resize_from_h=128)
    r = post(server, "/txt2img", body)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["all_seeds"] == list(range(3, 11))


def test_an_unset_size_is_checked_when_the_job_knows_it(server):
    # the checkpoint's native size is 512: 512x512 exceeds limit_image_pixels once the job resolves it
    r = post(server, "/txt2img", {"steps": 2})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "width" and "262144 pixels" in r.json()["detail"]


def test_limits_are_changed_by_options_not_by_requests(server):
    r = post(server, "/options", {"limit_steps": 40})
    assert r.status_code == 200, r.text
    try:
        assert post(server, "/txt2img", {**TINY, "steps": 35}).status_code == 200
        r = post(server, "/txt2img", {**TINY, "steps": 41})
        assert r.status_code == 422 and "limit of 40" in r.json()["detail"]
    finally:
        assert post(server, "/options", {"limit_steps": 30}).status_code == 200


@pytest.mark.parametrize(
    "body, field",
    [
        ({"upscaling_resize": 4}, "upscaling_resize"),  # 256x256 > 20000 pixels
        ({"resize_mode": 1, "upscaling_resize_w": 8000, "upscaling_resize_h": 8000}, "upscaling_resize_w"),
    ],
)
def test_extras_output_is_bounded_by_the_pixel_limit(server, body, field):
    image = png_b64(Image.new("RGB", (64, 64), "blue"))
    r = post(server, "/extra-single-image", {"image": image, "upscaler_1": "Lanczos", **body})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and str(MAX_IMAGE_PIXELS) in r.json()["detail"]
    ok = post(server, "/extra-single-image", {"image": image, "upscaler_1": "Lanczos", "upscaling_resize": 2})
    assert ok.status_code == 200, ok.text
