"""`import launch` for extensions (A1111's launch module): package checks and pip/git helpers.

On PYTHONPATH of the install.py subprocess (as the top-level `launch`), and importable by scripts as
`launch` through the repo's `launch.py` forwarder. Every pip run goes through the app's constraints
(sdwebui/extensions/constraints.py): a request for another version of one of the app's packages is
refused before pip runs, with the extension's name, and recorded for the Extensions tab.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import inspect
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from sdwebui.extensions import constraints

python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")
dir_repos = "repositories"
skip_install = False
default_command_live = True
_REPO_DIR = Path(__file__).resolve().parents[3]


class _Args:
    skip_install = False
    skip_torch_cuda_test = True
    reinstall_xformers = False
    reinstall_torch = False


args = _Args()


def is_installed(package: str) -> bool:
    """True when the distribution (or, failing that, the importable module) exists."""
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def repo_dir(name: str) -> str:
    return os.path.join(str(_REPO_DIR), dir_repos, name)


def _git_value(*git_args: str) -> str:
    try:
        result = subprocess.run(
            [git, "-C", str(_REPO_DIR), *git_args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "<none>"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "<none>"


@functools.lru_cache
def commit_hash() -> str:
    """The app checkout's HEAD commit, "<none>" outside a git checkout (as A1111)."""
    return _git_value("rev-parse", "HEAD")


@functools.lru_cache
def git_tag() -> str:
    """`git describe --tags` of the app checkout, else its short commit, else "<none>" (as A1111)."""
    tag = _git_value("describe", "--tags")
    return tag if tag != "<none>" else _git_value("rev-parse", "--short", "HEAD")


def _calling_extension() -> str:
    """The extension whose code called us: the install subprocess says it; at run time, the caller's file."""
    if os.environ.get(constraints.ENV_EXTENSION):
        return os.environ[constraints.ENV_EXTENSION]
    internal = _REPO_DIR / "sdwebui"
    for frame in inspect.stack():
        path = Path(frame.filename)
        if path.is_relative_to(internal):
            continue
        parts = path.parts
        for marker in ("extensions", "extensions-builtin"):
            if marker in parts and parts.index(marker) + 1 < len(parts) - 1:
                return parts[parts.index(marker) + 1]
    return "an extension"


def _constraints_file() -> Path:
    configured = os.environ.get(constraints.ENV_CONSTRAINTS, "").split()
    if configured and Path(configured[0]).is_file():
        return Path(configured[0])
    return constraints.write_constraints(Path(tempfile.gettempdir()) / f"webui-constraints-{os.getpid()}.txt")


def _refuse_conflicts(command: str) -> Path:
    """Raise when the pip command asks to move one of the app's packages; returns the constraints file."""
    path = _constraints_file()
    installs, removals = constraints.pip_requests(command, Path.cwd())
    refused = constraints.conflicts(
        installs, constraints.read_constraints(path), _calling_extension(), removals
    )
    if refused:
        report = os.environ.get(constraints.ENV_REFUSALS)
        if report:
            with open(report, "a", encoding="utf-8") as handle:
                for item in refused:
                    handle.write(json.dumps({"message": item.message()}) + "\n")
        raise RuntimeError("; ".join(item.message() for item in refused))
    return path


def run(
    command: str, desc: str | None = None, errdesc: str | None = None, custom_env=None, live: bool = True
) -> str:
    env = dict(custom_env or os.environ)
    if " pip " in f" {command} " or "-m pip" in command:  # a pip command: the constraints apply
        env[constraints.ENV_CONSTRAINTS] = str(_refuse_conflicts(command))
    if desc:
        print(desc, flush=True)
    result = subprocess.run(command, shell=True, env=env, capture_output=not live, text=True, check=False)
    if result.returncode != 0:
        message = (
            f"{errdesc or 'Error running command'}.\nCommand: {command}\nError code: {result.returncode}"
        )
        if not live:
            message += f"\nstdout: {result.stdout}\nstderr: {result.stderr}"
        raise RuntimeError(message)
    return result.stdout or ""


def run_pip(command: str, desc: str | None = None, live: bool = default_command_live) -> str:
    index = f" --index-url {shlex.quote(index_url)}" if index_url else ""
    return run(
        f"{shlex.quote(python)} -m pip {command} --prefer-binary{index}",
        desc=f"Installing {desc}" if desc else None,
        errdesc=f"Couldn't install {desc}",
        live=live,
    )


def run_python(code: str, desc: str | None = None, errdesc: str | None = None, live: bool = True) -> str:
    return run(f"{shlex.quote(python)} -c {shlex.quote(code)}", desc, errdesc, live=live)


def check_run_python(code: str) -> bool:
    return subprocess.run([python, "-c", code], capture_output=True, check=False).returncode == 0


def requirements_met(requirements_file: str) -> bool:
    """True when every line of the requirements file is installed in a matching version (A1111)."""
    from packaging.requirements import InvalidRequirement, Requirement

    for line in constraints.requirements_file_lines(Path(requirements_file)):
        try:
            req = Requirement(line)
            version = importlib.metadata.version(req.name)
        except (InvalidRequirement, importlib.metadata.PackageNotFoundError):
            return False
        if not req.specifier.contains(version, prereleases=True):
            return False
    return True


def git_clone(url: str, dir: str, name: str, commithash: str | None = None) -> None:  # noqa: A002 (A1111 name)
    if os.path.exists(dir):
        return
    subprocess.run([git, "-c", "protocol.ext.allow=never", "clone", "--", url, dir], check=True)
    if commithash:
        subprocess.run([git, "-C", dir, "checkout", commithash], check=True)
