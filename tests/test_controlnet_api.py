"""sd-webui-controlnet's API over real HTTP: /controlnet/* shapes, alwayson_scripts.controlnet units, infotext."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
import torch
from PIL import Image, ImageDraw

from sdwebui.engine.controlnet.preprocessors import lineart
from sdwebui.engine.controlnet.units import ControlMode, ResizeMode, parse_infotext
from tests.api_server import start_server, write_tiny_checkpoints
from tests.controlnet_fixtures import tiny_controlnet, write_controlnet_dir, write_ldm_controlnet

TINY = {"prompt": "a cat", "seed": 7, "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def square() -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle([16, 16, 48, 48], fill="white")
    return image


def decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("controlnet-api")
    write_tiny_checkpoints(data_dir, ("alpha",))
    folder = data_dir / "models" / "ControlNet"
    write_ldm_controlnet(tiny_controlnet("sd1"), "sd1", folder / "control_tiny_sd15_canny.pth")
    (folder / "broken.safetensors").write_bytes(b"not a model")
    extra = data_dir / "more"
    write_controlnet_dir(tiny_controlnet("sd1", seed=2), extra / "tiny_sd15_depth")
    # an annotator in the extension's layout: lineart_coarse's generator (narrow) from random weights
    torch.manual_seed(0)
    coarse = data_dir / "models" / "ControlNetAnnotators" / lineart.COARSE
    coarse.parent.mkdir(parents=True)
    torch.save(lineart.LineGenerator(width=8, residual_blocks=1).state_dict(), coarse)
    with start_server(data_dir, ["--controlnet-dir", str(extra)]) as srv:
        yield srv


def get(server, path, **params):
    r = requests.get(server.url + path, params=params, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def txt2img(server, *units, **changes):
    body = {**TINY, **changes}
    if units:
        body["alwayson_scripts"] = {"controlnet": {"args": list(units)}}
    return requests.post(server.api + "/txt2img", json=body, timeout=300)


def pixels(data: str) -> np.ndarray:
    return np.asarray(decode(data).convert("RGB"), dtype=np.int16)


def test_endpoint_shapes(server, tmp_path):
    assert get(server, "/controlnet/version") == {"version": 3}
    listed = get(server, "/controlnet/model_list")
    names = [t.split(" [")[0] for t in listed["model_list"]]
    assert names == ["control_tiny_sd15_canny", "tiny_sd15_depth"]
    assert all(len(t.rsplit(" [", 1)[1]) == 9 for t in listed["model_list"])
    assert [b["name"].split(" [")[0] for b in listed["broken"]] == ["broken"]
    modules = get(server, "/controlnet/module_list")
    assert modules["module_list"][0] == "none" and "canny" in modules["module_list"]
    assert {"model_free", "sliders"} <= set(modules["module_detail"]["canny"])
    aliases = get(server, "/controlnet/module_list", alias_names="true")["module_list"]
    assert len(aliases) == len(modules["module_list"])
    types = get(server, "/controlnet/control_types")["control_types"]
    assert set(types["All"]) == {"module_list", "model_list", "default_option", "default_model"}
    assert listed["model_list"][0] in types["Canny"]["model_list"]
    assert get(server, "/controlnet/settings") == {"control_net_unit_count": 3}
    scripts = get(server, "/sdapi/v1/scripts")
    assert "controlnet" in scripts["txt2img"] and "controlnet" in scripts["img2img"]


def test_client_payload_weight_window_and_infotext(server):
    plain = txt2img(server)
    assert plain.status_code == 200, plain.text
    # the shape of the extension's wiki example (API, v1.1): legacy input_image, integer enums, lowvram
    unit = {"input_image": b64(square()), "module": "canny", "model": "control_tiny_sd15_canny",
            "weight": 1, "resize_mode": 1, "lowvram": False, "processor_res": 64, "threshold_a": 100,
            "threshold_b": 200, "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": 0,
            "pixel_perfect": False}  # fmt: skip
    r = txt2img(server, unit)
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert len(images) == 2  # the image, then the detected map (the extension's default)
    assert decode(images[1]).size == (64, 64)
    assert np.abs(pixels(images[0]) - pixels(plain.json()["images"][0])).max() > 0
    infotext = decode(images[0]).info["parameters"]
    info = requests.post(server.api + "/png-info", json={"image": images[0]}, timeout=60).json()
    pasted = parse_infotext(info["parameters"]["ControlNet 0"])
    assert "ControlNet 0: " in infotext
    assert pasted.module == "canny" and pasted.model.startswith("control_tiny_sd15_canny [")
    assert pasted.processor_res == 64 and pasted.threshold_a == 100 and pasted.threshold_b == 200
    assert pasted.resize_mode == ResizeMode.CROP_AND_RESIZE and pasted.control_mode == ControlMode.BALANCED
    for off in ({"weight": 0}, {"enabled": False}):
        same = txt2img(server, {**unit, **off, "enabled": off.get("enabled", True)})
        assert same.status_code == 200, same.text
        assert np.array_equal(pixels(same.json()["images"][0]), pixels(plain.json()["images"][0]))
    named = txt2img(server, {**unit, "enabled": True, "resize_mode": "Just Resize",
                             "control_mode": "My prompt is more important", "save_detected_map": False})  # fmt: skip
    assert named.status_code == 200 and len(named.json()["images"]) == 1
    assert "Resize Mode: Just Resize" in decode(named.json()["images"][0]).info["parameters"]


@pytest.mark.parametrize(
    "unit, field, words",
    [
        ({"image": "not base64!"}, "alwayson_scripts.controlnet.args[0].image", "base64"),
        ({"model": "nope"}, "alwayson_scripts.controlnet.args[0].model", "control_tiny_sd15_canny"),
        ({"module": "nope"}, "alwayson_scripts.controlnet.args[0].module", "canny"),
        ({"model": "broken"}, "alwayson_scripts.controlnet.args[0].model", "cannot be used"),
        ({"weight": 3}, "alwayson_scripts.controlnet.args[0].weight", "outside"),
        (
            {"guidance_start": 0.8, "guidance_end": 0.2},
            "alwayson_scripts.controlnet.args[0].guidance_start",
            ">",
        ),
        ({"resize_mode": 7}, "alwayson_scripts.controlnet.args[0].resize_mode", "Crop and Resize"),
        ({"color": 1}, "alwayson_scripts.controlnet.args[0].color", "unknown"),
    ],
)
def test_bad_units_are_422_naming_the_field(server, unit, field, words):
    body = {
        "enabled": True,
        "module": "none",
        "model": "control_tiny_sd15_canny",
        "image": b64(square()),
        **unit,
    }
    r = txt2img(server, body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and words in r.json()["detail"]


def test_detect(server):
    r = requests.post(
        server.url + "/controlnet/detect",
        json={"controlnet_module": "canny", "controlnet_input_images": [b64(square())],
              "controlnet_processor_res": 64, "controlnet_threshold_a": 100, "controlnet_threshold_b": 200},
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["info"] == "Success"
    edges = np.asarray(decode(r.json()["images"][0]).convert("L"))
    assert edges[32, 13:20].max() > 127 and edges[32, 24:40].max() == 0  # the square's border, not its inside
    empty = requests.post(server.url + "/controlnet/detect", json={"controlnet_module": "canny"}, timeout=60)
    assert empty.status_code == 422
    unknown = requests.post(
        server.url + "/controlnet/detect",
        json={"controlnet_module": "nope", "controlnet_input_images": [b64(square())]},
        timeout=60,
    )
    assert unknown.status_code == 422 and unknown.json()["field"] == "controlnet_module"


def test_detect_with_an_annotator_from_models_controlnetannotators(server):
    modules = get(server, "/controlnet/module_list", alias_names="true")["module_list"]
    assert "lineart_coarse" in modules and "lineart_anime" not in modules
    body = {"controlnet_module": "lineart_coarse", "controlnet_input_images": [b64(square())],
            "controlnet_processor_res": 64}  # fmt: skip
    r = requests.post(server.url + "/controlnet/detect", json=body, timeout=60)
    assert r.status_code == 200, r.text
    lines = decode(r.json()["images"][0])
    assert lines.size == (64, 64) and np.asarray(lines).std() > 0
    missing = requests.post(server.url + "/controlnet/detect", json={**body, "controlnet_module": "lineart_anime"},
                            timeout=60)  # fmt: skip
    assert missing.status_code == 422 and "models/ControlNetAnnotators/lineart_anime/netG.pth" in missing.text


def test_inpaint_only_keeps_the_unit_image_outside_the_mask(server):
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    image = Image.fromarray(np.stack([np.tile(ramp, (64, 1)), np.tile(ramp[:, None], (1, 64)),
                                      np.full((64, 64), 90, np.uint8)], axis=2))  # fmt: skip
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle([24, 24, 39, 39], fill=255)
    unit = {"enabled": True, "module": "inpaint_only", "model": "control_tiny_sd15_canny",
            "image": b64(image), "mask": b64(mask), "save_detected_map": False}  # fmt: skip
    r = txt2img(server, unit)
    assert r.status_code == 200, r.text
    out = pixels(r.json()["images"][0])
    # the blend mask is the mask dilated by 7 and box-blurred by 7 pixels: 10 pixels away it is 0
    outside = np.ones((64, 64), dtype=bool)
    outside[14:50, 14:50] = False
    assert np.array_equal(out[outside], np.asarray(image, dtype=np.int16)[outside])
    assert np.abs(out[28:36, 28:36] - np.asarray(image, dtype=np.int16)[28:36, 28:36]).max() > 8
    ring = ~outside
    ring[24:40, 24:40] = False  # outside the mask, inside the dilated, blurred border
    assert not np.array_equal(out[ring], np.asarray(image, dtype=np.int16)[ring])
    # the extension's control_net_inpaint_blur_sigma: 0 keeps every pixel outside the mask itself
    sharp = txt2img(server, unit, override_settings={"control_net_inpaint_blur_sigma": 0})
    assert sharp.status_code == 200, sharp.text
    hard = pixels(sharp.json()["images"][0])
    assert np.array_equal(hard[ring], np.asarray(image, dtype=np.int16)[ring])
    assert np.array_equal(hard[28:36, 28:36], out[28:36, 28:36])  # the same generation inside


def test_script_info_declares_controlnet_with_postable_default_units(server):
    infos = requests.get(server.api + "/script-info", timeout=60).json()
    ours = [i for i in infos if i["name"] == "controlnet"]
    assert sorted(i["is_img2img"] for i in ours) == [False, True]
    assert all(i["is_alwayson"] and len(i["args"]) == 3 for i in ours)  # control_net_unit_count
    default = ours[0]["args"][0]["value"]
    assert default["enabled"] is False and default["module"] == "none" and default["model"] == "None"
    assert default["resize_mode"] == "Crop and Resize" and default["control_mode"] == "Balanced"
    # a client fills in the declared default unit and posts it back
    unit = {**default, "enabled": True, "model": "control_tiny_sd15_canny", "image": b64(square())}
    r = txt2img(server, unit)
    assert r.status_code == 200, r.text
    assert 'ControlNet 0: "Module: none' in decode(r.json()["images"][0]).info["parameters"]
