"""A sample A1111-style extension, installed from a real git repo, run through the job queue and the engine."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from modules import script_callbacks, scripts, shared
from sdwebui.engine.requests import RequestError
from sdwebui.extensions.bridge import ui_values_to_call
from sdwebui.extensions.manager import ExtensionError, ExtensionManager
from tests.sample_extensions import harness
from tests.sample_extensions.harness import generate, git_repo_from, make_app, reset_scripts


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


def install(tmp_path: Path, *samples: str) -> ExtensionManager:
    return harness.install(tmp_path / "data", tmp_path / "src", *samples)


def info_of(services, name: str) -> dict:
    return next(i for i in services.scripts.script_info() if i["name"] == name)


def test_installed_extension_rewrites_prompts_and_adds_infotext(tmp_path, app_factory):
    install(tmp_path, "sample-rewrite")
    services, system = app_factory("--sample-ext-flag")
    assert shared.cmd_opts.sample_ext_flag is True  # preload.py added the flag before parsing
    assert services.options.get("sample_rewrite_suffix") == "sfx"  # on_ui_settings option registered
    assert services.options.data_labels["sample_rewrite_suffix"].section == (
        "sample_rewrite",
        "Sample rewrite",
    )
    assert [a["label"] for a in info_of(services, "sample rewrite")["args"]] == ["Enabled", "Tag"]
    assert info_of(services, "sample rewrite")["is_alwayson"] is True

    result = generate(services, alwayson_scripts={"Sample rewrite": [True, "xy"]})
    assert result.prompts == ["a cat xy-5 sfx", "a cat xy-6 sfx"]
    assert result.infotexts[1].startswith("a cat xy-6 sfx\n")
    assert "Sample rewrite: xy+flag" in result.infotexts[0]
    module = next(m for path, m in scripts.loaded_modules.items() if path.endswith("rewrite.py"))
    assert module.SEEN_STEPS[:2] == [0, 1]  # on_cfg_denoiser ran per step
    assert module.StateProbe.seen[-1] == ("txt2img", 2, 2)  # shared.state follows the job's progress
    assert module.LOADED_MODELS == [services.models.current_title()]  # once, before the first job
    assert module.BASEDIR == str(tmp_path / "data" / "extensions" / "sample-rewrite")

    defaults = generate(services)  # no args given: ui() defaults (enabled, "tag")
    assert defaults.prompts[0] == "a cat tag-5 sfx"
    runner = scripts.scripts_txt2img
    script = next(s for s in runner.alwayson_scripts if s.title() == "Sample rewrite")
    values = list(runner.default_args)  # the UI's positional values, rewrite disabled by its checkbox
    values[script.args_from : script.args_to] = [False, "zz"]
    assert ui_values_to_call(False, values)["alwayson_scripts"]["Sample rewrite"] == [False, "zz"]
    off = generate(services, **ui_values_to_call(False, values))
    assert off.prompts == ["a cat", "a cat"]

    system.manager.set_enabled("sample-rewrite", False)
    system.reload()
    plain = generate(services)
    assert plain.prompts == ["a cat", "a cat"] and "Sample rewrite" not in plain.infotexts[0]
    assert "sample-rewrite" not in {Path(p).parent.parent.name for p in scripts.loaded_modules}
    assert not script_callbacks.has_callbacks("callbacks_cfg_denoiser")
    with pytest.raises(RequestError, match="not found"):
        generate(services, alwayson_scripts={"Sample rewrite": [True, "xy"]})


def test_raising_extension_does_not_break_the_other(tmp_path, app_factory, caplog):
    install(tmp_path, "sample-rewrite", "sample-raiser")
    services, _ = app_factory()
    with caplog.at_level(logging.ERROR, logger="webui.extensions"):
        result = generate(services, alwayson_scripts={"Sample rewrite": [True, "ok"]})
    assert result.prompts == ["a cat ok-5 sfx", "a cat ok-6 sfx"] and len(result.images) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("sample-raiser" in m and "process" in m for m in messages)
    assert any("postprocess_image" in m for m in messages)


def test_builtin_only_flag_and_positions(tmp_path, app_factory):
    install(tmp_path, "sample-rewrite")
    services, _ = app_factory("--disable-extra-extensions")
    names = {i["name"] for i in services.scripts.script_info()}
    assert "sample rewrite" not in names and {"x/y/z plot", "infotext note"} <= names
    runner = scripts.scripts_txt2img
    # A1111 layout: [script index] + alwayson args + selectable args, contiguous and in order
    spans = [(s.args_from, s.args_to) for s in runner.alwayson_scripts + runner.selectable_scripts]
    assert spans[0][0] == 1 and all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert len(runner.default_args) == spans[-1][1]


def test_disable_all_extensions_flag(tmp_path, app_factory):
    install(tmp_path, "sample-rewrite")
    services, _ = app_factory("--disable-all-extensions")
    assert services.scripts.script_info() == [] and scripts.loaded_modules == {}
    assert not hasattr(shared.cmd_opts, "sample_ext_flag")
    assert {e["enabled"] for e in services.extension_list()} == {False}


def test_unknown_selectable_script_is_a_request_error(tmp_path, app_factory):
    services, _ = app_factory()
    with pytest.raises(RequestError, match="script_name"):
        generate(services, script_name="No such script")


def test_install_refused_when_listening_publicly(tmp_path, app_factory):
    services, system = app_factory("--listen", "--insecure")
    repo = git_repo_from("sample-rewrite", tmp_path / "src")
    with pytest.raises(ExtensionError, match="enable-insecure-extension-access"):
        system.manager.install(str(repo))
    assert not (tmp_path / "data" / "extensions" / "sample-rewrite").exists()


def test_preload_flags_in_help_and_bad_preload_is_skipped(tmp_path, capsys, caplog):
    from modules import cmd_args
    from sdwebui.extensions.preload import apply_preload_hooks

    install(tmp_path, "sample-rewrite")
    broken = tmp_path / "data" / "extensions" / "broken"
    broken.mkdir()
    (broken / "preload.py").write_text("def preload(parser):\n    raise ValueError('nope')\n")
    parser = cmd_args.build_parser()
    argv = ["--data-dir", str(tmp_path / "data"), "--help"]
    with caplog.at_level(logging.ERROR, logger="webui.extensions"):
        assert apply_preload_hooks(parser, argv) == ["sample-rewrite"]
    assert any("broken" in r.getMessage() for r in caplog.records)
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    assert "--sample-ext-flag" in capsys.readouterr().out


def test_script_controls_for_the_ui(tmp_path, app_factory):
    import gradio as gr

    from sdwebui.extensions.bridge import script_controls

    install(tmp_path, "sample-rewrite")
    services, system = app_factory()
    with gr.Blocks():
        controls = script_controls(is_img2img=False)
    dropdown = controls.inputs[0]
    assert dropdown.choices[0][0] == "None" and ("X/Y/Z plot", 2) in [
        (c[0], i) for i, c in enumerate(dropdown.choices)
    ]
    values = list(scripts.scripts_txt2img.default_args)
    assert len(values) == len(controls.inputs)
    values[0] = 1  # "Prompts from file or textbox"
    script = scripts.scripts_txt2img.selectable_scripts[0]
    values[script.args_from : script.args_to] = [False, False, "start", "a dog"]
    fields = controls.call_fields(values)
    assert fields["script_name"] == "Prompts from file or textbox"
    assert generate(services, **fields).prompts == ["a dog a cat tag-5 sfx", "a dog a cat tag-6 sfx"]

    # Apply and restart with the rewrite disabled: the page built before still submits valid calls
    system.manager.set_enabled("sample-rewrite", False)
    system.reload()
    fields = controls.call_fields(values)
    assert "Sample rewrite" not in fields["alwayson_scripts"]
    assert generate(services, **fields).prompts == ["a dog a cat", "a dog a cat"]
