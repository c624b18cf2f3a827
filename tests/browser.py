"""Shared Playwright fixtures for the browser tests: the real app in a subprocess, Chromium, screenshots.

The server is `app.py --api --port P --data-dir D --ckpt tiny-sd1.safetensors`: the real entry point, job
queue, engine and extensions, over a tiny random SD1 checkpoint written to disk; one for the run (`ui_server`).
Each test gets the UI freshly loaded in its module's one page (`page`). Tests check the server's effects
(files in the data dir, pixels), never a wrapper. Browser tests skip when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests import app_zygote
from tests.api_server import server_env, write_tiny_checkpoint_file

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 180


class FrontEndRace(AssertionError):
    """A browser step lost a race with Gradio's front end (seen on a loaded 2-core machine): the page-load
    refresh had not landed, or the ImageEditor's PixiJS canvas was not there yet when a file was given."""


@contextmanager
def front_end_race(what: str) -> Iterator[None]:
    """Name a race-prone step: a Playwright timeout inside it is a FrontEndRace naming `what`."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        yield
    except PlaywrightTimeout as exc:
        raise FrontEndRace(f"{what}: {exc}") from exc


# The races seen, by what they fail with (pytest-rerunfailures matches "ExceptionType: message"):
FRONT_END_RACES = [
    FrontEndRace,
    # a brush stroke drawn before the ImageEditor had fitted a large uploaded image into its canvas (under
    # load the image still sat at 20 % in a corner) misses it: no mask reaches the job, so inpaint refuses...
    r"Inpaint: draw a mask on the image with the brush first",
    # ...and inpaint sketch runs without a mask (its infotext has no "Mask blur")
    r"'Mask blur: \d+' in '",
]
# the marker of every browser test module: two more tries, for the named races only
RERUN_FRONT_END_RACES = pytest.mark.flaky(reruns=2, reruns_delay=1, only_rerun=FRONT_END_RACES)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not answer {url} in {timeout} s:\n{log_path.read_text()[-4000:]}")


class ServerHandle:
    def __init__(self, url: str, data_dir: Path, process: subprocess.Popen, log_path: Path):
        self.url = url
        self.data_dir = data_dir
        self.process = process
        self.log_path = log_path

    def output_images(self, kind: str) -> list[Path]:
        """PNG files the server saved for `kind` ("txt2img", "img2img", "extras"), oldest first."""
        folder = self.data_dir / "outputs" / f"{kind}-images"
        return sorted(folder.rglob("*.png"), key=lambda p: p.stat().st_mtime_ns)


def write_tiny_checkpoint(folder: Path, family: str = "sd1") -> Path:
    """A real single-file checkpoint (random tiny weights) the app loads like any user's file."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_tiny_checkpoint_file(folder / f"tiny-{family}.safetensors", family)


def start_server(data_dir: Path, checkpoint: Path) -> ServerHandle:
    port = free_port()
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    # the API servers' environment (one torch thread: see api_server.start_server), so their zygote serves both
    env = server_env()
    flags = ["--api", "--port", str(port), "--data-dir", str(data_dir), "--ckpt", str(checkpoint)]
    process = app_zygote.start_app(REPO_ROOT / "app.py", flags, env, REPO_ROOT, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/", process, SERVER_START_TIMEOUT, log_path)
    except Exception:
        process.kill()
        raise
    return ServerHandle(url, data_dir, process, log_path)


def stop_server(handle: ServerHandle) -> None:
    handle.process.terminate()
    try:
        handle.process.wait(10)
    except subprocess.TimeoutExpired:
        handle.process.kill()


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory) -> Iterator[ServerHandle]:
    """One plain UI server for the run (test_ui_browser*, hires, refiner): each start builds the whole page
    and loads the model. Tests on it count only the files their own job saved and restore settings they
    change; a module that needs another data dir overrides this fixture."""
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium")
    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoints"))
    handle = start_server(tmp_path_factory.mktemp("ui-data"), checkpoint)
    yield handle
    stop_server(handle)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def wait_ui_loaded(page) -> None:
    """Wait for the page-load refresh (settings, sizes): typing before it lands would be overwritten."""
    with front_end_race("the page-load refresh never landed"):
        page.wait_for_function("document.body.dataset.uiLoaded === '1'")


def upload_to_editor(page, elem_id: str, path) -> None:
    """Gradio's ImageEditor drops a file given before its (PixiJS) canvas exists, 1-2 s after the tab
    opens: the cause of the old inpaint timeout (strokes on an empty editor, then a toast, no result)."""
    with front_end_race(f"the image editor #{elem_id} never showed the uploaded file"):
        page.wait_for_selector(f"#{elem_id} canvas", state="attached")
        page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
        page.wait_for_function(f"!document.querySelector('#{elem_id}').innerText.includes('Upload an image')")


class ModulePage:
    """One browser context and page for a test module, handed to each test freshly loaded (see `page`)."""

    def __init__(self, browser):
        self.browser = browser
        self.context = None
        self.current = None

    def get(self):
        if self.current is None or self.current.is_closed():
            self.discard()
            self.context = self.browser.new_context(viewport={"width": 1280, "height": 1000})
            self.current = self.context.new_page()
            self.current.set_default_timeout(30_000)
        return self.current

    def load(self, url: str):
        """The page with the UI at `url` freshly loaded; a failed load (a race) leaves a new context to the
        next try, as a page of its own would."""
        page = self.get()
        try:
            load_ui(page, url)
        except BaseException:
            self.discard()
            raise
        return page

    def discard(self) -> None:
        if self.context is not None:
            self.context.close()
        self.context = self.current = None


@pytest.fixture(scope="module")
def module_page(browser) -> Iterator[ModulePage]:
    shared = ModulePage(browser)
    yield shared
    shared.discard()


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        item.stash[CALL_FAILED] = True
    return report


def load_ui(page, url: str) -> None:
    """Navigate to the UI (a new navigation: a new Gradio session) and wait for its page-load refresh."""
    with front_end_race("the page never rendered the prompt box"):
        page.goto(url + "/")
        page.wait_for_selector("#txt2img_prompt textarea")
    wait_ui_loaded(page)


def end_test_page(module_page: ModulePage, request) -> None:
    """After a test on the module's page: a new context for the next test if this one failed (a mouse button
    left down, a half-done dialog), else a blank page, which ends the Gradio session as closing it did."""
    if request.node.stash.get(CALL_FAILED, False):
        module_page.discard()
    elif module_page.current is not None and not module_page.current.is_closed():
        module_page.current.goto("about:blank")


@contextmanager
def fresh_ui(module_page: ModulePage, url: str) -> Iterator:
    """`page` for a test that opens the UI itself (after changing a setting, on another server)."""
    page = module_page.load(url)
    try:
        yield page
    except BaseException:
        module_page.discard()
        raise
    page.goto("about:blank")


@pytest.fixture
def page(module_page, ui_server, request):
    """The UI freshly loaded for this test: a new navigation, so a new Gradio session with no field, output
    or per-session state of an earlier test. The module's page and context are reused: their HTTP cache and
    compiled scripts make a load about a third cheaper than in a new context."""
    page = module_page.load(ui_server.url)
    yield page
    end_test_page(module_page, request)


class Shots:
    """Numbered screenshots under test-artifacts/<test name>/."""

    def __init__(self, name: str):
        self.folder = ARTIFACTS / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def __call__(self, page, label: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def shot(request) -> Shots:
    return Shots(request.node.name)


def set_number(page, elem_id: str, value) -> None:
    """Type a value into a Gradio number field and commit it (Enter fires Gradio's change event)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def wait_result(page, tab: str, timeout: int = 90_000) -> str:
    """Wait for the tab's job to end; assert it shows no error and return its infotext."""
    page.wait_for_function(
        f"""() => {{
            const info = document.querySelector('#html_info_{tab} .infotext');
            const error = document.querySelector('#{tab}_status .error-message');
            return (info && info.innerText.includes('Seed:')) || error;
        }}""",
        timeout=timeout,
    )
    errors = page.locator(f"#{tab}_status .error-message")
    assert errors.count() == 0, errors.first.inner_text()
    return page.inner_text(f"#html_info_{tab} .infotext")
