"""The ControlNet unit record: the extension's dict forms (names, integers, aliases, image shapes), infotext."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from sdwebui.engine.controlnet.units import (
    ControlMode,
    ControlNetUnit,
    HiResOption,
    ResizeMode,
    parse_infotext,
    parse_unit,
    parse_units,
    unit_fields_from_infotext,
)
from sdwebui.engine.errors import RequestError


def b64(color: str = "red", size: tuple[int, int] = (8, 8)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    "given, resize, mode",
    [
        ({"resize_mode": 0, "control_mode": 2}, ResizeMode.JUST_RESIZE, ControlMode.CONTROL),
        (
            {"resize_mode": "Resize and Fill", "control_mode": "Balanced"},
            ResizeMode.RESIZE_AND_FILL,
            ControlMode.BALANCED,
        ),
        ({"resize_mode": "Inner Fit (Scale to Fit)"}, ResizeMode.CROP_AND_RESIZE, ControlMode.BALANCED),
        (
            {"resize_mode": 3, "control_mode": "My prompt is more important"},
            ResizeMode.JUST_RESIZE,
            ControlMode.PROMPT,
        ),
        ({"guessmode": True}, ResizeMode.CROP_AND_RESIZE, ControlMode.CONTROL),
    ],
)
def test_enum_forms(given, resize, mode):
    unit = parse_unit(given, "args[0]")
    assert unit.resize_mode == resize and unit.control_mode == mode


def test_defaults_aliases_and_image_forms():
    unit = parse_unit({}, "args[0]")
    assert unit == ControlNetUnit(enabled=True)  # an API unit without `enabled` counts as enabled
    legacy = parse_unit(
        {"input_image": b64(), "mask_image": b64("white"), "lowvram": True, "guidance": 0.5}, "u"
    )
    assert legacy.low_vram and legacy.guidance_end == 0.5 and legacy.images[0].mask is not None
    pair = parse_unit({"image": [b64(), b64("white")]}, "u").images
    assert len(pair) == 1 and np.asarray(pair[0].mask).min() == 255
    batch = parse_unit({"image": [{"image": b64()}, {"image": b64("blue"), "mask": b64()}]}, "u").images
    assert len(batch) == 2 and batch[0].mask is None and batch[1].mask is not None
    as_dict = parse_unit({"image": {"image": "data:image/png;base64," + b64()}}, "u").images
    assert as_dict[0].image.getpixel((0, 0)) == (255, 0, 0)
    assert parse_unit({"hr_option": 2}, "u").hr_option == HiResOption.HIGH_RES_ONLY
    assert len(parse_units({"args": [{}, {"enabled": False}]})) == 2


@pytest.mark.parametrize(
    "given, field",
    [
        ({"image": "%%%"}, "args[1].image"),
        ({"image": [b64(), b64(), b64()]}, "args[1].image"),
        ({"image": b64(), "mask": b64(size=(4, 4))}, "args[1].mask"),
        ({"image": [{"image": b64()}, {"mask": b64()}]}, "args[1].image[1].image"),
        ({"weight": "heavy"}, "args[1].weight"),
        ({"processor_res": 1.5}, "args[1].processor_res"),
        ({"control_mode": 3}, "args[1].control_mode"),
        ({"enabled": "yes"}, "args[1].enabled"),
        ({"input_mode": "batch"}, "args[1].input_mode"),
        ({"image": b64(), "input_image": b64()}, "args[1].input_image"),
        ({"advanced_weighting": []}, "args[1].advanced_weighting"),
    ],
)
def test_bad_values_name_the_field(given, field):
    with pytest.raises(RequestError) as info:
        parse_units([{}, given], field_name="args")
    assert info.value.field == field


def test_infotext_round_trip():
    unit = parse_unit(
        {"module": "canny", "model": "control_v11p_sd15_canny [d14c016b]", "weight": 0.75, "resize_mode": 2,
         "processor_res": 512, "threshold_a": 100, "threshold_b": 200, "guidance_start": 0.1, "guidance_end": 0.9,
         "pixel_perfect": True, "control_mode": 1},
        "u",
    )  # fmt: skip
    text = unit.serialize()
    assert text == (
        "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.75, Resize Mode: Resize and Fill, "
        "Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.1, Guidance End: 0.9, "
        "Pixel Perfect: True, Control Mode: My prompt is more important"
    )
    back = parse_infotext(text)
    assert back == unit
    fields = unit_fields_from_infotext(back)
    assert fields["control_mode"] == "My prompt is more important" and fields["weight"] == 0.75
    with pytest.raises(RequestError):
        parse_infotext("Module canny")
