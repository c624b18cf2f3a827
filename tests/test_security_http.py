"""HTTP security over real HTTP on loopback (issue 13): DNS rebinding (Host), cross-site requests (Origin),
request body cap, one auth flag guarding both sides of a public listener, the login page revealing nothing,
login back-off, per-user task lists, the --insecure warning.

"Public" listeners are other loopback addresses (127.0.0.2, ...), never a real interface.
"""

from __future__ import annotations

import base64
import io
import re
import time

import numpy as np
import pytest
import requests
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from sdwebui.api.auth import Caller, Credentials, basic_auth_dependency
from sdwebui.api.throttle import LoginThrottle, login_keys
from tests.api_server import session_from, start_server, write_tiny_checkpoints
from tests.waiting import wait_until

pytest_plugins = ("tests.browser",)  # the Chromium fixture for the login test

SECRET_TITLE = "secret-checkpoint-title"
API_USERS = "alice:pw-alice,bob:pw-bob,dave:pw-dave"  # alice, listed first, is the admin


def _plant_checkpoint(data_dir):
    write_tiny_checkpoints(data_dir, (SECRET_TITLE,))


def _png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """The default set-up: loopback, no credentials, UI and API; a small body cap for the 413 test."""
    data_dir = tmp_path_factory.mktemp("open-data")
    write_tiny_checkpoints(data_dir)
    flags = ["--allowed-hosts", "sd.lan", "--max-body-size", "1", "--cors-allow-origins", "http://ok.example"]
    with start_server(data_dir, flags, ui=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def users_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("users-data")
    _plant_checkpoint(data_dir)
    with start_server(data_dir, ["--api-auth", API_USERS]) as srv:
        yield srv


@pytest.fixture(scope="module")
def ui_auth_server(tmp_path_factory):
    """A public listener with --gradio-auth only (and --api)."""
    data_dir = tmp_path_factory.mktemp("ui-auth-data")
    _plant_checkpoint(data_dir)
    flags = ["--gradio-auth", "carol:pw-carol"]
    with start_server(data_dir, flags, ui=True, host="127.0.0.2") as srv:
        yield srv


# --- 2. DNS rebinding and CSRF ---


def test_rebinding_host_is_refused_on_api_and_ui(open_server):
    port = open_server.url.rsplit(":", 1)[1]
    evil = {"Host": f"rebind.example:{port}", "Origin": f"http://rebind.example:{port}"}
    for method, path in [
        ("GET", "/sdapi/v1/options"),
        ("GET", "/"),
        ("GET", "/config"),
        ("POST", "/sdapi/v1/interrupt"),
        ("POST", "/gradio_api/queue/join"),
    ]:
        r = requests.request(method, open_server.url + path, headers=evil, json={}, timeout=10)
        assert r.status_code == 403, (method, path, r.text[:200])
        assert r.json()["field"] == "Host" and "--allowed-hosts" in r.json()["detail"]
    r = requests.post(open_server.api + "/options", json={"samples_format": "jpg"}, headers=evil, timeout=10)
    assert r.status_code == 403
    assert requests.get(open_server.api + "/options", timeout=10).json()["samples_format"] == "png"


def test_own_host_names_are_accepted(open_server):
    port = open_server.url.rsplit(":", 1)[1]
    for host in ("127.0.0.1", "localhost", "sd.lan", "[::1]", "app.localhost"):
        r = requests.get(open_server.api + "/samplers", headers={"Host": f"{host}:{port}"}, timeout=10)
        assert r.status_code == 200, host
    # 127.0.0.1.nip.io resolves to loopback: the classic rebinding-style name
    for host in ("sd.lan.evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "sd.lan:x"):
        r = requests.get(open_server.api + "/samplers", headers={"Host": host}, timeout=10)
        assert r.status_code == 403, host


def test_cross_site_state_changes_are_refused(open_server):
    port = open_server.url.rsplit(":", 1)[1]
    tasks_before = len(requests.get(open_server.api + "/tasks", timeout=10).json())
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{int(port) + 1}", "http://localhost"):
        headers = {"Origin": origin}
        for path, body in [
            ("/sdapi/v1/interrupt", None),  # body-less
            ("/sdapi/v1/txt2img", None),  # empty: a default job
            ("/sdapi/v1/options", {"samples_format": "jpg"}),
            ("/gradio_api/queue/join", {}),
        ]:
            r = requests.post(open_server.url + path, json=body, headers=headers, timeout=10)
            assert r.status_code == 403, (origin, path, r.text[:200])
            assert r.json()["field"] == "Origin"
    r = requests.post(open_server.api + "/interrupt", headers={"Sec-Fetch-Site": "cross-site"}, timeout=10)
    assert r.status_code == 403
    assert len(requests.get(open_server.api + "/tasks", timeout=10).json()) == tasks_before  # nothing queued
    assert requests.get(open_server.api + "/options", timeout=10).json()["samples_format"] == "png"
    # same origin, an allowed origin, and non-browser clients (no Origin) pass
    for headers in ({"Origin": open_server.url}, {"Origin": "http://ok.example"}, {}):
        r = requests.post(open_server.api + "/interrupt", headers=headers, timeout=10)
        assert r.status_code == 200, headers
    r = requests.post(
        open_server.url + "/gradio_api/queue/join", json={}, headers={"Origin": open_server.url}, timeout=10
    )
    assert r.status_code != 403


# --- 4 (part). request body cap ---


def test_body_over_the_cap_is_refused_with_413(open_server):
    big = {"image": "A" * (1024 * 1024 + 10)}  # --max-body-size 1 (MB)
    r = requests.post(open_server.api + "/png-info", json=big, timeout=30)
    assert r.status_code == 413
    assert r.json()["error"] == "RequestTooLarge" and "--max-body-size" in r.json()["detail"]

    def chunks():  # no Content-Length: the cap is counted while reading
        for _ in range(20):
            yield b"A" * 100_000

    r = requests.post(
        open_server.api + "/png-info", data=chunks(), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert r.status_code == 413
    small = Image.new("RGB", (32, 32), (9, 9, 9))
    r = requests.post(open_server.api + "/png-info", json={"image": _png_b64(small)}, timeout=30)
    assert r.status_code == 200


def test_default_cap_takes_a_large_img2img_image(users_server):
    noise = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    payload = {"image": _png_b64(Image.fromarray(noise))}  # ~17 MB of base64
    r = requests.post(users_server.api + "/png-info", json=payload, auth=("bob", "pw-bob"), timeout=120)
    assert r.status_code == 200, r.text[:300]


# --- 3. one auth flag guards both sides of a public listener ---


def test_gradio_auth_alone_also_guards_the_api_on_a_public_listener(ui_auth_server):
    assert ui_auth_server.url.startswith("http://127.0.0.2:")
    r = requests.get(ui_auth_server.api + "/options", timeout=10)
    assert r.status_code == 401
    assert requests.post(ui_auth_server.api + "/interrupt", timeout=10).status_code == 401
    r = requests.get(ui_auth_server.api + "/options", auth=("carol", "pw-carol"), timeout=10)
    assert r.status_code == 200


def test_api_auth_alone_also_guards_the_ui_on_a_public_listener(tmp_path):
    _plant_checkpoint(tmp_path)
    flags = ["--api-auth", "erin:pw-erin"]
    with start_server(tmp_path, flags, ui=True, host="127.0.0.3", auth=("erin", "pw-erin")) as srv:
        page = requests.get(srv.url + "/", timeout=30)
        assert page.status_code == 200 and 'name="password"' in page.text
        assert SECRET_TITLE not in page.text
        assert requests.get(srv.url + "/config", timeout=10).status_code == 401
        session = requests.Session()
        r = session.post(srv.url + "/login", data={"username": "erin", "password": "pw-erin"}, timeout=10)
        assert r.status_code == 200 and SECRET_TITLE in r.text  # redirected to the UI itself
        assert requests.get(srv.api + "/options", timeout=10).status_code == 401


# --- 8. the login page carries nothing ---


def test_login_page_reveals_no_api_description(ui_auth_server):
    page = requests.get(ui_auth_server.url + "/", timeout=30)
    assert page.status_code == 200 and 'name="password"' in page.text
    for leak in ("gradio_api_info", "gradio_config", SECRET_TITLE, "dependencies", "endpoint"):
        assert leak not in page.text, leak
    for path in ("/config", "/gradio_api/info", "/gradio_api/openapi.json"):
        assert requests.get(ui_auth_server.url + path, timeout=10).status_code == 401, path
    session = requests.Session()
    r = session.post(
        ui_auth_server.url + "/login", data={"username": "carol", "password": "pw-carol"}, timeout=10
    )
    assert r.status_code == 200 and "gradio_api_info" in r.text and SECRET_TITLE in r.text
    assert session.get(ui_auth_server.url + "/config", timeout=10).status_code == 200
    session.get(ui_auth_server.url + "/logout", timeout=10)
    assert session.get(ui_auth_server.url + "/config", timeout=10).status_code == 401


# --- 9. login back-off ---


def _guess_until_refused(send, attempts: int = 12) -> list[requests.Response]:
    responses = []
    for i in range(attempts):
        responses.append(send(f"wrong-guess-{i}"))
        if responses[-1].status_code == 429:
            break
    return responses


def _retry_until_accepted(send, password: str) -> requests.Response:
    for _ in range(10):
        r = send(password)
        if r.status_code != 429:
            return r
        time.sleep(float(r.headers["Retry-After"]))
    raise AssertionError("still refused after waiting Retry-After ten times")


def test_api_login_backs_off_and_logs_without_the_password(users_server):
    session = session_from("127.0.0.9")

    def send(password):
        return session.get(users_server.api + "/options", auth=("dave", password), timeout=10)

    responses = _guess_until_refused(send)
    assert [r.status_code for r in responses[:3]] == [401, 401, 401]  # a few typos are free
    assert responses[-1].status_code == 429 and int(responses[-1].headers["Retry-After"]) >= 1
    assert "retry in" in responses[-1].json()["detail"]
    assert _retry_until_accepted(send, "pw-dave").status_code == 200
    log = users_server.log()
    assert "failed API login for user 'dave' from 127.0.0.9" in log
    assert "wrong-guess" not in log and "pw-dave" not in log


def test_ui_login_backs_off_and_logs_without_the_password(ui_auth_server):
    session = session_from("127.0.0.10")

    def send(password):
        data = {"username": "carol", "password": password}
        return session.post(ui_auth_server.url + "/login", data=data, timeout=10)

    responses = _guess_until_refused(send)
    assert [r.status_code for r in responses[:3]] == [401, 401, 401]
    assert "Incorrect" in responses[0].text
    assert responses[-1].status_code == 429 and "try again" in responses[-1].text
    r = _retry_until_accepted(send, "pw-carol")
    assert r.status_code == 200 and "gradio_api_info" in r.text
    log = ui_auth_server.log()
    assert "failed UI login for user 'carol' from 127.0.0.10" in log
    assert "wrong-guess" not in log and "pw-carol" not in log


def test_backoff_doubles_and_blocks_even_the_right_password():
    now = [1000.0]
    throttle = LoginThrottle(free_failures=3, base_delay=1.0, max_delay=8.0, clock=lambda: now[0])
    keys = login_keys("127.0.0.5", "alice")
    waits = []
    for _ in range(7):
        throttle.failed(keys)
        waits.append(throttle.retry_after(keys))
    assert waits == [0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 8.0]
    assert throttle.retry_after(login_keys("127.0.0.6", "alice")) == 8.0  # per user, from any address
    assert throttle.retry_after(login_keys("127.0.0.5", "bob")) == 8.0  # per address, for any user
    assert throttle.retry_after(login_keys("127.0.0.6", "bob")) == 0.0

    app = FastAPI()
    check = basic_auth_dependency(Credentials.parse("alice:right", "--api-auth"), throttle)

    @app.get("/who")
    def who(caller: Caller = Depends(check)):
        return {"user": caller.user, "admin": caller.admin}

    client = TestClient(app)
    r = client.get("/who", auth=("alice", "right"))
    assert r.status_code == 429 and r.headers["retry-after"] == "8"  # no check while locked
    now[0] += 8.0
    r = client.get("/who", auth=("alice", "right"))
    assert r.status_code == 200 and r.json() == {"user": "alice", "admin": True}
    assert throttle.retry_after(keys) == 0.0  # success forgets the failures


# --- 10. per-user task lists, --insecure warning ---


def test_each_api_user_sees_only_their_own_tasks(users_server):
    payload = {"prompt": "bob's", "steps": 1, "width": 64, "height": 64}
    r = requests.post(
        users_server.api + "/txt2img?async=true", json=payload, auth=("bob", "pw-bob"), timeout=30
    )
    assert r.status_code == 202
    task_id = r.json()["task_id"]

    def task_ids(user, password):
        r = requests.get(users_server.api + "/tasks", auth=(user, password), timeout=10)
        assert r.status_code == 200
        return [t["task_id"] for t in r.json()]

    assert task_id in task_ids("bob", "pw-bob")
    assert task_id in task_ids("alice", "pw-alice")  # the admin sees everyone's
    assert task_id not in task_ids("dave", "pw-dave")
    r = requests.get(f"{users_server.api}/tasks/{task_id}", auth=("dave", "pw-dave"), timeout=10)
    assert r.status_code == 422 and r.json()["field"] == "task_id"
    r = requests.post(f"{users_server.api}/tasks/{task_id}/cancel", auth=("dave", "pw-dave"), timeout=10)
    assert r.status_code == 422
    r = requests.get(f"{users_server.api}/tasks/{task_id}", auth=("bob", "pw-bob"), timeout=10)
    assert r.status_code == 200 and r.json()["status"] in ("queued", "running", "done")


def test_users_watch_interrupt_and_skip_only_their_own_running_jobs(users_server):
    api, bob, dave, alice = users_server.api, ("bob", "pw-bob"), ("dave", "pw-dave"), ("alice", "pw-alice")
    long_job = {"prompt": "bob's long one", "steps": 150, "width": 256, "height": 256}
    r = requests.post(api + "/txt2img?async=true", json=long_job, auth=bob, timeout=30)
    assert r.status_code == 202
    task_id = r.json()["task_id"]

    def progress(auth):
        return requests.get(api + "/progress", auth=auth, timeout=10).json()

    wait_until(lambda: progress(bob)["current_task"] == task_id, "bob's job never ran", timeout=120)
    assert progress(dave)["current_task"] is None and progress(dave)["current_image"] is None
    assert progress(alice)["current_task"] == task_id  # the admin watches every job
    for action, key in (("interrupt", "interrupted"), ("skip", "skipped")):  # dave can neither stop
        assert requests.post(f"{api}/{action}", auth=dave, timeout=10).json() == {key: []}  # bob's job
        r = requests.post(f"{api}/{action}", params={"id_task": task_id}, auth=dave, timeout=10)
        assert r.json() == {key: []}  # nor learn that it exists
    assert requests.get(f"{api}/tasks/{task_id}", auth=bob, timeout=10).json()["status"] == "running"
    assert requests.post(api + "/interrupt", auth=bob, timeout=10).json() == {"interrupted": [task_id]}
    wait_until(
        lambda: requests.get(f"{api}/tasks/{task_id}", auth=bob, timeout=10).json()["status"] == "done",
        "bob's interrupted job never finished",
        timeout=120,
    )


def test_insecure_prints_a_warning(tmp_path):
    with start_server(tmp_path, ["--insecure"], host="127.0.0.4") as srv:
        assert requests.get(srv.api + "/samplers", timeout=10).status_code == 200
        log = srv.log()
    assert re.search(r"--insecure: serving on 127\.0\.0\.4 without authentication", log), log[-2000:]


# --- same-origin browser use through the login page ---


@pytest.mark.browser
def test_browser_logs_in_and_generates(browser, ui_auth_server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(ui_auth_server.url + "/")
        page.fill("#username", "carol")
        page.fill("#password", "pw-carol")
        page.click("#login")
        page.wait_for_selector("#txt2img_prompt textarea")
        page.wait_for_function("document.body.dataset.uiLoaded === '1'")
        page.locator("#txt2img_prompt textarea").fill("a red circle")
        page.click("#txt2img_generate")
        page.wait_for_function(
            "() => { const i = document.querySelector('#html_info_txt2img .infotext');"
            " return i && i.innerText.includes('Seed:'); }",
            timeout=90_000,
        )
        assert "a red circle" in page.inner_text("#html_info_txt2img .infotext")
        page.wait_for_selector("#txt2img_gallery img")  # the image file route answers the session too
    finally:
        context.close()
