"""Settings and fields that must take effect, over real HTTP on the real product (`app.py --api --nowebui`).

One server, set up as a new user's first hour can be: no --ckpt and no sd_model_checkpoint (a fresh install),
a broken checkpoint that sorts first, a config.json that is not a JSON object, two good tiny SD1 checkpoints,
a standalone VAE and a styles.csv. Tests run in file order; each leaves the settings as it found them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import stat
from datetime import date

import pytest
import requests
from PIL import Image

from sdwebui.models.hashing import sha256_file
from sdwebui.outputs.infotext import read_infotext
from tests import tiny_models
from tests.api_server import start_server
from tests.waiting import wait_until

SIZE = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("settings-api")
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    (folder / "0-broken.safetensors").write_bytes(b"\x00this is not a checkpoint" * 40)
    for seed, name in ((0, "alpha"), (1, "beta")):
        tiny_models.write_single_file(
            tiny_models.tiny_loaded_model("sd1", seed=seed), folder / f"{name}.safetensors"
        )
    tiny_models.write_vae_file(
        tiny_models.tiny_loaded_model("sd1", seed=7).vae, data_dir / "models" / "VAE" / "other.safetensors"
    )
    (data_dir / "config.json").write_text('["a list is not a settings file"]')
    (data_dir / "styles.csv").write_text('name,prompt,negative_prompt\nbest,"best, {prompt}",blurry\n')
    with start_server(data_dir, ["--use-cpu", "all"]) as srv:
        yield srv


def post(server, path, body=None, **kwargs):
    return requests.post(server.api + path, json=body if body is not None else {}, timeout=120, **kwargs)


def options(server) -> dict:
    return requests.get(server.api + "/options", timeout=30).json()


def txt2img(server, **body) -> dict:
    response = post(server, "/txt2img", {**SIZE, **body})
    assert response.status_code == 200, response.text
    result = response.json()
    result["info"] = json.loads(result["info"])
    return result


def outputs(server):
    return server.data_dir / "outputs" / "txt2img-images" / date.today().strftime("%Y-%m-%d")


def test_start_up_skips_the_broken_checkpoint_and_sets_the_bad_config_aside(server):
    result = txt2img(server, prompt="first", seed=1)
    assert result["info"]["sd_model_name"] == "alpha"
    assert options(server)["sd_model_checkpoint"].startswith("alpha.safetensors")  # not "" while loaded
    aside = [p.name for p in server.data_dir.iterdir() if p.name.startswith("config.json.bad-")]
    assert len(aside) == 1 and aside[0] in server.log()
    assert "0-broken.safetensors" in server.log() and "Loaded alpha.safetensors" in server.log()


def test_an_override_does_not_stick_to_the_next_plain_job(server):
    overridden = txt2img(server, prompt="x", seed=2, override_settings={"sd_model_checkpoint": "beta"})
    assert overridden["info"]["sd_model_name"] == "beta"
    assert txt2img(server, prompt="x", seed=2)["info"]["sd_model_name"] == "alpha"
    assert options(server)["sd_model_checkpoint"].startswith("alpha")


def test_after_unload_the_next_job_loads_a_working_checkpoint(server):
    assert post(server, "/unload-checkpoint").status_code == 200
    assert txt2img(server, prompt="x", seed=3)["info"]["sd_model_name"] == "alpha"


def test_reload_after_unload_loads_the_settings_checkpoint(server):
    assert post(server, "/options", {"sd_model_checkpoint": "beta.safetensors"}).status_code == 200
    try:
        assert post(server, "/unload-checkpoint").status_code == 200
        loads = server.log().count("Loaded beta.safetensors")
        assert post(server, "/reload-checkpoint").status_code == 200
        assert server.log().count("Loaded beta.safetensors") == loads + 1
    finally:
        assert post(server, "/options", {"sd_model_checkpoint": "alpha.safetensors"}).status_code == 200


def test_styles_are_applied_once(server):
    info = txt2img(server, prompt="a cat", negative_prompt="ugly", styles=["best"], seed=4)["info"]
    assert info["prompt"] == "best, a cat" and info["negative_prompt"] == "ugly, blurry"
    assert info["infotexts"][0].startswith("best, a cat\nNegative prompt: ugly, blurry\nSteps: 2")
    assert info["styles"] == ["best"]


def test_filename_pattern_format_and_number_settings_are_used_when_saving(server):
    before = options(server)
    changed = {
        "samples_filename_pattern": "[seed]-[prompt_words]-[model_name]",
        "samples_format": "jpg",
        "save_images_add_number": False,
    }
    assert post(server, "/options", changed).status_code == 200
    try:
        result = txt2img(server, prompt="a red cube", seed=30, save_images=True)
        path = outputs(server) / "30-a red cube-alpha.jpg"
        assert path.is_file(), sorted(p.name for p in outputs(server).iterdir())
        with Image.open(path) as image:
            assert image.format == "JPEG" and read_infotext(image) == result["info"]["infotexts"][0]
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not 0600
        assert post(server, "/options", {"samples_format": "png", "enable_pnginfo": False}).status_code == 200
        txt2img(server, prompt="a red cube", seed=31, save_images=True)
        with Image.open(outputs(server) / "31-a red cube-alpha.png") as image:
            assert read_infotext(image) is None
    finally:
        post(server, "/options", {key: before[key] for key in (*changed, "enable_pnginfo")})
    txt2img(server, prompt="numbered again", seed=32, save_images=True)
    assert [p for p in outputs(server).iterdir() if re.fullmatch(r"\d{5}-32\.png", p.name)]


@pytest.mark.parametrize(
    "body, key",
    [
        ('{"eta_ancestral": NaN}', "eta_ancestral"),
        ('{"CLIP_stop_at_last_layers": 99}', "CLIP_stop_at_last_layers"),
        ('{"CLIP_stop_at_last_layers": null}', "CLIP_stop_at_last_layers"),
        ('{"default_sampler": "Nope"}', "default_sampler"),
        ('{"samples_format": "gif"}', "samples_format"),
        ('{"samples_filename_pattern": "[seed]-[lora]"}', "samples_filename_pattern"),
    ],
)
def test_out_of_range_options_are_refused_naming_the_key(server, body, key):
    before = options(server)[key]
    response = requests.post(
        server.api + "/options", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == key and key in response.json()["detail"]
    assert options(server)[key] == before
    assert txt2img(server, prompt="still works", seed=5)["images"]


def test_an_override_out_of_range_is_refused(server):
    response = post(server, "/txt2img", {**SIZE, "override_settings": {"CLIP_stop_at_last_layers": 99}})
    assert response.status_code == 422
    assert response.json()["field"] == "override_settings" and "CLIP_stop_at_last_layers" in response.text


@pytest.mark.parametrize(
    "body, field, tag",
    [
        ({"prompt": "a cat <lora:detail:0.8>"}, "prompt", "<lora:detail:0.8>"),
        ({"prompt": "a cat", "negative_prompt": "<lyco:x:1> blurry"}, "negative_prompt", "<lyco:x:1>"),
    ],
)
def test_extra_network_tags_are_a_4xx_naming_them(server, body, field, tag):
    response = post(server, "/txt2img", {**SIZE, **body})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and tag in response.json()["detail"]


def test_vae_hash_reaches_the_infotext(server):
    digest = sha256_file(server.data_dir / "models" / "VAE" / "other.safetensors")[:10]
    info = txt2img(server, prompt="x", seed=6, override_settings={"sd_vae": "other.safetensors"})["info"]
    assert f"VAE hash: {digest}, VAE: other.safetensors" in info["infotexts"][0]
    assert info["sd_vae_hash"] == digest
    plain = txt2img(server, prompt="x", seed=6, override_settings={"sd_vae": "None"})["info"]
    assert "VAE hash" not in plain["infotexts"][0]


def test_after_skip_all_seeds_match_the_images(server):
    body = {**SIZE, "prompt": "skip", "steps": 150, "n_iter": 3, "seed": 100}
    task = post(server, "/txt2img?async=true", body).json()["task_id"]

    def sampling_started() -> bool:
        state = requests.get(server.api + "/progress", timeout=10).json()["state"]
        return state["job"] == task and state["job_no"] == 0 and state["sampling_step"] >= 1

    wait_until(sampling_started, "the first batch started sampling")
    assert post(server, "/skip").json()["skipped"] == [task]

    def finished() -> dict | None:
        status = requests.get(server.api + f"/tasks/{task}", timeout=10).json()
        return status if status["status"] not in ("queued", "running") else None

    status = wait_until(finished, "the skipped task finished", timeout=120, interval=0.2)
    info = json.loads(status["result"]["info"])
    in_images = []
    for b64 in status["result"]["images"]:
        text = read_infotext(Image.open(io.BytesIO(base64.b64decode(b64))))
        in_images.append(int(re.search(r"Seed: (\d+)", text).group(1)))
    assert len(in_images) == 2 and set(in_images) < {100, 101, 102}  # one image was skipped
    assert info["all_seeds"] == in_images and info["seed"] == in_images[0]
