"""The unit's preprocessor sliders follow the module chosen, whether or not its weights are in
models/ControlNetAnnotators; a module without its weights says which file it wants when it runs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PIL import Image

from webui.controlnet_ui import preview_map, slider_updates


def shown(update: dict) -> tuple:
    """(label, minimum, maximum, step, value) of a visible slider update."""
    assert update["visible"] is True, update
    return update["label"], update["minimum"], update["maximum"], update["step"], update["value"]


def test_a_module_without_its_weights_still_shows_its_sliders():
    res, a, b = slider_updates("softedge_hed")
    assert shown(res) == ("Resolution", 64, 2048, 8, 512)
    assert a["visible"] is False and b["visible"] is False
    res, a, b = slider_updates("mlsd")  # also weight-based, with both thresholds
    assert shown(res) == ("Resolution", 64, 2048, 8, 512)
    assert shown(a) == ("MLSD Value Threshold", 0.01, 2.0, 0.01, 0.1)
    assert shown(b) == ("MLSD Distance Threshold", 0.01, 20.0, 0.01, 0.1)
    # a pasted unit's values are kept for that module (named by its internal name or its alias)
    res, _, _ = slider_updates("softedge_hed", {"module": "hed", "processor_res": 256})
    assert res["value"] == 256


def test_a_weight_free_module_shows_its_thresholds_and_an_unknown_one_none():
    res, a, b = slider_updates("canny")
    assert shown(res) == ("Resolution", 64, 2048, 8, 512)
    assert shown(a) == ("Low Threshold", 1, 255, 1, 100)
    assert shown(b) == ("High Threshold", 1, 255, 1, 200)
    assert all(u["visible"] is False for u in slider_updates("no_such_module"))


def test_the_missing_weights_error_comes_when_the_preprocessor_runs(tmp_path):
    store = SimpleNamespace(annotator_dir=tmp_path, clip_vision_dir=None)
    backend = SimpleNamespace(options={}, services=SimpleNamespace(controlnets=store))
    image = Image.fromarray(np.full((32, 32, 3), 255, dtype=np.uint8))
    result, message = preview_map(backend, "softedge_hed", image, None, 64, -1, -1)
    assert result is None and "ControlNetHED.pth" in message and "ControlNetAnnotators" in message
