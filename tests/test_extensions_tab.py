"""Extensions tab handlers over a real app: install from a git repo, disable via Apply, index, errors."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from modules import scripts
from sdwebui.extensions.manager import ExtensionError
from tests.sample_extensions.harness import generate, git_repo_from, make_app, reset_scripts
from webui.extensions_tab import ExtensionsActions, create_extensions_tab


@pytest.fixture
def app(tmp_path, tiny_sd1_model):
    services, _ = make_app(tmp_path / "data", tiny_sd1_model, "--disable-extra-extensions")
    yield services
    services.jobs.shutdown()
    reset_scripts()


def test_install_apply_disable_through_tab_actions(tmp_path, app):
    with gr.Blocks():
        actions = create_extensions_tab(app)
    repo = git_repo_from("sample-rewrite", tmp_path / "src")
    # --disable-extra-extensions: user extensions stay off even after install
    assert "Installed sample-rewrite" in actions.install(str(repo), "", "")
    assert "sample rewrite" not in {i["name"] for i in app.scripts.script_info()}
    rows = {r[0]: r for r in actions.installed_rows()}
    assert rows["sample-rewrite"][1] is False and rows["sample-rewrite"][5] == str(repo)
    assert "infotext-note (built-in)" in rows


def test_apply_enables_and_disables(tmp_path, tiny_sd1_model):
    git = git_repo_from("sample-rewrite", tmp_path / "src")
    services, _ = make_app(tmp_path / "data", tiny_sd1_model)
    try:
        actions = ExtensionsActions(services)
        actions.install(str(git), "", "rw")
        assert (
            generate(services, alwayson_scripts={"Sample rewrite": [True, "t"]}).prompts[0] == "a cat t-5 sfx"
        )
        enabled = [n for n in actions.enabled_names() if n != "rw"]
        assert "Applied" in actions.apply_and_restart(enabled)
        assert generate(services).prompts[0] == "a cat"
        assert json.loads((tmp_path / "data" / "config.json").read_text())["disabled_extensions"] == ["rw"]
        assert actions.check_updates() == "All extensions are up to date."
        assert "Uninstalled rw" in actions.uninstall("rw")
        assert not (tmp_path / "data" / "extensions" / "rw").exists()
        with pytest.raises(ExtensionError, match="choose an extension"):
            actions.update("")
    finally:
        services.jobs.shutdown()
        reset_scripts()


def test_available_from_local_index(tmp_path, app):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"extensions": [{"name": "X", "url": "https://example.invalid/x.git",
                                                 "description": "d", "tags": ["a", "b"]}]}))  # fmt: skip
    actions = ExtensionsActions(app)
    assert actions.available(str(index)) == [["X", "d", "a, b", False, "https://example.invalid/x.git"]]
    assert app.options.get("extensions_index_url") == str(index)
    with pytest.raises(ExtensionError, match="give a URL"):
        actions.available(" ")
    assert scripts.scripts_txt2img.selectable_scripts  # built-ins still loaded
