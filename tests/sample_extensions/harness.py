"""Helpers for the extension tests: git repos from the sample sources, a one-model app, script reset."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from modules import cmd_args, scripts, shared
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.extensions.bridge import attach_extensions
from sdwebui.extensions.manager import ExtensionManager
from sdwebui.extensions.preload import apply_preload_hooks
from sdwebui.services import ScriptCall, build_services
from tests import tiny_models

SAMPLES = Path(__file__).parent


def git_repo_from(sample: str, root: Path) -> Path:
    """Copy a sample extension to `root/<sample>` and commit it as a real git repository."""
    repo = root / sample
    shutil.copytree(SAMPLES / sample, repo)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(root), "PATH": "/usr/bin:/bin"}  # fmt: skip
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return repo


def make_app(data_dir: Path, model, *flags: str):
    """Flags (with preload.py hooks) -> services -> extensions attached, as app.py does, on the real model
    manager: `model` is written as the data dir's one checkpoint file (no test double: one with a handy
    `current` once hid that production's shared.sd_model was None)."""
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / f"{model.info.name}.safetensors"
    if not checkpoint.exists():
        tiny_models.write_single_file(model, checkpoint)
    parser = cmd_args.build_parser()
    argv = ["--data-dir", str(data_dir), "--use-cpu", "all", *flags]
    apply_preload_hooks(parser, argv)
    args = cmd_args.parse_args(argv, parser)
    services = build_services(args)
    system = attach_extensions(services)
    return services, system


def reset_scripts() -> None:
    """Unload extension scripts and unbind modules.shared, so no test leaks facade globals."""
    scripts.unload_scripts()
    shared.reset()
    scripts.scripts_txt2img, scripts.scripts_img2img = (
        scripts.ScriptRunner(),
        scripts.ScriptRunner(is_img2img=True),
    )


def install(data_dir: Path, src_root: Path, *samples: str) -> ExtensionManager:
    """Install samples through ExtensionManager.install, the Extensions tab's code path."""
    manager = ExtensionManager(data_dir / "extensions", data_dir / "no-builtins")
    for sample in samples:
        manager.install(str(git_repo_from(sample, src_root)))
    return manager


def generate(services, timeout: float = 180, **call):
    fields = dict(prompt="a cat", seed=5, steps=2, width=64, height=64, batch_size=2, sampler_name="Euler",
                  do_not_save_samples=True)  # fmt: skip
    fields.update(call.pop("request", {}))
    job = services.submit_generation(Txt2ImgRequest(**fields), script_call=ScriptCall("txt2img", **call))
    return job.wait(timeout)
