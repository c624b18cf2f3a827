"""In Chromium: what an extension's on_before_component / on_after_component built is on the page, right
before / after the component it was called for (the real app with tests/sample_extensions/sample-hooks)."""

from __future__ import annotations

import shutil

import pytest

from tests.browser import start_server, stop_server, wait_ui_loaded, write_tiny_checkpoint
from tests.sample_extensions.harness import SAMPLES

pytest_plugins = ("tests.browser",)  # the browser fixture
pytestmark = [pytest.mark.browser]

FOLLOWS = "([a, b]) => !!(document.querySelector(a).compareDocumentPosition(document.querySelector(b)) & 4)"


@pytest.fixture(scope="module")
def hooks_server(tmp_path_factory, browser):  # browser first: it skips without Chromium
    data_dir = tmp_path_factory.mktemp("hooks-ui")
    shutil.copytree(SAMPLES / "sample-hooks", data_dir / "extensions" / "sample-hooks")
    handle = start_server(data_dir, write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoints")))
    yield handle
    stop_server(handle)


def test_component_callbacks_place_their_blocks_around_the_prompt(browser, hooks_server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(hooks_server.url + "/")
        page.wait_for_selector("#txt2img_prompt textarea")
        wait_ui_loaded(page)
        before, prompt, after = "#sample_hooks_before_prompt", "#txt2img_prompt", "#sample_hooks_after_prompt"
        assert page.inner_text(before).strip() == "before the prompt"
        assert page.inner_text(after).strip() == "after the prompt"
        assert page.evaluate(FOLLOWS, [before, prompt]) and page.evaluate(FOLLOWS, [prompt, after])
        # right next to it: the prompt's token counter comes after what after_component built
        assert page.evaluate(FOLLOWS, [after, "#txt2img_token_counter"])
        assert page.locator("#txt2img_prompt_container #sample_hooks_before_prompt").count() == 1
    finally:
        context.close()
