"""No file is reachable by name (issue 13, findings 1, 5, 6 and the error-body part of 10).

The real product over real HTTP on loopback (`app.py --api --nowebui`, real engine, tiny SD1 checkpoints):
checkpoint and VAE names from requests only ever name discovered files; discovery skips devices, FIFOs and
symlinks leading out of the configured folders; output folders stay inside the data dir unless the owner
chose otherwise in config.json; error bodies show paths relative to the data dir. The extension index
loader is driven in-process like the Extensions tab drives it. Every test also checks that nothing outside
the data dir was read or written.
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import re
import threading
import time
from datetime import date
from pathlib import Path

import pytest
import requests

from sdwebui.extensions.manager import ExtensionError, ExtensionManager
from sdwebui.models import discovery
from sdwebui.models.discovery import NotListedError
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.manager import ModelManager
from tests import tiny_models
from tests.api_server import start_server
from tests.sample_extensions.harness import make_app, reset_scripts
from webui.extensions_tab import ExtensionsActions

SIZE = {"width": 64, "height": 64, "steps": 2}
TODAY = date.today().strftime("%Y-%m-%d")


# --- helpers -----------------------------------------------------------------------------------------------


def fifo_has_reader(path: Path) -> bool:
    """Did anything open this FIFO for reading (and keep it open)? A non-blocking writer open tells."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        assert exc.errno == errno.ENXIO, exc
        return False
    os.close(fd)
    return True


def snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    """Every file and folder under root (but `skip`) with size and mtime: a write anywhere changes it."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in [*dirnames, *filenames]:
            info = os.lstat(Path(dirpath, name))
            out[str(Path(dirpath, name))] = (info.st_size, info.st_mtime_ns)
    return out


# A FIFO or /dev/zero makes the old code block forever: pytest-timeout then fails the test (no time asserted)
HANG_TIMEOUT_S = 120


# --- the real server ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    base = tmp_path_factory.mktemp("sec-files").resolve()
    data, outside, owner, linked = (base / n for n in ("data", "outside", "owner", "linked"))
    checkpoints, vaes = data / "models" / "Stable-diffusion", data / "models" / "VAE"
    for folder in (checkpoints, vaes, outside, owner, linked, base / "owner-out"):
        folder.mkdir(parents=True)
    for seed, path in enumerate(
        [
            checkpoints / "alpha.safetensors",
            owner / "owned.safetensors",  # --ckpt: the owner named it, outside the data dir
            linked / "shared.safetensors",  # in --ckpt-dir: a configured folder
            outside / "evil.safetensors",  # a real, loadable checkpoint nobody configured
        ]
    ):
        tiny_models.write_single_file(tiny_models.tiny_loaded_model("sd1", seed=seed), path)
    tiny_models.write_vae_file(tiny_models.tiny_loaded_model("sd1", seed=7).vae, vaes / "other.safetensors")
    tiny_models.write_vae_file(tiny_models.tiny_loaded_model("sd1", seed=8).vae, outside / "vae.safetensors")
    (checkpoints / "escape.safetensors").symlink_to(outside / "evil.safetensors")
    (checkpoints / "via-link.safetensors").symlink_to(linked / "shared.safetensors")
    (checkpoints / "zero.safetensors").symlink_to("/dev/zero")
    os.mkfifo(checkpoints / "fifo.safetensors")
    os.mkfifo(outside / "pipe.safetensors")
    (checkpoints / "broken.safetensors").write_bytes(b"not a checkpoint at all" * 4)
    (vaes / "escape.safetensors").symlink_to(outside / "vae.safetensors")
    # the machine's owner chose an output folder outside the data dir, in config.json
    (data / "config.json").write_text(json.dumps({"outdir_samples": str(base / "owner-out")}))
    return base


@pytest.fixture(scope="module")
def server(layout):
    flags = ["--use-cpu", "all", "--ckpt", str(layout / "owner" / "owned.safetensors")]
    flags += ["--ckpt-dir", str(layout / "linked")]
    with start_server(layout / "data", flags) as srv:
        yield srv


@pytest.fixture
def untouched(layout, server):
    """Nothing outside the data dir (and the owner's output folder) is written; the outside FIFO is never
    opened; no file outside the configured folders is hashed (read whole) into the data dir's cache.json."""
    skip = (layout / "data", layout / "owner-out")
    before = snapshot(layout, skip)
    yield
    assert snapshot(layout, skip) == before
    assert not fifo_has_reader(layout / "outside" / "pipe.safetensors")
    assert not fifo_has_reader(layout / "data" / "models" / "Stable-diffusion" / "fifo.safetensors")
    cache = layout / "data" / "cache.json"
    hashed = json.loads(cache.read_text()).get("hashes", {}) if cache.exists() else {}
    assert not [p for p in hashed if Path(p).is_relative_to(layout / "outside")], hashed


def post(server, path: str, body: dict, timeout: float = 120) -> requests.Response:
    return requests.post(server.api + path, json=body, timeout=timeout)


def txt2img(server, **body) -> requests.Response:
    return post(server, "/txt2img", {"prompt": "a cube", "seed": 1, **SIZE, **body})


def model_name(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])["sd_model_name"]


# --- 1. checkpoints and VAEs -------------------------------------------------------------------------------


def test_listing_follows_the_rules_and_the_owners_ckpt_is_the_default(server, untouched):
    assert requests.post(server.api + "/refresh-checkpoints", timeout=60).status_code == 200  # FIFO: no hang
    names = {m["model_name"] for m in requests.get(server.api + "/sd-models", timeout=30).json()}
    assert {"alpha", "owned", "via-link", "broken"} <= names, names  # a link into --ckpt-dir is fine
    assert not names & {"escape", "zero", "fifo"}, names  # a link out, a device, a FIFO: never listed
    vaes = {v["model_name"] for v in requests.get(server.api + "/sd-vae", timeout=30).json()}
    assert vaes == {"other.safetensors"}, vaes
    assert model_name(txt2img(server)) == "owned"  # --ckpt from the command line, outside the data dir
    assert model_name(txt2img(server, override_settings={"sd_model_checkpoint": "via-link"})) == "via-link"


@pytest.mark.parametrize(
    "target",
    [
        "/dev/zero",  # used to hash forever and hold the only worker
        "{outside}/pipe.safetensors",  # a FIFO: the same
        "{outside}/evil.safetensors",  # a loadable file nobody configured
        "{outside}/missing.safetensors",
        "{data}/models/Stable-diffusion/escape.safetensors",  # the link out, by its path
        "escape",  # ... and by its name
        "../../outside/evil.safetensors",
    ],
)
def test_override_naming_an_unlisted_file_is_not_found(server, layout, untouched, target):
    name = target.format(outside=layout / "outside", data=layout / "data")
    r = txt2img(server, override_settings={"sd_model_checkpoint": name})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == "sd_model_checkpoint" and "not found" in body["detail"], body
    assert model_name(txt2img(server)) in ("owned", "via-link")  # the worker is free, the model unchanged


def test_not_found_does_not_tell_whether_a_path_exists(server, layout, untouched):
    details = []
    for name in ("evil.safetensors", "missing.safetensors"):
        r = txt2img(server, override_settings={"sd_model_checkpoint": str(layout / "outside" / name)})
        assert r.status_code == 422, r.text
        details.append(re.sub(r"'[^']*'", "''", r.json()["detail"], count=1))
    assert details[0] == details[1], details


def test_a_listed_checkpoint_loads_by_its_listed_path(server, layout, untouched):
    path = layout / "data" / "models" / "Stable-diffusion" / "alpha.safetensors"
    assert model_name(txt2img(server, override_settings={"sd_model_checkpoint": str(path)})) == "alpha"


@pytest.mark.parametrize("vae", ["{outside}/vae.safetensors", "escape.safetensors", "/dev/zero"])
def test_override_vae_only_from_the_list(server, layout, untouched, vae):
    r = txt2img(server, override_settings={"sd_vae": vae.format(outside=layout / "outside")})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "sd_vae" and "not found" in r.json()["detail"], r.text
    ok = txt2img(server, override_settings={"sd_vae": "other.safetensors"})
    assert ok.status_code == 200 and "VAE: other.safetensors" in json.loads(ok.json()["info"])["infotexts"][0]


@pytest.mark.timeout(HANG_TIMEOUT_S)
def test_discovery_lists_only_regular_files_inside_the_configured_folders(tmp_path):
    ckpt, vae, other, outside = (tmp_path / n for n in ("Stable-diffusion", "VAE", "other", "outside"))
    for folder in (ckpt / "sub", vae, other, outside / "dir"):
        folder.mkdir(parents=True)
    for path in (ckpt / "ok.safetensors", ckpt / "sub" / "deep.ckpt", other / "z.safetensors", vae / "v.pt"):
        path.write_bytes(b"weights")  # discovery reads no contents
    for path in (outside / "x.safetensors", outside / "dir" / "y.safetensors", outside / "v.pt"):
        path.write_bytes(b"not yours")
    (outside / "secret.yaml").write_text("model: {}")
    links = {
        ckpt / "out.safetensors": outside / "x.safetensors",  # a file link leading out
        ckpt / "outdir": outside / "dir",  # a folder link leading out
        ckpt / "loop": ckpt,  # a link loop
        ckpt / "dev.safetensors": Path("/dev/null"),
        ckpt / "in.safetensors": other / "z.safetensors",  # into a configured folder: fine
        ckpt / "ok.yaml": outside / "secret.yaml",  # a sidecar link leading out
        ckpt / "ok.vae.pt": outside / "v.pt",  # an "Automatic" VAE link leading out
        vae / "vout.pt": outside / "v.pt",
    }
    for link, target in links.items():
        link.symlink_to(target)
    os.mkfifo(ckpt / "fifo.ckpt")
    manager = ModelManager([ckpt, other], [vae], include_default_dir=False)
    assert [c.name for c in manager.checkpoints()] == ["in", "ok", "sub/deep"]
    for name in (str(outside / "x.safetensors"), "out", "outdir/y", str(ckpt / "fifo.ckpt"), "/dev/null"):
        with pytest.raises(NotListedError, match="not found"):
            manager.find_checkpoint(name)
    vaes = discovery.list_vaes([vae], [ckpt, other])
    assert manager.vae_names() == ["Automatic", "None", "v.pt"] and [v.name for v in vaes] == ["v.pt"]
    ok = manager.find_checkpoint("ok")
    assert ok.config_path is None and discovery.automatic_vae(ok, vaes) is None
    with pytest.raises(NotListedError, match="not found") as caught:
        discovery.find_listed(str(outside / "v.pt"), vaes, discovery.ModelFile.names, "VAE", "sd_vae")
    assert caught.value.field == "sd_vae"


@pytest.mark.timeout(HANG_TIMEOUT_S)
def test_a_listed_file_replaced_by_a_fifo_is_refused_not_read(tmp_path, tiny_sd1_model):
    path = tiny_models.write_single_file(tiny_sd1_model, tmp_path / "models" / "a.safetensors")
    manager = ModelManager([path.parent], [], None, include_default_dir=False)
    path.unlink()
    os.mkfifo(path)  # after the listing: the hash thread would wait on it forever
    with pytest.raises(CheckpointLoadError, match="no longer a regular file"):
        manager.load("a")
    assert not fifo_has_reader(path)


# --- 5. output folders -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["{outside}", "../outside", "outputs/../../outside/x", "~/sdwebui-escape", "nul\0name"]
)
def test_a_request_cannot_move_output_folders_out_of_the_data_dir(server, layout, untouched, value):
    value = value.format(outside=layout / "outside")
    config = (layout / "data" / "config.json").read_text()
    for key in ("outdir_samples", "outdir_txt2img_samples", "outdir_grids"):
        r = post(server, "/options", {key: value})
        assert r.status_code == 422 and r.json()["field"] == key, r.text
        r = txt2img(server, save_images=True, override_settings={key: value})
        assert r.status_code == 422 and r.json()["field"] == f"override_settings.{key}", r.text
    assert (layout / "data" / "config.json").read_text() == config
    options = requests.get(server.api + "/options", timeout=30).json()
    assert options["outdir_samples"] == str(layout / "owner-out")
    assert not Path("~/sdwebui-escape").expanduser().exists()


def test_the_owners_output_folder_and_folders_inside_the_data_dir_work(server, layout, untouched):
    assert txt2img(server, seed=77, save_images=True).status_code == 200
    assert list((layout / "owner-out" / "txt2img-images" / TODAY).glob("*-77.png"))
    # clients (and the Settings tab) send back every value: the owner's unchanged value is no change
    options = requests.get(server.api + "/options", timeout=30).json()
    assert post(server, "/options", options).status_code == 200
    inside = {"outdir_samples": "custom-out"}
    assert txt2img(server, seed=78, save_images=True, override_settings=inside).status_code == 200
    assert list((layout / "data" / "custom-out" / "txt2img-images" / TODAY).glob("*-78.png"))
    assert post(server, "/options", {"outdir_samples": str(layout / "data" / "elsewhere")}).status_code == 200
    assert post(server, "/options", {"outdir_samples": str(layout / "owner-out")}).status_code == 200


# --- 10. error bodies --------------------------------------------------------------------------------------


def test_error_bodies_show_paths_relative_to_the_data_dir_and_no_addresses(server, layout, untouched):
    r = post(server, "/options", {"sd_model_checkpoint": "broken.safetensors"})
    assert r.status_code == 422, r.text
    assert "models/Stable-diffusion/broken.safetensors" in r.json()["detail"], r.text
    assert str(layout) not in r.text and "/tmp" not in r.text, r.text
    r = post(server, "/png-info", {"image": "AAAA"})  # PIL's message names "<_io.BytesIO object at 0x7f...>"
    assert r.status_code == 422 and "not a readable image" in r.json()["detail"], r.text
    assert not re.search(r"0x[0-9a-fA-F]{6,}", r.text), r.text


# --- 6. the extension index loader -------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /index: a small valid index; /endless: zeros without end; /drip: one byte per 0.2 s."""

    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            if self.path == "/index":
                self.wfile.write(
                    json.dumps({"extensions": [{"name": "X", "url": "https://e.invalid/x"}]}).encode()
                )
            while self.path in ("/endless", "/drip"):
                self.wfile.write(b"0" * (65536 if self.path == "/endless" else 1))
                self.wfile.flush()
                if self.path == "/drip":
                    time.sleep(0.2)
        except OSError:
            pass  # the client hung up (what a bounded reader does)

    def log_message(self, *args):
        pass


@pytest.fixture
def index_server():
    _Handler.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.timeout(HANG_TIMEOUT_S)
def test_index_on_a_public_listener_is_refused_before_anything_is_read(
    tmp_path, tiny_sd1_model, index_server
):
    services, _ = make_app(
        tmp_path / "data", tiny_sd1_model, "--server-name", "127.0.0.2", "--gradio-auth", "u:p"
    )
    try:
        valid = tmp_path / "index.json"
        valid.write_text(json.dumps({"extensions": [{"name": "X", "url": "https://e.invalid/x"}]}))
        os.mkfifo(tmp_path / "pipe.json")
        sources = [
            str(valid),
            str(tmp_path / "missing.json"),
            str(tmp_path / "pipe.json"),
            index_server + "/index",
        ]
        messages = set()
        for source in sources:
            with pytest.raises(ExtensionError, match="refused") as caught:
                ExtensionsActions(services).available(source)
            messages.add(str(caught.value).replace(source, "SOURCE"))
        assert len(messages) == 1, messages  # the same answer for every source: no existence or port oracle
        assert _Handler.hits == [] and not fifo_has_reader(tmp_path / "pipe.json")
        assert services.options.get("extensions_index_url", "") == ""
    finally:
        services.jobs.shutdown()
        reset_scripts()


@pytest.mark.timeout(HANG_TIMEOUT_S)
def test_index_files_must_be_small_regular_files(tmp_path):
    manager = ExtensionManager(tmp_path / "extensions", tmp_path / "builtin")
    os.mkfifo(tmp_path / "pipe.json")
    with open(tmp_path / "huge.json", "wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: costs no disk
    for source, reason in (
        ("/dev/zero", "not a regular file"),
        (str(tmp_path / "pipe.json"), "not a regular file"),
        ((tmp_path / "pipe.json").as_uri(), "not a regular file"),
        (str(tmp_path / "huge.json"), "larger than"),
    ):
        with pytest.raises(ExtensionError, match=reason):
            manager.load_index(source)
    assert not fifo_has_reader(tmp_path / "pipe.json")


@pytest.mark.timeout(HANG_TIMEOUT_S)
def test_index_urls_are_bounded_in_size_and_time(tmp_path, index_server):
    manager = ExtensionManager(tmp_path / "extensions", tmp_path / "builtin", index_timeout_s=1.0)
    assert [e["name"] for e in manager.load_index(index_server + "/index")] == ["X"]
    with pytest.raises(ExtensionError, match="larger than"):
        manager.load_index(index_server + "/endless")
    with pytest.raises(ExtensionError, match="within 1 s"):  # the deadline, not a socket timeout, ended it
        manager.load_index(index_server + "/drip")
