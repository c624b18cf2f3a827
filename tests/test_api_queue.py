"""The API over real HTTP on loopback, with the real engine on tiny checkpoints (a long job is many steps
on a larger image, interrupted):
FIFO order under 16 concurrent clients, interrupt / skip / cancel, async submit + fetch, progress, options,
loose clients, 4xx errors, the webuiapi package as a real client."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from tests.api_server import start_server, write_tiny_checkpoints

TINY = {"width": 64, "height": 64, "steps": 2}
LONG = {
    "width": 256,
    "height": 256,
    "steps": 150,
}  # seconds per image on the tiny model: interrupted before it ends


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("api-data")
    write_tiny_checkpoints(data_dir, ("alpha", "beta"))
    (data_dir / "styles.csv").write_text('name,prompt,negative_prompt\nwrap,"best, {prompt}",blurry\n')
    with start_server(data_dir) as srv:
        yield srv


def post(server, path, body=None, **kwargs):
    return requests.post(server.api + path, json=body if body is not None else {}, timeout=120, **kwargs)


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_txt2img_shape_info_and_png_infotext(server):
    r = post(
        server, "/txt2img", {**TINY, "prompt": "a cat", "seed": 1234, "batch_size": 2, "styles": ["wrap"]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    info = json.loads(body["info"])
    for key in (
        "prompt",
        "all_prompts",
        "negative_prompt",
        "all_seeds",
        "seed",
        "subseed",
        "sampler_name",
        "cfg_scale",
        "steps",
        "batch_size",
        "sd_model_name",
        "sd_model_hash",
        "infotexts",
        "styles",
        "job_timestamp",
        "clip_skip",
        "is_using_inpainting_conditioning",
        "version",
        "index_of_first_image",
    ):
        assert key in info, key
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235]
    assert info["prompt"] == "best, a cat" and info["negative_prompt"] == "blurry"
    assert info["sd_model_name"] == "alpha" and info["styles"] == ["wrap"]
    images = [decode(b) for b in body["images"]]
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert "Seed: 1235" in images[1].info["parameters"]
    assert body["parameters"]["prompt"] == "a cat"


def test_loose_clients_unknown_keys_nulls_alias(server):
    body = {
        **TINY,
        "url": "http://x",
        "auth": "u:p",
        "seed": 7,
        "cfg_scale": None,
        "sampler_name": None,
        "sampler_index": "k_euler",
        "scheduler": "automatic",
        "styles": None,
    }
    r = post(server, "/txt2img", body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["sampler_name"] == "Euler" and info["cfg_scale"] == 7.0


@pytest.mark.parametrize(
    "body, field",
    [
        ({"width": 65}, "width"),
        ({"height": 4096}, "height"),
        ({"steps": -1}, "steps"),
        ({"steps": "many"}, "steps"),
        ({"sampler_name": "Nope"}, "sampler_name"),
        ({"scheduler": "nope"}, "scheduler"),
        ({"script_name": "no such script"}, "script_name"),
        ({"alwayson_scripts": {"ADetailer": {"args": [True]}}}, "alwayson_scripts"),
        ({"styles": ["missing"]}, "styles"),
        ({"override_settings": {"no_such_setting": 1}}, "override_settings"),
        ({"override_settings": {"CLIP_stop_at_last_layers": "two"}}, "override_settings"),
        ({"enable_hr": True, "hr_scale": 0}, "hr_scale"),
        ({"tiling": True}, "tiling"),
        ({"restore_faces": True}, "restore_faces"),
        ({"s_tmax": 5}, "s_tmax"),
        ({"s_min_uncond": 99}, "s_min_uncond"),
        ({"eta": 0.3, "sampler_name": "DPM++ 2M SDE"}, "eta"),
        ({"sampler_name": "Euler a", "scheduler": "Karras"}, "scheduler"),
        ({"infotext": "a cat\nSteps: 5"}, "infotext"),
        ({"seed": 2**40}, "seed"),
        ({"cfg_scale": 1e9}, "cfg_scale"),
    ],
)
def test_bad_txt2img_input_is_422_naming_field(server, body, field):
    r = post(server, "/txt2img", {**TINY, **body})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and r.json()["detail"]


def test_bad_images_are_422(server):
    good = png_b64(Image.new("RGB", (64, 64), "red"))
    cases = [
        ({"init_images": ["not base64 !!"]}, "init_images[0]"),
        ({"init_images": [base64.b64encode(b"plain text").decode()]}, "init_images[0]"),
        ({"init_images": [good], "mask": "@@@"}, "mask"),
        ({"init_images": []}, "init_images"),
    ]
    for body, field in cases:
        r = post(server, "/img2img", {**TINY, **body})
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
    huge = png_b64(Image.new("L", (4200, 4200)))
    r = post(server, "/img2img", {**TINY, "init_images": [huge]})
    assert r.status_code == 422 and "exceeds" in r.json()["detail"]
    r = requests.post(server.api + "/txt2img", data="{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_img2img_refuses_mask_round_false(server):
    image = png_b64(Image.new("RGB", (64, 64), "blue"))
    r = post(server, "/img2img", {**TINY, "init_images": [image], "mask_round": False})
    assert r.status_code == 422 and r.json()["field"] == "mask_round"


def test_webuiapi_defaults_are_accepted(server):
    """webuiapi always sends hr_* fields, eta=1, s_churn=0, s_noise=1, image_cfg_scale: none of them is refused."""
    body = {**TINY, "enable_hr": False, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.7}
    body.update(eta=1.0, s_churn=0, s_tmax=0, s_tmin=0, s_noise=1, sampler_name="Euler a", infotext=None)
    assert post(server, "/txt2img", body).status_code == 200


def test_img2img_with_mask_and_data_url(server):
    image = "data:image/png;base64," + png_b64(Image.new("RGB", (64, 64), "blue"))
    mask = png_b64(Image.new("L", (64, 64), 255))
    r = post(
        server,
        "/img2img",
        {
            **TINY,
            "init_images": [image],
            "mask": mask,
            "mask_blur": 2,
            "inpaint_full_res": 1,
            "include_init_images": True,
            "seed": 3,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 2  # result + init image (include_init_images)
    assert body["parameters"]["init_images"] is not None
    assert json.loads(body["info"])["seed"] == 3


def test_concurrent_clients_fifo_and_seeds(server):
    """16 clients x 2 requests at once: every result has its own seed; jobs ran in submission order."""
    submitted: list[tuple[float, int]] = []
    lock = threading.Lock()

    def client(n: int) -> list[tuple[int, int, str]]:
        out = []
        for k in range(2):
            seed = 1000 + n * 10 + k
            with lock:
                submitted.append((time.time(), seed))
            r = post(server, "/txt2img", {**TINY, "seed": seed, "prompt": f"client {n} req {k}"})
            assert r.status_code == 200, r.text
            info = json.loads(r.json()["info"])
            out.append((seed, info["seed"], info["prompt"]))
            assert f"Seed: {seed}," in decode(r.json()["images"][0]).info["parameters"]
        return out

    with ThreadPoolExecutor(16) as pool:
        results = [item for chunk in pool.map(client, range(16)) for item in chunk]
    assert len(results) == 32
    for seed, got_seed, prompt in results:
        assert got_seed == seed and prompt.startswith("client")
    tasks = requests.get(server.api + "/tasks", timeout=10).json()
    ours = {t["task_id"]: t for t in tasks if t["kind"] == "txt2img" and t["status"] == "done"}
    assert len(ours) >= 32


def test_fifo_order_with_async_submissions(server):
    ids = [post(server, "/txt2img?async=true", {**TINY, "seed": 50 + n}).json()["task_id"] for n in range(6)]
    finished = {}
    deadline = time.time() + 60
    while len(finished) < len(ids) and time.time() < deadline:
        for task_id in ids:
            status = requests.get(f"{server.api}/tasks/{task_id}", timeout=10).json()
            if status["status"] == "done" and task_id not in finished:
                finished[task_id] = status
        time.sleep(0.05)
    assert [json.loads(finished[i]["result"]["info"])["seed"] for i in ids] == [50 + n for n in range(6)]
    assert requests.get(f"{server.api}/tasks/task(nope)", timeout=10).status_code == 422


def test_interrupt_long_job_returns_partial_and_next_runs(server):
    long_id = post(server, "/txt2img?async=true", {**LONG, "n_iter": 3, "seed": 9})
    long_id = long_id.json()["task_id"]
    next_id = post(server, "/txt2img?async=true", {**TINY, "seed": 10}).json()["task_id"]
    deadline = time.time() + 30
    while time.time() < deadline:
        p = requests.get(server.api + "/progress", timeout=10).json()
        if p["current_task"] == long_id and p["state"]["sampling_step"] >= 3:
            break
        time.sleep(0.05)
    assert p["progress"] > 0 and p["state"]["job"] == long_id and p["textinfo"]
    live = requests.post(server.url + "/internal/progress", json={"id_task": next_id}, timeout=10).json()
    assert live["queued"] is True and live["active"] is False and live["textinfo"].startswith("In queue")
    active = requests.post(server.url + "/internal/progress", json={"id_task": long_id}, timeout=10).json()
    assert active["active"] is True and 0 < active["progress"] < 1
    assert post(server, "/interrupt").json()["interrupted"] == [long_id]
    for task_id, seed in ((long_id, 9), (next_id, 10)):
        deadline = time.time() + 30
        while (status := requests.get(f"{server.api}/tasks/{task_id}", timeout=10).json())[
            "status"
        ] != "done":
            if time.time() > deadline:
                pytest.fail(f"task {task_id} did not finish")
            time.sleep(0.05)
        info = json.loads(status["result"]["info"])
        assert info["seed"] == seed
    long_info = json.loads(requests.get(f"{server.api}/tasks/{long_id}", timeout=10).json()["result"]["info"])
    assert long_info["interrupted"] is True and len(long_info["all_seeds"]) == 1  # partial: first batch only
    done = requests.post(server.url + "/internal/progress", json={"id_task": long_id}, timeout=10).json()
    assert done["completed"] is True


def test_cancel_queued_job(server):
    blocker = post(server, "/txt2img?async=true", LONG).json()["task_id"]
    victim = post(server, "/txt2img?async=true", TINY).json()["task_id"]
    r = post(server, f"/tasks/{victim}/cancel")
    assert r.json() == {"task_id": victim, "cancelled": True}
    assert requests.get(f"{server.api}/tasks/{victim}", timeout=10).json()["status"] == "cancelled"
    post(server, "/interrupt", params={"id_task": blocker})


def test_force_task_id_and_duplicate(server):
    r = post(server, "/txt2img?async=true", {**LONG, "force_task_id": "task(mine)"})
    assert r.status_code == 202 and r.json()["task_id"] == "task(mine)"
    dup = post(server, "/txt2img?async=true", {**TINY, "force_task_id": "task(mine)"})
    assert dup.status_code == 409 and dup.json()["field"] == "force_task_id"
    post(server, "/interrupt")


def test_options_round_trip_and_checkpoint_switch(server):
    opts = requests.get(server.api + "/options", timeout=10).json()
    assert "sd_model_checkpoint" in opts and "samples_save" in opts
    opts["show_progress_every_n_steps"] = 3
    assert post(server, "/options", opts).status_code == 200
    assert requests.get(server.api + "/options", timeout=10).json()["show_progress_every_n_steps"] == 3
    assert post(server, "/options", {"sd_model_checkpoint": "beta.safetensors"}).status_code == 200
    r = post(server, "/txt2img", {**TINY, "seed": 1})
    assert json.loads(r.json()["info"])["sd_model_name"] == "beta"
    bad = post(server, "/options", {"sd_model_checkpoint": "gamma.safetensors"})
    assert bad.status_code == 422 and bad.json()["field"] == "sd_model_checkpoint"
    bad = post(server, "/options", {"samples_save": "yes"})
    assert bad.status_code == 422 and bad.json()["field"] == "samples_save"
    # override_settings apply to one job only
    r = post(server, "/txt2img", {**TINY, "override_settings": {"sd_model_checkpoint": "alpha.safetensors"}})
    assert r.status_code == 200
    # the real manager names the checkpoint by its title, "beta.safetensors [hash]"
    assert requests.get(server.api + "/options", timeout=10).json()["sd_model_checkpoint"].startswith("beta")
    post(server, "/options", {"sd_model_checkpoint": "alpha.safetensors"})


def test_lists_and_misc_endpoints(server):
    models = requests.get(server.api + "/sd-models", timeout=10).json()
    assert [m["model_name"] for m in models][:2] == ["alpha", "beta"]  # then the embedded default model
    assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config", "family"}
    for path in (
        "samplers",
        "schedulers",
        "upscalers",
        "latent-upscale-modes",
        "sd-vae",
        "prompt-styles",
        "face-restorers",
        "realesrgan-models",
        "hypernetworks",
        "loras",
        "script-info",
        "extensions",
    ):
        r = requests.get(f"{server.api}/{path}", timeout=10)
        assert r.status_code == 200 and isinstance(r.json(), list), path
    assert requests.get(server.api + "/prompt-styles", timeout=10).json()[0]["name"] == "wrap"
    scripts = requests.get(server.api + "/scripts", timeout=10).json()  # the built-in extensions' scripts
    assert "x/y/z plot" in scripts["txt2img"] and "x/y/z plot" in scripts["img2img"]
    assert set(requests.get(server.api + "/memory", timeout=10).json()) == {"ram", "cuda"}
    assert requests.get(server.api + "/embeddings", timeout=10).json() == {"loaded": {}, "skipped": {}}
    for path in ("refresh-checkpoints", "refresh-vae", "unload-checkpoint", "reload-checkpoint", "skip"):
        assert post(server, "/" + path).status_code == 200, path
    assert requests.get(server.url + "/docs", timeout=10).status_code == 200


def test_extras_and_png_info(server):
    image = Image.new("RGB", (16, 8), "green")
    r = post(
        server,
        "/extra-single-image",
        {"image": png_b64(image), "upscaler_1": "Lanczos", "upscaling_resize": 2},
    )
    assert r.status_code == 200 and decode(r.json()["image"]).size == (32, 16)
    r = post(server, "/extra-single-image", {"image": png_b64(image), "upscaler_1": "Bogus"})
    assert r.status_code == 422 and r.json()["field"] == "upscaler_1"
    gen = post(server, "/txt2img", {**TINY, "prompt": "a dog", "seed": 77}).json()["images"][0]
    info = post(server, "/png-info", {"image": gen}).json()
    assert info["info"].startswith("a dog\nSteps: 2") and "Seed: 77" in info["info"]


def test_webuiapi_client(server):
    webuiapi = pytest.importorskip("webuiapi")
    port = int(server.url.rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2)
    result = api.txt2img(prompt="a tree", seed=42, width=64, height=64, cfg_scale=5)
    assert result.info["seed"] == 42 and result.image.size == (64, 64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = api.img2img(images=[result.image], mask_image=mask, prompt="x", seed=43, width=64, height=64)
    assert result.info["seed"] == 43 and len(result.images) == 1
    assert any(title.startswith("alpha.safetensors") for title in api.util_get_model_names())
    assert "Euler a" in api.util_get_sampler_names()
    assert api.get_options()["sd_model_checkpoint"]
    assert api.get_progress()["state"]["job_count"] >= 0
    assert isinstance(api.interrupt(), dict)
