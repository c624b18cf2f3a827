"""The built-in img2img scripts (extensions-builtin/img2img-scripts): "SD upscale", "Loopback", "Poor man's
outpainting" and "Outpainting mk2", by `script_name` over real HTTP with a tiny checkpoint and upscaler file,
plus A1111's tile split / combine they use."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from modules import images
from sdwebui.engine.infotext_fields import parse_infotext
from tests.api_server import start_server, write_tiny_checkpoints


def test_split_and_combine_grid_round_trip_with_overlap():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (100, 150, 3), dtype=np.uint8))
    grid = images.split_grid(image, tile_w=64, tile_h=64, overlap=16)
    assert [len(row[2]) for row in grid.tiles] == [3, 3]  # ceil((150-16)/48) columns, ceil((100-16)/48) rows
    xs = [tile[0] for tile in grid.tiles[0][2]]
    assert xs[0] == 0 and xs[-1] == 150 - 64 and all(b - a <= 48 for a, b in zip(xs, xs[1:], strict=False))
    assert np.array_equal(np.asarray(images.combine_grid(grid)), np.asarray(image))  # same tiles: same image
    for _y, _h, row in grid.tiles:  # a dark tile blends into its neighbours over the overlap only
        for tile in row:
            tile[2] = Image.new("RGB", (64, 64), (0, 0, 0)) if tile is row[0] else tile[2]
    combined = np.asarray(images.combine_grid(grid), dtype=np.int16)
    assert combined[40, :40].max() == 0 and np.array_equal(combined[40, 70:], np.asarray(image)[40, 70:])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    data_dir = tmp_path_factory.mktemp("img2img-scripts")
    write_tiny_checkpoints(data_dir, ("alpha",))
    (data_dir / "models" / "ESRGAN").mkdir(parents=True)
    torch.manual_seed(0)
    save_file(ESRGAN(num_filters=8, num_blocks=1, scale=2).state_dict(), data_dir / "models" / "ESRGAN" / "tiny2x.safetensors")  # fmt: skip
    with start_server(data_dir) as srv:
        yield srv


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


INIT = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
BODY = {"prompt": "a cat", "seed": 5, "steps": 2, "sampler_name": "Euler", "width": 64, "height": 64,
        "denoising_strength": 0.5, "init_images": [_b64(INIT)]}  # fmt: skip


def post(server, body):
    return requests.post(server.api + "/img2img", json={**BODY, **body}, timeout=600)


def test_scripts_are_listed(server):
    names = requests.get(server.api + "/scripts", timeout=60).json()["img2img"]
    for name in ("sd upscale", "loopback", "poor man's outpainting", "outpainting mk2"):
        assert name in [n.lower() for n in names], names


def test_sd_upscale_tiles_through_a_model_upscaler(server):
    r = post(server, {"width": 64, "height": 64, "script_name": "SD upscale",
                      "script_args": ["", 16, "tiny2x", 1.5]})  # fmt: skip
    assert r.status_code == 200, r.text
    out = r.json()["images"]
    assert len(out) == 1 and _decode(out[0]).size == (96, 96)  # 64 * 1.5, four 64 px tiles
    info = json.loads(r.json()["info"])
    params = parse_infotext(info["infotexts"][0])
    assert params["SD upscale upscaler"] == "tiny2x" and params["SD upscale overlap"] == "16"
    by_index = post(server, {"script_name": "SD upscale", "script_args": ["", 16, 1, 1.5]})  # 1: Lanczos
    assert by_index.status_code == 200, by_index.text
    assert "SD upscale upscaler: Lanczos" in json.loads(by_index.json()["info"])["infotexts"][0]
    bad = post(server, {"script_name": "SD upscale", "script_args": ["", 16, "nope", 2]})
    assert bad.status_code == 422 and "nope" in bad.text and "tiny2x" in bad.text


def test_loopback_feeds_each_output_back_with_the_strength_curve(server):
    r = post(server, {"script_name": "Loopback", "script_args": [3, 0.2, "Linear", "None"]})
    assert r.status_code == 200, r.text
    out = r.json()["images"]
    assert len(out) == 4  # the grid of the three loops, then each loop's image
    assert _decode(out[0]).size == (192, 64)
    params = parse_infotext(json.loads(r.json()["info"])["infotexts"][0])
    assert params["Final denoising strength"] == "0.2" and params["Denoising curve"] == "Linear"
    one = post(server, {"script_name": "Loopback", "script_args": [1, 0.2, "Linear", "None"]})
    loop1 = np.asarray(_decode(one.json()["images"][0]), dtype=np.int16)
    assert np.array_equal(np.asarray(_decode(out[1]), dtype=np.int16), loop1)  # loop 1 is the plain img2img
    assert np.abs(np.asarray(_decode(out[3]), dtype=np.int16) - loop1).mean() > 0.5  # later loops go on
    legacy = post(server, {"script_name": "Loopback", "script_args": [2, 0.9, "None"]})  # A1111's old form
    assert legacy.status_code == 200, legacy.text
    assert "Denoising strength change factor: 0.9" in json.loads(legacy.json()["info"])["infotexts"][0]
    bad = post(server, {"script_name": "Loopback", "script_args": [3, 0.2, "Wobbly", "None"]})
    assert bad.status_code == 422 and "Wobbly" in bad.text


@pytest.mark.parametrize(("name", "args"), [
    ("Poor man's outpainting", [32, 4, 1, ["left", "down"]]),
    ("Outpainting mk2", ["", 32, 4, ["left", "down"], 1.0, 0.05]),
])  # fmt: skip
def test_outpainting_scripts_grow_the_canvas_and_keep_the_original(server, name, args):
    r = post(server, {"script_name": name, "script_args": args, "denoising_strength": 0.8})
    assert r.status_code == 200, r.text
    image = np.asarray(_decode(r.json()["images"][0]).convert("RGB"), dtype=np.int16)
    assert image.shape == (96, 96, 3)  # 32 px on the left and at the bottom
    kept = image[:60, 36:]  # away from the mask's blur into the original
    assert np.abs(kept - np.asarray(INIT, dtype=np.int16)[:60, 4:]).mean() < 8
    bad = post(server, {"script_name": name, "script_args": [*args[:-3], ["sideways"], *args[-2:]]
                        if name == "Outpainting mk2" else [32, 4, 1, ["sideways"]]})  # fmt: skip
    assert bad.status_code == 422 and "sideways" in bad.text
