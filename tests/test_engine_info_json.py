"""One info-JSON builder (sdwebui.engine.info_json): the API's `info` and the facade's `Processed.js()`
agree for the same job."""

from __future__ import annotations

import json

from sdwebui.api import mapping
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.info_json import VERSION
from sdwebui.engine.requests import Img2ImgRequest, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.facade import processing


def model_info(model) -> dict:
    return {"sd_model_name": model.info.name, "sd_model_hash": model.info.shorthash, "is_inpainting": False}


def both(model, request):
    result = generate(model, request, JobContext(), EngineSettings(save_images=False))
    api = json.loads(mapping.info_json(result, request, model_info(model)))
    p = processing.processing_from_request(request)
    p.sd_model_name, p.sd_model_hash = model.info.name, model.info.shorthash  # the job's model
    facade = json.loads(processing.processed_from_result(p, result).js())
    return result, api, facade


def test_api_and_facade_info_json_agree(tiny_sd1_model):
    request = Txt2ImgRequest(
        prompt="a cat",
        negative_prompt="ugly",
        seed=5,
        steps=1,
        width=64,
        height=64,
        batch_size=2,
        cfg_scale=6.5,
        clip_skip=2,
        sampler_name="Euler",
        extra_generation_params={"Note": "x"},
    )
    result, api, facade = both(tiny_sd1_model, request)
    assert facade == api
    assert list(facade) == list(api)  # same key order
    assert api["all_seeds"] == [5, 6] and api["seed"] == 5 and api["prompt"] == "a cat"
    assert api["infotexts"] == result.infotexts and api["clip_skip"] == 2
    assert api["job_timestamp"] == result.job_timestamp and len(result.job_timestamp) == 14
    assert api["version"] == VERSION and api["denoising_strength"] is None
    assert api["sd_model_name"] == tiny_sd1_model.info.name and api["extra_generation_params"] == {
        "Note": "x"
    }


def test_img2img_info_json_agrees(tiny_sd1_model):
    from PIL import Image

    request = Img2ImgRequest(
        prompt="a dog",
        seed=9,
        steps=2,
        width=64,
        height=64,
        sampler_name="Euler",
        denoising_strength=0.5,
        init_images=[Image.new("RGB", (64, 64), (10, 200, 30))],
    )
    _, api, facade = both(tiny_sd1_model, request)
    assert facade == api and api["denoising_strength"] == 0.5
