"""Memory over real HTTP (in process, loopback): an injected out-of-memory error is retried lower or answered
503 naming the setting, and the next job runs; /sdapi/v1/memory in A1111's shape; the job's peak in its info."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

from sdwebui.api.server import create_app
from sdwebui.config import flags as cmd_args
from sdwebui.config.flags import memory_mode_flag
from sdwebui.services import build_services
from tests import tiny_models

LOOPBACK = "http://127.0.0.1"
BASE = {"prompt": "a cat", "seed": 5, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("memory")
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    tiny_models.write_single_file(tiny_models.tiny_loaded_model("sd1"), folder / "tiny.safetensors")
    services = build_services(cmd_args.parse_args(["--data-dir", str(data_dir), "--use-cpu", "all"]))
    with TestClient(create_app(services, with_api=True), base_url=LOOPBACK) as client:
        yield client, services
    services.shutdown()


def txt2img(client, **changes):
    return client.post("/sdapi/v1/txt2img", json={**BASE, **changes})


class OOM:
    def __init__(self, times: int):
        self.times = times

    def __call__(self, module, args):
        if self.times > 0:
            self.times -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


def inject(services, times: int):
    model = services.models.current
    return model.unet.register_forward_pre_hook(OOM(times))


def test_out_of_memory_is_retried_lower_or_answered_and_the_next_job_runs(served):
    client, services = served
    first = txt2img(client)
    assert first.status_code == 200, first.text
    info = json.loads(first.json()["info"])
    assert info["memory_mode"] == "auto" and info["peak_memory"]["ram_peak_rss"] > 0
    handle = inject(services, 1)
    try:
        retried = txt2img(client)
    finally:
        handle.remove()
    assert retried.status_code == 200, retried.text
    assert json.loads(retried.json()["info"])["memory_mode"] == "lowvram"
    assert retried.json()["images"][0] == first.json()["images"][0]  # the same image, only slower
    handle = inject(services, 10)
    try:
        failed = txt2img(client)
    finally:
        handle.remove()
    assert failed.status_code == 503, failed.text
    body = failed.json()
    assert body["error"] == "OutOfMemory" and body["field"] == "memory_mode"
    assert "out of memory during sampling" in body["detail"] and "--lowvram" in body["detail"]
    again = txt2img(client)
    assert again.status_code == 200 and again.json()["images"][0] == first.json()["images"][0]


def test_memory_mode_setting_acts_and_bad_values_are_refused(served):
    client, _ = served
    medvram = txt2img(client, override_settings={"memory_mode": "medvram"})
    assert medvram.status_code == 200 and json.loads(medvram.json()["info"])["memory_mode"] == "medvram"
    bad = txt2img(client, override_settings={"memory_mode": "tiny"})
    assert bad.status_code == 422 and bad.json()["field"] == "override_settings"
    assert "memory_mode" in bad.json()["detail"]


def test_memory_route_in_a1111_shape(served):
    client, _ = served
    body = client.get("/sdapi/v1/memory").json()
    assert body["ram"]["total"] >= body["ram"]["used"] > 0
    if torch.cuda.is_available():
        assert {"system", "active", "allocated", "reserved", "inactive", "events"} <= set(body["cuda"])
        assert "oom" in body["cuda"]["events"]
    else:
        assert body["cuda"] == {"error": "CUDA is not available"}


def test_flags_choose_the_memory_mode():
    assert memory_mode_flag(cmd_args.parse_args(["--medvram"])) == "medvram"
    assert memory_mode_flag(cmd_args.parse_args(["--medvram-sdxl"])) == "medvram-sdxl"
    assert memory_mode_flag(cmd_args.parse_args(["--lowvram", "--medvram"])) == "lowvram"
    assert memory_mode_flag(cmd_args.parse_args([])) == ""


def test_the_s_min_uncond_field_is_applied_as_a1111_reads_it(served):
    """A1111's payload field s_min_uncond is the job's "Negative Guidance minimum sigma" (infotext NGMS)."""
    client, _ = served
    plain = txt2img(client, cfg_scale=7)
    skipped = txt2img(client, cfg_scale=7, s_min_uncond=15)
    assert plain.status_code == 200 and skipped.status_code == 200, skipped.text
    assert "NGMS: 15" in json.loads(skipped.json()["info"])["infotexts"][0]
    assert "NGMS" not in json.loads(plain.json()["info"])["infotexts"][0]
    assert skipped.json()["images"][0] != plain.json()["images"][0]  # the uncond pass was skipped
