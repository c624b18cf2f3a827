"""Bad input that gave a 500 (issue 12): each is now a 4xx naming the field, over real HTTP on loopback; and
every error body and the 202 of `?async=true` match the served OpenAPI schema (schemathesis' ST108).

Everything runs the real engine on tiny checkpoints: the script cases and the Gradio route on the real app
with the UI (app.py), the rest on an API-only server, and the schema check in process (same services)."""

from __future__ import annotations

import base64
import io
import json

import pytest
import requests
from PIL import Image

from tests import tiny_models
from tests.api_server import (
    CHEAP_LIMITS,
    in_process_app,
    start_server,
    write_settings,
    write_tiny_checkpoints,
)

TINY = {"width": 64, "height": 64, "steps": 1, "sampler_name": "Euler"}
XYZ = "X/Y/Z plot"
PROMPTS = "Prompts from file or textbox"


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def post_json(url: str, body: dict, **kwargs) -> requests.Response:
    """Sends NaN/Infinity literals as Python's json (and real clients) write them."""
    data = json.dumps(body, allow_nan=True)
    return requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("bad-input-api")
    write_tiny_checkpoints(data_dir)
    with start_server(data_dir) as srv:
        yield srv


@pytest.mark.parametrize(
    "body, field",
    [
        ({"initial_noise_multiplier": float("nan")}, "initial_noise_multiplier"),
        ({"initial_noise_multiplier": 1e308}, "initial_noise_multiplier"),
        ({"initial_noise_multiplier": -0.5}, "initial_noise_multiplier"),
        ({"override_settings": {"initial_noise_multiplier": float("nan")}}, "override_settings"),
        ({"seed_resize_from_w": 10**9, "seed_resize_from_h": 10**9}, "seed_resize_from_w"),
    ],
)
def test_img2img_bad_numbers_are_422(tiny_server, body, field):
    init = png_b64(Image.new("RGB", (64, 64), "red"))
    r = post_json(tiny_server.api + "/img2img", {**TINY, "init_images": [init], **body})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and r.json()["detail"].startswith(field)
    assert "initial_noise_multiplier" in r.json()["detail"] or field.startswith("seed_resize")


def test_a_valid_noise_multiplier_still_runs(tiny_server):
    init = png_b64(Image.new("RGB", (64, 64), "red"))
    r = post_json(
        tiny_server.api + "/img2img", {**TINY, "init_images": [init], "initial_noise_multiplier": 1.2}
    )
    assert r.status_code == 200, r.text


def test_error_bodies_share_one_shape(tiny_server):
    """A 404 (no route) has the same body as every other error, as the schema declares it."""
    r = requests.get(tiny_server.api + "/no-such-route", timeout=30)
    assert r.status_code == 404 and r.json() == {"error": "NotFound", "detail": "Not Found", "field": None}
    r = post_json(tiny_server.api + "/txt2img", {"steps": "many"})
    assert r.status_code == 422 and r.json()["field"] == "steps" and r.json()["errors"][0]["loc"]


# --- the schema: error responses and the async answer are declared, and bodies match them ---


def test_schema_declares_errors_and_the_async_answer(tiny_server):
    schema = requests.get(tiny_server.url + "/openapi.json", timeout=30).json()
    for path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"):
        responses = schema["paths"][path]["post"]["responses"]
        assert responses["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/TaskSubmitted")
        for code in ("409", "422", "500", "503"):
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorResponse"), (path, code)
    error = schema["components"]["schemas"]["ErrorResponse"]
    assert set(error["required"]) == {"error", "detail"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # FastAPI's default 422, not ours


def test_every_answer_conforms_to_the_schema(tmp_path_factory):
    """Bounded schemathesis run of every operation with the response-schema and status-code checks."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    data_dir = tmp_path_factory.mktemp("conformance")
    write_tiny_checkpoints(data_dir)
    write_settings(data_dir, CHEAP_LIMITS)  # the real engine runs what the examples ask for: keep it small
    # the in-process client names the server "testserver" in Host
    app, services = in_process_app(data_dir, ["--allowed-hosts", "testserver"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    codes: list[int] = []
    for operation in (result.ok() for result in schema.get_all_operations()):

        @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)  # fmt: skip
        @given(case=operation.as_strategy())
        def check(case):
            try:
                response = case.call_and_validate(
                    checks=[response_schema_conformance, status_code_conformance]
                )
                codes.append(response.status_code)
            except Exception as exc:  # a FailureGroup: keep its first line, go on with the next case
                failures.append(f"{case.method} {case.formatted_path}: {str(exc).strip().splitlines()[0]}")

        check()
    services.jobs.shutdown()
    assert {200, 422} <= set(codes)
    assert not failures, "\n".join(sorted(set(failures))[:10])


def test_async_answers_match_the_schema(tiny_server):
    r = post_json(tiny_server.api + "/txt2img", TINY, params={"async": "true"})
    assert r.status_code == 202 and set(r.json()) == {"task_id", "queue_position", "status_url"}
    r = post_json(tiny_server.api + "/txt2img", {**TINY, "steps": 0}, params={"async": "true"})
    assert r.status_code == 422 and r.json()["field"] == "steps" and r.json()["error"] == "RequestError"


# --- the real app: selectable scripts' arguments and Gradio's named endpoints ---


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("bad-input-real")
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    checkpoint = folder / "alpha.safetensors"
    tiny_models.write_single_file(tiny_models.tiny_loaded_model("sd1", seed=0), checkpoint)
    flags = ["--use-cpu", "all", "--ckpt", str(checkpoint)]
    with start_server(data_dir, flags, ui=True, timeout=300) as srv:
        yield srv


@pytest.mark.parametrize(
    "script, args, words",
    [
        (XYZ, ["junk"], "unknown axis type 'junk'"),
        (XYZ, ["Steps", "1, x"], "bad value for Steps"),
        (XYZ, ["Steps", "1-2", [], "Nothing", "", [], "Nothing", "", [], "yes"], "must be true/false"),
        (XYZ, ["Steps", 12], "axis values must be text"),
        (XYZ, ["Steps", "1-100", [], "CFG Scale", "1-3"], "300 images, over the limit of 256 (limit_images)"),
        (PROMPTS, [False, False, "start", "a cat\n" * 300], "300 images, over the limit of 256"),
        (PROMPTS, [1, 2, 3, 4, 5], "takes 4 values, got 5"),
        (PROMPTS, [1, 2, 3, 4], "must be true/false, got 1"),
        (PROMPTS, [False, False, "middle", "a cat"], "'start' or 'end'"),
        (PROMPTS, [False, False, "start", 4], "must be text"),
        (PROMPTS, [False, False, "start", "--nope 1"], "unknown option '--nope'"),
    ],
)
def test_bad_script_args_are_422_naming_script_args(app_server, script, args, words):
    r = post_json(app_server.api + "/txt2img", {**TINY, "script_name": script, "script_args": args})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "script_args" and words in r.json()["detail"], r.json()


def test_good_script_args_still_run(app_server):
    body = {**TINY, "script_name": PROMPTS, "script_args": [False, False, "start", "a dog\na bird"]}
    r = post_json(app_server.api + "/txt2img", body)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["all_prompts"] == ["a dog", "a bird"]


@pytest.mark.parametrize("route", ["/gradio_api/call/{}", "/gradio_api/run/{}", "/gradio_api/api/{}"])
def test_unknown_gradio_api_name_is_404_naming_it(app_server, route):
    r = post_json(app_server.url + route.format("no_such_endpoint"), {"data": []})
    assert r.status_code == 404, r.text
    assert r.json()["field"] == "api_name" and "no_such_endpoint" in r.json()["detail"]
    info = requests.get(app_server.url + "/gradio_api/info", timeout=60)
    assert info.status_code == 200 and info.json()["named_endpoints"]  # the known endpoints still answer
