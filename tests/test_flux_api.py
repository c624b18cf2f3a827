"""Flux over the real API (app.py on loopback): a transformer-only Flux dev file completed by Forge's
additional modules from models/VAE and models/text_encoder, listed by /sd-modules; infotext as Forge
writes it; img2img / inpainting on 16-channel latents; a missing part is a 422 naming what to add."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from sdwebui.engine import masking
from sdwebui.models.model import ModelFamily
from tests import dit_fixtures as fx
from tests import tiny_models
from tests.api_server import start_server

MODULES = ["ae.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors"]
FLUX = {"override_settings": {"sd_model_checkpoint": "flux1-dev-tiny", "forge_additional_modules": MODULES}}
BASE = {
    "prompt": "a photo of a cat",
    "steps": 3,
    "width": 64,
    "height": 64,
    "seed": 5,
    "cfg_scale": 1,
    "sampler_name": "Euler",
    "scheduler": "Simple",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("flux-api")
    checkpoints = data / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    tiny_models.write_single_file(tiny_models.tiny_loaded_model("sd1"), checkpoints / "alpha.safetensors")
    model = fx.tiny_dit_model(ModelFamily.FLUX_DEV, data / "build")
    fx.write_flux_transformer_only(model, checkpoints / "flux1-dev-tiny.safetensors")
    fx.write_parts(model, data / "models" / "text_encoder", data / "models" / "VAE")
    with start_server(data, ["--ckpt", str(checkpoints / "alpha.safetensors")]) as srv:
        yield srv


def post(server, path, payload):
    return requests.post(f"{server.api}/{path}", json=payload, timeout=600)


def image_of(body) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB")


def encode(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_lists_modules_and_families(server):
    modules = requests.get(f"{server.api}/sd-modules", timeout=30).json()
    assert sorted(m["model_name"] for m in modules) == sorted(MODULES)
    assert all(m["filename"].endswith(m["model_name"]) for m in modules)
    families = {
        m["model_name"]: m["family"] for m in requests.get(f"{server.api}/sd-models", timeout=30).json()
    }
    assert families["flux1-dev-tiny"] == "flux-dev" and families["alpha"] == "sd1"


def test_missing_parts_are_a_422_naming_them(server):
    bare = {**BASE, "override_settings": {"sd_model_checkpoint": "flux1-dev-tiny"}}
    response = post(server, "txt2img", bare)
    assert response.status_code == 422, response.text
    assert "ae.safetensors" in response.text and "forge_additional_modules" in response.text
    only_vae = {
        **BASE,
        "override_settings": {**bare["override_settings"], "forge_additional_modules": MODULES[:1]},
    }
    response = post(server, "txt2img", only_vae)
    assert response.status_code == 422 and "clip_l.safetensors, t5xxl.safetensors" in response.text
    unknown = {
        **BASE,
        "override_settings": {**bare["override_settings"], "forge_additional_modules": ["nope"]},
    }
    response = post(server, "txt2img", unknown)
    assert response.status_code == 422 and "'nope' not found" in response.text


def test_txt2img_infotext_as_forge(server):
    response = post(server, "txt2img", {**BASE, **FLUX, "distilled_cfg_scale": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert image_of(body).size == (64, 64) and np.asarray(image_of(body)).std() > 1
    info = body["info"]
    for part in (
        "Sampler: Euler, Schedule type: Simple, CFG scale: 1",
        "Distilled CFG Scale: 5",
        "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16",
        "Model: flux1-dev-tiny",
    ):
        assert part in info, info
    default = post(server, "txt2img", {**BASE, **FLUX}).json()
    assert "Distilled CFG Scale: 3.5" in default["info"]
    assert np.abs(np.asarray(image_of(default), int) - np.asarray(image_of(body), int)).mean() > 0.5


def test_inpainting_keeps_pixels_outside_the_mask(server):
    original = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))).convert("RGB")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    payload = {
        **BASE,
        **FLUX,
        "init_images": [encode(original)],
        "mask": encode(mask),
        "mask_blur": 2,
        "inpainting_fill": 1,
        "denoising_strength": 0.8,
        "inpaint_full_res": False,
    }
    response = post(server, "img2img", payload)
    assert response.status_code == 200, response.text
    out, orig = np.asarray(image_of(response.json())), np.asarray(original)
    blurred = np.asarray(masking.blur_mask(mask, 2, 2))
    outside, inside = blurred == 0, blurred >= 250
    assert np.array_equal(out[outside], orig[outside])
    assert np.abs(out[inside].astype(int) - orig[inside].astype(int)).mean() > 3
    assert "Denoising strength: 0.8" in response.json()["info"]


def test_family_defaults_fill_what_the_body_leaves_out(server):
    """No sampler / steps / cfg_scale in the body: Flux dev's own defaults (Euler, 20 steps, CFG 1, one
    forward per step, Distilled CFG 3.5), not A1111's Euler a / CFG 7, also for the hires pass; a value the
    body gives wins, and an SD1 checkpoint keeps A1111's defaults."""
    bare = {k: v for k, v in BASE.items() if k not in ("sampler_name", "steps", "cfg_scale")}
    response = post(server, "txt2img", {**bare, **FLUX, "steps": None})
    assert response.status_code == 200, response.text
    info = response.json()["info"]
    assert "Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1," in info, info
    assert "Distilled CFG Scale: 3.5" in info
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 1, "denoising_strength": 0.5}
    explicit = post(server, "txt2img", {**bare, **FLUX, **hires, "steps": 2, "cfg_scale": 2.5}).json()
    assert "Steps: 2, Sampler: Euler, Schedule type: Simple, CFG scale: 2.5," in explicit["info"]
    assert "Hires upscale: 1.5" in explicit["info"] and "Hires sampler" not in explicit["info"]
    assert image_of(explicit).size == (96, 96)
    given = post(server, "txt2img", {**bare, **FLUX, "steps": 1, "sampler_index": "UniPC"}).json()["info"]
    assert "Sampler: UniPC," in given, given
    sd1 = post(server, "txt2img", {**bare, "steps": 2, "override_settings": {"sd_model_checkpoint": "alpha"}})
    assert sd1.status_code == 200, sd1.text
    assert "Sampler: Euler a, Schedule type: Simple, CFG scale: 7," in sd1.json()["info"]


def test_xyz_plot_on_flux(server):
    """The built-in X/Y/Z plot on the tiny Flux dev: Distilled CFG Scale, Sampler and Checkpoint (Flux <->
    SD1, the parts from the VAE / Text Encoder setting as in Forge) axes, each cell's infotext and image its
    own; then Steps, CFG Scale and Prompt S/R axes."""
    import json

    def xyz(x, y, z, **payload):
        tail = [True, True, False, False, False, False, False, 0, False]
        args = [x[0], x[1], [], y[0], y[1], [], z[0], z[1], [], *tail]
        body = {**BASE, "steps": 2, "script_name": "x/y/z plot", "script_args": args, **payload}
        response = post(server, "txt2img", body)
        assert response.status_code == 200, response.text
        return response.json()

    options = f"{server.api}/options"
    assert requests.post(options, json={"forge_additional_modules": MODULES}, timeout=600).ok
    try:
        body = xyz(
            ("Distilled CFG Scale", "2, 6"),
            ("Sampler", "Euler, UniPC"),
            ("Checkpoint name", "flux1-dev-tiny, alpha"),
        )
    finally:
        assert requests.post(options, json={"forge_additional_modules": []}, timeout=600).ok
    cells = json.loads(body["info"])["infotexts"][-8:]
    flux = [i for i in cells if "Model: flux1-dev-tiny" in i]
    assert sorted(("Distilled CFG Scale: 2," in i, "Sampler: UniPC" in i) for i in flux) == [
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    ], cells
    assert sum("Model: alpha" in i for i in cells) == 4
    lone = [np.asarray(image_of({"images": [data]}), int) for data in body["images"][-8:]]
    lone = [image for image, info in zip(lone, cells, strict=True) if "Model: flux1-dev-tiny" in info]
    assert np.abs(lone[0] - lone[1]).mean() > 0.1  # Distilled CFG 2 vs 6 (SD1 cells: no such guidance)
    second = xyz(("Steps", "1, 3"), ("CFG Scale", "1, 3"), ("Prompt S/R", "cat, dog"), **FLUX)
    infos = json.loads(second["info"])["infotexts"][-8:]
    assert sum("Steps: 3," in i for i in infos) == 4 and sum("CFG scale: 3," in i for i in infos) == 4
    assert sum("a photo of a dog" in i for i in infos) == 4 and all(
        "Model: flux1-dev-tiny" in i for i in infos
    )
