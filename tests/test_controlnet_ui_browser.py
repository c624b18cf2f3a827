"""The ControlNet accordion: its handlers headless (fast), and in real Chromium: upload an image, run the
preprocessor, generate with a ControlNet model from models/ControlNet (the infotext names the unit)."""

from __future__ import annotations

import dataclasses

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from sdwebui.engine.errors import RequestError
from sdwebui.engine.requests import Txt2ImgRequest
from webui.controlnet_ui import build_controlnet, filter_by_type, preview_map, slider_updates


@dataclasses.dataclass
class FakeServices:
    controlnets: object = None


@dataclasses.dataclass
class FakeBackend:
    options: dict
    services: FakeServices = dataclasses.field(default_factory=FakeServices)


def square() -> Image.Image:
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[16:48, 16:48] = 255
    return Image.fromarray(array)


def unit_values(unit, **changes) -> dict:
    values = {c: getattr(c, "value", None) for c in unit.unit_components()}
    for name, value in changes.items():
        values[getattr(unit, name)] = value
    return values


def test_accordion_units_reach_the_request_as_the_apis():
    backend = FakeBackend({"control_net_unit_count": 2})
    with gr.Blocks():
        controls = build_controlnet("txt2img", backend, is_img2img=False)
    assert len(controls.units) == 2
    first, second = controls.units
    values = unit_values(first, enabled=True, image=square(), module="canny", weight=0.7, threshold_a=50)
    values |= unit_values(second)
    request = controls.attach(Txt2ImgRequest(prompt="x"), values)
    unit = request.controlnet_units[0]
    assert (unit.enabled, unit.module, unit.weight, unit.threshold_a) == (True, "canny", 0.7, 50)
    assert unit.images[0].image.size == (64, 64) and not request.controlnet_units[1].enabled
    # the alias label the dropdown shows is sent as the module's key
    values[first.module] = "invert (from white bg & black line)"
    assert controls.attach(Txt2ImgRequest(prompt="x"), values).controlnet_units[0].module == "invert"
    values[first.module] = "no-such-module"
    with pytest.raises(RequestError, match=r"args\[0\]\.module"):
        controls.attach(Txt2ImgRequest(prompt="x"), values)
    untouched = Txt2ImgRequest(prompt="x")
    assert controls.attach(untouched, unit_values(first) | unit_values(second)) is untouched


def test_preview_filters_and_sliders():
    backend = FakeBackend({})
    edges, message = preview_map(backend, "canny", square(), None, 64, 100, 200)
    assert message == "" and edges.size == (64, 64)
    assert np.asarray(edges)[32, 32].max() == 0 and np.asarray(edges)[12:20, 24:40].max() == 255
    none, message = preview_map(backend, "depth_midas", square(), None, 64, -1, -1)
    assert none is None and "dpt_hybrid-midas-501f0c75.pt" in message
    modules, models = filter_by_type("Canny", backend)
    assert modules["choices"] == ["none", "canny", "invert (from white bg & black line)"]
    assert modules["value"] == "canny" and models["choices"] == ["None"]
    res, a, b = slider_updates("canny")
    assert (a["label"], a["value"], b["label"], b["value"]) == ("Low Threshold", 100, "High Threshold", 200)
    res, a, b = slider_updates("invert (from white bg & black line)")
    assert not res["visible"] and not a["visible"] and not b["visible"]
