"""Helpers for the extension tests: git repos from the sample sources, a one-model app, script reset."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from modules import cmd_args, scripts, shared
from sdwebui.engine.generate import generate as engine_generate
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.extensions.bridge import attach_extensions
from sdwebui.extensions.manager import ExtensionManager
from sdwebui.extensions.preload import apply_preload_hooks
from sdwebui.models.lease import ModelLease
from sdwebui.services import ScriptCall, build_services

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


class OneModel:
    """Minimal ModelProvider serving one in-memory tiny model under any checkpoint name it knows."""

    def __init__(self, model):
        self.current = model
        self.loads: list[str | None] = []
        self.load_listeners: list = []  # never called: the one model is current from the start

    def load(self, title=None, *args, **kwargs):
        if title not in (None, self.current.info.title, self.current.info.name):
            raise ValueError(f"unknown checkpoint {title!r}")
        self.loads.append(title)
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

    def lease_of(self, model, vae=None, patches=()):
        return ModelLease(model, patches)

    def vae_names(self):
        return []


def make_app(data_dir: Path, model, *flags: str):
    """Flags (with preload.py hooks) -> services -> extensions attached, as app.py does."""
    parser = cmd_args.build_parser()
    argv = ["--data-dir", str(data_dir), *flags]
    apply_preload_hooks(parser, argv)
    args = cmd_args.parse_args(argv, parser)
    services = build_services(args, models=OneModel(model), generate=engine_generate)
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
