"""Authentication, --listen refusal, secrets never returned, CORS — over real HTTP on loopback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from tests.api_server import REPO_ROOT, session_from, start_server, write_tiny_checkpoints

USER, PASSWORD = "alice", "s3cr3t-pass"
UI_PASSWORD = "ui-only-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("auth-data")
    flags = [
        "--api-auth",
        f"{USER}:{PASSWORD},bob:other:with:colons",
        "--gradio-auth",
        f"carol:{UI_PASSWORD}",
        "--cors-allow-origins",
        "http://allowed.example",
    ]
    write_tiny_checkpoints(data_dir)
    with start_server(data_dir, flags, auth=(USER, PASSWORD)) as srv:
        yield srv


def test_requests_without_or_with_wrong_credentials_are_refused(server):
    for auth in (None, (USER, "wrong"), ("mallory", PASSWORD), (USER, PASSWORD + "x")):
        r = requests.get(server.api + "/options", auth=auth, timeout=10)
        assert r.status_code == 401, auth
        assert r.headers["www-authenticate"] == "Basic"
    r = requests.post(server.api + "/txt2img", json={}, timeout=10)
    assert r.status_code == 401
    r = requests.post(server.url + "/internal/progress", json={"id_task": "x"}, timeout=10)
    assert r.status_code == 401


def test_every_api_operation_refuses_missing_or_wrong_credentials(server):
    schema = requests.get(server.url + "/openapi.json", timeout=10).json()
    operations = [
        (method.upper(), path.replace("{task_id}", "x"))
        for path, item in schema["paths"].items()
        for method in item
        if path.startswith(("/sdapi/", "/internal/"))
    ]
    assert len(operations) >= 34
    for index, (method, path) in enumerate(operations):
        # each wrong guess from its own address and user name: the login back-off must not mask a 200
        session = session_from(f"127.0.1.{index + 1}")
        for auth in (None, (f"nobody{index}", PASSWORD), (USER, f"wrong{index}")):
            r = session.request(method, server.url + path, auth=auth, json={}, timeout=10)
            assert r.status_code == 401, (method, path, auth, r.status_code)
        # a good login resets alice's failure count, so the next operation's wrong password is not throttled
        assert requests.get(server.api + "/samplers", auth=(USER, PASSWORD), timeout=10).status_code == 200


def test_valid_credentials_pass(server):
    assert requests.get(server.api + "/options", auth=(USER, PASSWORD), timeout=10).status_code == 200
    assert (
        requests.get(server.api + "/samplers", auth=("bob", "other:with:colons"), timeout=10).status_code
        == 200
    )


def test_cmd_flags_never_return_secrets(server):
    r = requests.get(server.api + "/cmd-flags", auth=(USER, PASSWORD), timeout=10)
    assert r.status_code == 200
    text = r.text
    for secret in (PASSWORD, UI_PASSWORD, "other:with:colons"):
        assert secret not in text
    flags = r.json()
    assert flags["api_auth"] == "<hidden>" and flags["gradio_auth"] == "<hidden>" and flags["api"] is True
    # no other endpoint leaks them either
    for path in ("/options", "/extensions", "/script-info", "/memory"):
        body = requests.get(server.api + path, auth=(USER, PASSWORD), timeout=10).text
        assert PASSWORD not in body and UI_PASSWORD not in body, path


def test_cors(server):
    headers = {"Origin": "http://allowed.example", "Access-Control-Request-Method": "POST"}
    r = requests.options(server.api + "/txt2img", headers=headers, timeout=10)
    assert r.headers.get("access-control-allow-origin") == "http://allowed.example"
    r = requests.options(
        server.api + "/txt2img", headers={**headers, "Origin": "http://evil.example"}, timeout=10
    )
    assert "access-control-allow-origin" not in r.headers


def test_listen_without_auth_refused(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "app.py",
            "--api",
            "--nowebui",
            "--listen",
            "--port",
            "1",
            "--data-dir",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "without authentication" in r.stderr and "--insecure" in r.stderr
