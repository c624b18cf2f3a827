"""The A1111 API with extensions loaded: /scripts, /script-info, /extensions, script_args placement."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from sdwebui.api.server import create_app
from tests.sample_extensions.harness import install, make_app, reset_scripts

LOOPBACK = (
    "http://127.0.0.1"  # the server refuses Host names that are not its own (TestClient's "testserver")
)
BASE = {"prompt": "a cat", "seed": 5, "steps": 1, "width": 64, "height": 64, "sampler_name": "Euler"}


@pytest.fixture
def client(tmp_path, tiny_sd1_model):
    install(tmp_path / "data", tmp_path / "src", "sample-rewrite")
    services, _ = make_app(tmp_path / "data", tiny_sd1_model)
    app = create_app(services, with_api=True)
    with TestClient(app, base_url=LOOPBACK) as test_client:
        yield test_client
    reset_scripts()


def test_listings(client):
    listed = client.get("/sdapi/v1/scripts").json()
    assert {"x/y/z plot", "prompts from file or textbox"} <= set(listed["txt2img"])
    # A1111 lists every script by its lowercased title, alwayson ones too (`"controlnet" in scripts["txt2img"]`)
    assert {"sample rewrite", "state probe", "infotext note"} <= set(listed["img2img"])
    assert "sample rewrite" in listed["txt2img"] and all(n == n.lower() for n in listed["txt2img"])
    info = {(i["name"], i["is_img2img"]): i for i in client.get("/sdapi/v1/script-info").json()}
    assert info[("sample rewrite", False)]["is_alwayson"] is True
    assert [a["label"] for a in info[("x/y/z plot", True)]["args"]][:2] == ["X type", "X values"]
    extensions = {e["name"]: e for e in client.get("/sdapi/v1/extensions").json()}
    assert (
        extensions["sample-rewrite"]["enabled"] is True
        and len(extensions["sample-rewrite"]["commit_hash"]) == 40
    )
    assert extensions["xyz-plot"]["remote"] == ""


def test_alwayson_args_and_selectable_script_over_http(client):
    body = dict(BASE, batch_size=2, alwayson_scripts={"Sample rewrite": {"args": [True, "api"]}})
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["all_prompts"] == ["a cat api-5 sfx", "a cat api-6 sfx"]
    assert "Sample rewrite: api" in info["infotexts"][1]

    xyz = ["Steps", "1-2", [], "Nothing", "", [], "Nothing", "", [], True, True, False, False,
           False, False, False, 0, False]  # fmt: skip
    body = dict(BASE, script_name="X/Y/Z plot", script_args=xyz)
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 3  # grid + 2 cells


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("script_name", {"script_name": "no such script"}),
        ("alwayson_scripts", {"alwayson_scripts": {"No such": {"args": []}}}),
        ("alwayson_scripts", {"alwayson_scripts": {"X/Y/Z plot": {"args": []}}}),
    ],
)
def test_bad_script_names_are_422(client, field, body):
    response = client.post("/sdapi/v1/txt2img", json=dict(BASE, **body))
    assert response.status_code == 422
    assert field in response.text


def test_on_app_started_routes(tmp_path, tiny_sd1_model):
    from modules import script_callbacks
    from sdwebui.extensions.bridge import app_started

    services, _ = make_app(tmp_path / "data", tiny_sd1_model)
    app = create_app(services, with_api=True)
    script_callbacks.on_app_started(
        lambda demo, fastapi_app: fastapi_app.add_api_route("/myext/ping", lambda: "pong")
    )
    try:
        app_started(None, app)
        with TestClient(app, base_url=LOOPBACK) as test_client:
            assert test_client.get("/myext/ping").json() == "pong"
    finally:
        script_callbacks.clear_callbacks()
        reset_scripts()
