"""Gradio 3 keywords in extension code (tests/sample_extensions/sample-gradio3, written for A1111 1.x) are
translated with a warning naming the extension; the app's own code still gets stock Gradio 6."""

from __future__ import annotations

import logging

import gradio as gr
import pytest

from sdwebui.extensions.bridge import extension_tabs, script_controls
from sdwebui.models.model import ModelFamily
from tests import tiny_models
from tests.sample_extensions.harness import generate, make_app, reset_scripts
from tests.sample_extensions.harness import install as install_samples


@pytest.fixture(scope="module")
def app(tmp_path_factory, _tiny_model_cache):
    root = tmp_path_factory.mktemp("g3")
    install_samples(root / "data", root / "src", "sample-gradio3")
    services, _ = make_app(
        root / "data", tiny_models.tiny_loaded_model(ModelFamily.SD1, seed=0), "--skip-install"
    )
    yield services
    services.jobs.shutdown()
    reset_scripts()


def _by_elem_id(blocks: gr.Blocks, elem_id: str):
    return next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def test_script_ui_with_gradio3_keywords_builds_and_runs(app, caplog):
    caplog.set_level(logging.WARNING, logger="webui.extensions")
    with gr.Blocks() as demo:
        controls = script_controls(False)
    image = _by_elem_id(demo, "g3_image")
    assert image.sources == ["upload"] and image.type == "pil"
    assert "copy" in _by_elem_id(demo, "g3_note").buttons
    assert _by_elem_id(demo, "g3_gallery").columns == 3
    assert _by_elem_id(demo, "g3_forge").get_block_name() == "checkbox"  # __module__ = modules.ui_components
    assert any(isinstance(b, gr.Group) for b in demo.blocks.values())  # gr.Box
    words = [b for b in demo.blocks.values() if isinstance(b, gr.Textbox) and b.label == "Word"]
    assert [w.value for w in words] == ["hello"]  # gr.inputs.Textbox(default=)
    js = [dep.js for dep in demo.fns.values()]
    assert js.count("(x) => x") == 1 and js.count("(n) => n") == 1  # _js= on .click and on .then
    refresh = next(dep for dep in demo.fns.values() if dep.js == "(x) => x")
    assert refresh.fn() == {"__type__": "update", "choices": ["a", "b", "c"], "value": "b"}
    warned = " | ".join(r.getMessage() for r in caplog.records)
    for what in ("source=", "tool=", "shape=", "show_copy_button=", "default=", "gr.Box", ".style(grid=)",
                 "_js=", "status_tracker="):  # fmt: skip
        assert "extension sample-gradio3 uses Gradio 3's" in warned and what in warned, what
    values = [None] * len(controls.inputs)
    values[controls.inputs.index(words[0])] = "hi"
    choice = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Choice")
    values[controls.inputs.index(choice)] = "a"
    fields = controls.call_fields(values)
    result = generate(app, request={"batch_size": 1}, **fields)
    assert "Sample gradio3: hi/a" in result.infotexts[0]


def test_ui_tab_every_becomes_a_timer(app):
    (tab, title, elem_id), *_ = [t for t in extension_tabs() if t[2] == "g3_tab"]
    timers = [b for b in tab.blocks.values() if isinstance(b, gr.Timer)]
    assert title == "Gradio 3" and [t.value for t in timers] == [5.0]
    row = next(b for b in tab.blocks.values() if isinstance(b, gr.Row))
    assert row.equal_height is True


def test_app_code_still_gets_stock_gradio(app):
    with gr.Blocks():
        with pytest.raises(TypeError, match="_js"):
            gr.Button("x").click(lambda: None, _js="() => 1")
        with pytest.raises(TypeError, match="source"):
            gr.Image(source="upload")
