"""A sample A1111-style extension, installed from a real git repo, run through the job queue and the engine."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from modules import cmd_args, script_callbacks, scripts, shared
from modules.engine.generate import generate as engine_generate
from modules.engine.requests import RequestError, Txt2ImgRequest
from modules.extension_preload import apply_preload_hooks
from modules.extensions import ExtensionError, ExtensionManager
from modules.extensions_facade import attach_extensions, ui_values_to_call
from modules.services import ScriptCall, build_services

SAMPLES = Path(__file__).parent / "sample_extensions"


def git_repo_from(sample: str, root: Path) -> Path:
    repo = root / sample
    shutil.copytree(SAMPLES / sample, repo)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(root), "PATH": "/usr/bin:/bin"}  # fmt: skip
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return repo


class OneModel:
    """Minimal ModelProvider serving one in-memory tiny model."""

    def __init__(self, model):
        self.current = model

    def load(self, title=None, *args, **kwargs):
        return self.current

    def checkpoints(self):
        return [self.current.info]

    def checkpoint_titles(self):
        return [self.current.info.title]

    def current_title(self):
        return self.current.info.title

    def refresh(self):
        pass

    def unload(self):
        pass

    def vae_names(self):
        return []


@pytest.fixture
def app_factory(tmp_path, tiny_sd1_model):
    made = []

    def make(*flags: str):
        parser = cmd_args.build_parser()
        argv = ["--data-dir", str(tmp_path / "data"), *flags]
        apply_preload_hooks(parser, argv)
        args = cmd_args.parse_args(argv, parser)
        services = build_services(args, models=OneModel(tiny_sd1_model), generate=engine_generate)
        system = attach_extensions(services)
        made.append(services)
        return services, system

    yield make
    for services in made:
        services.jobs.shutdown()
    scripts.unload_scripts()
    scripts.scripts_txt2img, scripts.scripts_img2img = (
        scripts.ScriptRunner(),
        scripts.ScriptRunner(is_img2img=True),
    )


def install(tmp_path: Path, *samples: str) -> ExtensionManager:
    manager = ExtensionManager(tmp_path / "data" / "extensions", tmp_path / "no-builtins")
    for sample in samples:
        manager.install(str(git_repo_from(sample, tmp_path / "src")))
    return manager


def generate(services, **call):
    request = Txt2ImgRequest(prompt="a cat", seed=5, steps=2, width=64, height=64, batch_size=2,
                             sampler_name="Euler", do_not_save_samples=True)  # fmt: skip
    job = services.submit_generation(request, script_call=ScriptCall("txt2img", **call))
    return job.wait(120)


def test_installed_extension_rewrites_prompts_and_adds_infotext(tmp_path, app_factory):
    install(tmp_path, "sample-rewrite")
    services, system = app_factory("--sample-ext-flag")
    assert shared.cmd_opts.sample_ext_flag is True  # preload.py added the flag before parsing
    assert services.options.get("sample_rewrite_suffix") == "sfx"  # on_ui_settings option registered
    assert services.options.data_labels["sample_rewrite_suffix"].section == (
        "sample_rewrite",
        "Sample rewrite",
    )
    assert services.scripts.script_info()[0]["name"] == "sample rewrite"
    assert [a["label"] for a in services.scripts.script_info()[0]["args"]] == ["Enabled", "Tag"]

    result = generate(services, alwayson_scripts={"Sample rewrite": [True, "xy"]})
    assert result.prompts == ["a cat xy-5 sfx", "a cat xy-6 sfx"]
    assert result.infotexts[1].startswith("a cat xy-6 sfx\n")
    assert "Sample rewrite: xy+flag" in result.infotexts[0]
    module = scripts.loaded_modules[next(iter(scripts.loaded_modules))]
    assert module.SEEN_STEPS[:2] == [0, 1]  # on_cfg_denoiser ran per step

    defaults = generate(services)  # no args given: ui() defaults (enabled, "tag")
    assert defaults.prompts[0] == "a cat tag-5 sfx"
    values = [0, False, "zz"]  # the UI's positional values: disabled by its checkbox
    assert ui_values_to_call(False, values)["alwayson_scripts"] == {"Sample rewrite": [False, "zz"]}
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


def test_disable_all_extensions_flag(tmp_path, app_factory):
    install(tmp_path, "sample-rewrite")
    services, _ = app_factory("--disable-all-extensions")
    assert services.scripts.script_info() == [] and scripts.loaded_modules == {}
    assert not hasattr(shared.cmd_opts, "sample_ext_flag")
    assert [e["enabled"] for e in services.extension_list()] == [False]


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
