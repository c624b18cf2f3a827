"""The real product over real HTTP: `app.py --api --nowebui` with the real engine on tiny SD1 checkpoints,
driven through the `webuiapi` package (a real third-party client) and plain requests.

One server for the whole module (start-up and model loading dominate); tests run in file order and each leaves
the server on checkpoint "alpha" with nothing running.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from datetime import date

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from sdwebui.engine import masking
from tests import tiny_models
from tests.api_server import start_server

webuiapi = pytest.importorskip("webuiapi")

SIZE = {"width": 64, "height": 64}
MAX_PIXELS = 20_000  # --max-image-pixels: 64x64 passes, 160x160 does not


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("real-api")
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    for seed, name in ((0, "alpha"), (1, "beta")):
        tiny_models.write_single_file(
            tiny_models.tiny_loaded_model("sd1", seed=seed), folder / f"{name}.safetensors"
        )
    # a standalone VAE with other weights than the checkpoints' own (selectable by name)
    tiny_models.write_vae_file(
        tiny_models.tiny_loaded_model("sd1", seed=7).vae, data_dir / "models" / "VAE" / "other.safetensors"
    )
    flags = [
        "--use-cpu",
        "all",
        "--ckpt",
        str(folder / "alpha.safetensors"),
        "--max-image-pixels",
        str(MAX_PIXELS),
    ]
    with start_server(data_dir, flags) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server):
    port = int(server.url.rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=3)


def post(server, path, body=None, **kwargs):
    return requests.post(server.api + path, json=body if body is not None else {}, timeout=120, **kwargs)


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def gradient(width: int = 64, height: int = 64) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(255, 0, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, (x // 2 + y // 2)], axis=-1).astype(np.uint8))


def model_name(result) -> str:
    return result.info["sd_model_name"]


def wait_status(server, task_id: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = requests.get(f"{server.api}/tasks/{task_id}", timeout=10).json()
        if status.get("status") in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} not finished after {timeout} s")


def test_txt2img_seed_infotext_png_chunk_and_saved_file(server, api):
    result = api.txt2img(prompt="a red cube", seed=4242, cfg_scale=6, save_images=True, **SIZE)
    assert result.info["seed"] == 4242 and result.info["all_seeds"] == [4242]
    assert model_name(result) == "alpha" and result.image.size == (64, 64)
    infotext = result.info["infotexts"][0]
    assert infotext.startswith("a red cube\nSteps: 3, Sampler: Euler a,")
    assert "Seed: 4242," in infotext and "CFG scale: 6," in infotext and "Model: alpha" in infotext
    assert result.image.info["parameters"] == infotext  # the PNG `parameters` chunk, as A1111 writes it
    folder = server.data_dir / "outputs" / "txt2img-images" / date.today().strftime("%Y-%m-%d")
    saved = sorted(folder.glob("*.png"))
    assert [p.name for p in saved if re.fullmatch(r"\d{5}-4242\.png", p.name)], [p.name for p in saved]
    on_disk = Image.open(saved[-1])
    assert on_disk.info["parameters"] == infotext
    assert np.array_equal(np.asarray(on_disk.convert("RGB")), np.asarray(result.image.convert("RGB")))
    # same seed again: same pixels (real engine, CPU noise)
    again = api.txt2img(prompt="a red cube", seed=4242, cfg_scale=6, **SIZE)
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))


def test_img2img_with_mask_keeps_pixels_outside_the_blurred_mask(api):
    original = gradient()
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((18, 18, 45, 45), fill=255)
    result = api.img2img(
        images=[original],
        mask_image=mask,
        mask_blur=3,
        inpaint_full_res=False,
        inpainting_fill=1,
        denoising_strength=0.9,
        prompt="inpaint",
        seed=77,
        **SIZE,
    )
    assert result.info["seed"] == 77 and len(result.images) == 1
    assert "Mask blur: 3" in result.info["infotexts"][0]
    out, orig = np.asarray(result.image.convert("RGB")), np.asarray(original)
    blurred = np.asarray(masking.blur_mask(mask, 3, 3))
    outside, inside = blurred == 0, blurred >= 250
    assert outside.sum() > 1500 and inside.sum() > 200
    assert np.array_equal(out[outside], orig[outside])
    assert np.abs(out[inside].astype(int) - orig[inside].astype(int)).mean() > 3


def test_options_whole_dict_switches_model_and_lists(server, api):
    models = api.get_sd_models()
    assert {"alpha", "beta"} <= {m["model_name"] for m in models}  # (+ the embedded default model)
    for item in models:
        assert set(item) == {"title", "model_name", "hash", "sha256", "filename", "config", "family"}
    beta = next(m for m in models if m["model_name"] == "beta")
    options = api.get_options()
    options["sd_model_checkpoint"] = beta["title"]
    assert post(server, "/options", options).status_code == 200  # Open WebUI posts the whole dict back
    assert api.get_options()["sd_model_checkpoint"].startswith("beta")
    on_beta = api.txt2img(prompt="x", seed=1, **SIZE)
    assert model_name(on_beta) == "beta" and "Model: beta" in on_beta.info["infotexts"][0]
    api.util_set_model("alpha")
    on_alpha = api.txt2img(prompt="x", seed=1, **SIZE)
    assert model_name(on_alpha) == "alpha"
    assert not np.array_equal(np.asarray(on_alpha.image), np.asarray(on_beta.image))  # other weights
    samplers = api.get_samplers()
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM"} <= {s["name"] for s in samplers}
    for name in ("Euler", "DPM++ 2M", "DDIM"):
        r = api.txt2img(prompt="x", seed=2, sampler_name=name, **SIZE)
        assert f"Sampler: {name}," in r.info["infotexts"][0]


def test_progress_advances_and_interrupt_returns_partial_then_next_runs(server, api):
    long_body = {"prompt": "long", "steps": 150, "n_iter": 40, "seed": 500, **SIZE}
    long_id = post(server, "/txt2img?async=true", long_body).json()["task_id"]
    next_id = post(server, "/txt2img?async=true", {"prompt": "next", "steps": 3, "seed": 600, **SIZE}).json()[
        "task_id"
    ]
    steps_seen, deadline = [], time.time() + 30
    while time.time() < deadline and (len(steps_seen) < 2 or steps_seen[-1] <= steps_seen[0]):
        progress = api.get_progress()
        if progress["state"]["job"] == long_id and progress["state"]["sampling_step"] > 0:
            assert 0.0 < progress["progress"] < 1.0
            assert progress["state"]["sampling_steps"] == 150 and progress["state"]["job_count"] == 40
            steps_seen.append(progress["state"]["sampling_step"])
        time.sleep(0.1)
    assert len(steps_seen) >= 2 and steps_seen[-1] > steps_seen[0], steps_seen
    assert api.interrupt()["interrupted"] == [long_id]
    long_status = wait_status(server, long_id)
    assert long_status["status"] == "done"
    info = json.loads(long_status["result"]["info"])
    assert info["interrupted"] is True and 1 <= len(info["all_seeds"]) < 40  # partial result
    assert len(long_status["result"]["images"]) == len(info["all_seeds"])
    next_status = wait_status(server, next_id)
    next_info = json.loads(next_status["result"]["info"])
    assert next_info["seed"] == 600 and next_info["interrupted"] is False
    assert "Steps: 3," in next_info["infotexts"][0]
    assert api.get_progress()["state"]["job"] == ""  # idle again


@pytest.mark.parametrize(
    "name, content",
    [
        ("truncated.safetensors", "truncate"),
        ("empty.safetensors", b""),
        ("notes.ckpt", b"these are my notes, not a checkpoint\n" * 10),
    ],
)
def test_corrupt_checkpoint_is_a_clear_error_and_previous_model_keeps_working(server, api, name, content):
    folder = server.data_dir / "models" / "Stable-diffusion"
    path = folder / name
    if content == "truncate":
        data = (folder / "beta.safetensors").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    else:
        path.write_bytes(content)
    try:
        assert post(server, "/refresh-checkpoints").status_code == 200
        titles = [m["title"] for m in api.get_sd_models()]
        title = next(t for t in titles if t.startswith(name))
        r = post(server, "/options", {"sd_model_checkpoint": title})
        assert 400 <= r.status_code < 500, r.text
        body = r.json()
        assert body["field"] == "sd_model_checkpoint" and name in body["detail"], body
        assert api.get_options()["sd_model_checkpoint"].startswith("alpha")
        # a per-request override naming the bad file fails that job only, with the same clear error
        r = post(server, "/txt2img", {"seed": 3, "override_settings": {"sd_model_checkpoint": title}, **SIZE})
        assert 400 <= r.status_code < 500 and name in r.json()["detail"], r.text
        result = api.txt2img(prompt="still fine", seed=5, **SIZE)
        assert model_name(result) == "alpha" and result.info["seed"] == 5
    finally:
        path.unlink()
        post(server, "/refresh-checkpoints")


@pytest.mark.parametrize(
    "body, field, detail",
    [
        ({"sampler_name": "Euler z"}, "sampler_name", "DPM++ 2M"),  # lists the valid ones
        ({"width": 65}, "width", "multiple of 8"),
        ({"steps": 0}, "steps", "between"),
        ({"eta": 0.5, "sampler_name": "Euler a"}, "eta", "Euler a"),
        ({"enable_hr": True, "hr_upscaler": "Bogus"}, "hr_upscaler", "Lanczos"),
        ({"restore_faces": True}, "restore_faces", "face"),
        ({"tiling": True}, "tiling", "tiling"),
        ({"s_churn": 0.5}, "s_churn", "not supported"),
        ({"s_noise": 0.9}, "s_noise", "1.0"),
    ],
)
def test_bad_txt2img_input_is_422_with_the_real_engine(server, body, field, detail):
    r = post(server, "/txt2img", {"prompt": "x", "steps": 2, **SIZE, **body})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and detail in r.json()["detail"], r.json()


def test_bad_images_are_422_with_json(server):
    good = png_b64(gradient())
    cases = [
        ({"init_images": ["%%% not base64 %%%"]}, "init_images[0]", "base64"),
        ({"init_images": [base64.b64encode(b"GIF89a broken").decode()]}, "init_images[0]", "image"),
        ({"init_images": [png_b64(gradient(160, 160))]}, "init_images[0]", "exceeds"),
        ({"init_images": [good], "mask": png_b64(Image.new("L", (200, 200)))}, "mask", "exceeds"),
    ]
    for body, field, detail in cases:
        r = post(server, "/img2img", {"prompt": "x", "steps": 2, **SIZE, **body})
        assert r.status_code in (413, 422) and r.headers["content-type"].startswith("application/json"), (
            r.text
        )
        assert r.json()["field"] == field and detail in r.json()["detail"], (body.keys(), r.json())
    # the server is still serving real jobs
    r = post(server, "/img2img", {"prompt": "x", "steps": 2, "seed": 8, "init_images": [good], **SIZE})
    assert r.status_code == 200 and json.loads(r.json()["info"])["seed"] == 8


def test_omitted_size_is_the_models_native_size(server):
    """A1111 defaults to 512x512; we default to the loaded model's native size (512 for SD 1.x)."""
    r = post(server, "/txt2img", {"prompt": "native", "steps": 2, "seed": 3})
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert image.size == (tiny_models.TINY_RESOLUTION,) * 2
    info = json.loads(r.json()["info"])
    assert (info["width"], info["height"]) == image.size
    assert f"Size: {image.width}x{image.height}" in info["infotexts"][0]


def test_xyz_plot_grid_is_saved_under_the_grids_folder(server):
    # A1111's argument layout of the X/Y/Z plot script: X axis = Steps (index 4) with values "1,2"
    xyz_args = [4, "1,2", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0, False]
    body = {
        "prompt": "grid",
        "seed": 7,
        "save_images": True,
        "script_name": "x/y/z plot",
        "script_args": xyz_args,
    }
    response = post(server, "/txt2img", {**body, **SIZE})
    assert response.status_code == 200, response.text
    assert response.json()["images"], "the grid comes back as the first image"
    grids = sorted((server.data_dir / "outputs" / "txt2img-grids").rglob("*.png"))
    assert grids, "the X/Y/Z grid was not saved"
    grid = Image.open(grids[-1])
    assert grid.width >= 2 * SIZE["width"], grid.size  # two cells side by side
    assert "Steps: 1" in grid.info.get("parameters", "")


def test_vae_selected_per_job_and_by_option(server, api):
    vaes = requests.get(server.api + "/sd-vae", timeout=30).json()
    names = [v["model_name"] for v in vaes]
    assert vaes[0]["filename"].endswith("other.safetensors") and "Automatic" not in names
    assert "other.safetensors" in names, names
    plain = api.txt2img(prompt="vae", seed=11, **SIZE)
    other = api.txt2img(prompt="vae", seed=11, override_settings={"sd_vae": "other.safetensors"}, **SIZE)
    assert "VAE: other.safetensors" in other.info["infotexts"][0] and "VAE:" not in plain.info["infotexts"][0]
    assert not np.array_equal(np.asarray(plain.image), np.asarray(other.image)), "the VAE was not applied"
    # the override was for that job only
    again = api.txt2img(prompt="vae", seed=11, **SIZE)
    assert np.array_equal(np.asarray(again.image), np.asarray(plain.image))
    bad = post(server, "/options", {"sd_vae": "missing"})
    assert bad.status_code == 422 and "sd_vae" in bad.text
