"""The extension loader as A1111's: re-exported Script classes, on_app_started routes beside the mounted UI
(with the real Blocks), and `/file=extensions/<name>/...` for extension assets (issue 20)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests
from fastapi import HTTPException

from modules import scripts
from sdwebui.api.file_route import resolve_asset
from sdwebui.extensions.manager import Extension
from tests.api_server import start_server, write_tiny_checkpoints
from tests.sample_extensions import harness
from tests.sample_extensions.harness import generate, make_app, reset_scripts

SAMPLES = Path(harness.__file__).parent


@pytest.fixture
def app_factory(tmp_path, tiny_sd1_model):
    made = []

    def make(*flags: str):
        services, system = make_app(tmp_path / "data", tiny_sd1_model, *flags)
        made.append(services)
        return services, system

    yield make
    for services in made:
        services.jobs.shutdown()
    reset_scripts()


def test_reexported_script_classes_are_registered(tmp_path, app_factory):
    harness.install(tmp_path / "data", tmp_path / "src", "sample-reexport")
    services, _system = app_factory()
    mine = [d.script_class for d in scripts.scripts_data if d.path.endswith("reexport.py")]
    # both classes imported into scripts/reexport.py; the imported base class `Script` is not a script
    assert [cls.__name__ for cls in mine] == ["ReexportedScript", "ReexportedSelectable"]
    assert all(data.script_class is not scripts.Script for data in scripts.scripts_data)
    runner = scripts.runner_for(False)
    assert "Sample reexport" in [s.title() for s in runner.alwayson_scripts]
    assert "Sample reexport selectable" in [s.title() for s in runner.selectable_scripts]

    result = generate(services, request={"batch_size": 1}, alwayson_scripts={"Sample reexport": ["tagged"]})
    assert result.prompts == ["a cat tagged"]
    assert "Sample reexport: tagged" in result.infotexts[0]


def test_postprocessing_class_imported_into_a_script_file_is_registered(tmp_path, app_factory):
    ext = tmp_path / "data" / "extensions" / "sample-pp"
    (ext / "scripts").mkdir(parents=True)
    (ext / "pp_lib.py").write_text(
        "from modules import scripts_postprocessing\n\n\n"
        "class Upscaleish(scripts_postprocessing.ScriptPostprocessing):\n    name = 'upscaleish'\n"
    )
    (ext / "scripts" / "pp.py").write_text(
        "from modules.scripts_postprocessing import ScriptPostprocessing  # noqa: F401\n"
        "from pp_lib import Upscaleish  # noqa: F401\n"
    )
    app_factory()
    assert [d.script_class.__name__ for d in scripts.postprocessing_scripts_data] == ["Upscaleish"]


# --- /file= resolution (unit) ---
def _roots(tmp_path: Path) -> list[Extension]:
    user = tmp_path / "extensions" / "ext-a"
    builtin = tmp_path / "builtin" / "ext-b"
    for folder in (user / "javascript", builtin / "assets"):
        folder.mkdir(parents=True)
    (user / "javascript" / "a.js").write_text("// a")
    (builtin / "assets" / "b.txt").write_text("b")
    (user / ".git").mkdir()
    (user / ".git" / "config").write_text("[core]")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", user / "javascript" / "link.js")
    return [Extension("ext-a", user), Extension("ext-b", builtin, is_builtin=True)]


def test_file_route_resolves_extension_files_only(tmp_path):
    roots = _roots(tmp_path)
    user, builtin = roots[0].path, roots[1].path
    assert (
        resolve_asset("extensions/ext-a/javascript/a.js", roots) == (user / "javascript" / "a.js").resolve()
    )
    assert (
        resolve_asset("extensions-builtin/ext-b/assets/b.txt", roots)
        == (builtin / "assets" / "b.txt").resolve()
    )
    assert resolve_asset(str(user / "javascript" / "a.js"), roots) == (user / "javascript" / "a.js").resolve()
    refused = {
        "extensions/ext-a/../../secret.txt": 403,
        "extensions/ext-a/javascript/../../../secret.txt": 403,
        str(tmp_path / "secret.txt"): 403,
        "/etc/passwd": 403,
        "extensions/ext-a/javascript/link.js": 403,  # a symlink out of the folder
        "extensions/ext-a/.git/config": 403,
        "extensions/ext-b/assets/b.txt": 403,  # ext-b is built in: not under extensions/
        "extensions/unknown/a.js": 403,
        "secret.txt": 403,
        "extensions/ext-a/javascript\\..\\..\\..\\secret.txt": 403,
        "extensions/ext-a/javascript/missing.js": 404,
    }
    for requested, status in refused.items():
        with pytest.raises(HTTPException) as caught:
            resolve_asset(requested, roots)
        assert caught.value.status_code == status, requested


# --- the real app over HTTP: UI mounted at /, both samples installed ---
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("loader-data")
    write_tiny_checkpoints(data_dir)
    for sample in ("sample-reexport", "sample-routes-js"):
        shutil.copytree(SAMPLES / sample, data_dir / "extensions" / sample)
    (data_dir / "secret.txt").write_text("not for the web")
    os.symlink(data_dir / "secret.txt", data_dir / "extensions" / "sample-routes-js" / "assets" / "out.txt")
    with start_server(data_dir, ui=True) as running:
        yield running


def _txt2img(server, **fields):
    body = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler"}
    body.update(fields)
    response = requests.post(server.api + "/txt2img", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def test_reexported_scripts_run_over_http(server):
    names = requests.get(server.api + "/scripts", timeout=30).json()
    assert "sample reexport" in names["txt2img"] and "sample reexport selectable" in names["txt2img"]
    info = _txt2img(server, alwayson_scripts={"Sample reexport": {"args": ["viahttp"]}})["info"]
    assert '"Sample reexport": "viahttp"' in info or "Sample reexport: viahttp" in info
    assert "a cat viahttp" in info
    info = _txt2img(server, script_name="sample reexport selectable", script_args=["a dog"])["info"]
    assert '"prompt": "a dog' in info


def test_on_app_started_route_answers_beside_the_ui_and_gets_the_blocks(server):
    response = requests.get(server.url + "/sample-routes/ping", params={"name": "ext"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "greeting": "hello ext",
        "demo": "Blocks",
        "is_blocks": True,
        "has_txt2img_prompt": True,
    }
    page = requests.get(server.url + "/", timeout=30)  # the UI still answers at /
    assert page.status_code == 200 and "<html" in page.text.lower()
    # the page API, then the extension's script (a file= link), in <head> before Gradio's module script
    api, tag = (
        page.text.find("function gradioApp()"),
        page.text.find('src="file=extensions/sample-routes-js/'),
    )
    assert 0 < api < tag < page.text.find('<script type="module"') < page.text.find("</head>")
    src = page.text[tag + 5 :].split('"', 1)[0]
    assert requests.get(f"{server.url}/{src}", timeout=30).text.startswith("// Uses A1111's page API")


def test_file_route_serves_extension_files_and_refuses_escapes(server):
    ext = server.data_dir / "extensions" / "sample-routes-js"
    served = requests.get(server.url + "/file=extensions/sample-routes-js/assets/hello.txt?123", timeout=30)
    assert served.status_code == 200
    assert served.content == (ext / "assets" / "hello.txt").read_bytes()
    js = requests.get(f"{server.url}/file={ext / 'javascript' / 'sample_routes.js'}", timeout=30)
    assert js.status_code == 200 and "onUiLoaded" in js.text
    for requested, status in (
        ("extensions/sample-routes-js/%2e%2e/%2e%2e/secret.txt", 403),
        ("extensions/sample-routes-js/assets/%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt", 403),
        (str(server.data_dir / "secret.txt"), 403),
        ("/etc/passwd", 403),
        ("extensions/sample-routes-js/assets/out.txt", 403),
        ("config.json", 403),
        ("extensions/sample-routes-js/assets/missing.txt", 404),
    ):
        response = requests.get(f"{server.url}/file={requested}", timeout=30)
        assert response.status_code == status, (requested, response.status_code)
        assert "not for the web" not in response.text


def test_file_route_and_extension_routes_in_process_behind_the_ui_login(tmp_path, app_factory):
    """In process (no server): the mount order holds for create_app itself, and /file= asks for the UI's
    login when --gradio-auth is set (the extension's own route is its business, as on A1111)."""
    from fastapi.testclient import TestClient

    from sdwebui.api.server import create_app
    from webui.layout import mount_page

    shutil.copytree(SAMPLES / "sample-routes-js", tmp_path / "data" / "extensions" / "sample-routes-js")
    services, _system = app_factory("--gradio-auth", "alice:secret-pw")
    client = TestClient(create_app(services, ui=mount_page), base_url="http://127.0.0.1")
    asset = "/file=extensions/sample-routes-js/assets/hello.txt"
    assert client.get(asset).status_code == 401
    assert client.get("/sample-routes/ping").json()["is_blocks"] is True
    login = client.post("/login", data={"username": "alice", "password": "secret-pw"}, follow_redirects=False)
    assert login.status_code in (200, 303), login.text
    served = client.get(asset)
    assert served.status_code == 200 and served.text.startswith("an asset of sample-routes-js")
    page = client.get("/").text
    assert 0 < page.find("function gradioApp()") < page.find("file=extensions/sample-routes-js/javascript/")
    assert client.get("/file=extensions/sample-routes-js/../../config.json").status_code in (403, 404)
