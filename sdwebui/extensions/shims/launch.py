"""`import launch` for extensions' install.py (A1111's launch module): package checks and pip/git helpers.

Only on PYTHONPATH of the install.py subprocess; the app never imports it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shlex
import subprocess
import sys

python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")
dir_repos = "repositories"
skip_install = False


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


def run(
    command: str, desc: str | None = None, errdesc: str | None = None, custom_env=None, live: bool = True
) -> str:
    if desc:
        print(desc, flush=True)
    result = subprocess.run(
        command, shell=True, env=custom_env or os.environ, capture_output=not live, text=True, check=False
    )
    if result.returncode != 0:
        message = (
            f"{errdesc or 'Error running command'}.\nCommand: {command}\nError code: {result.returncode}"
        )
        if not live:
            message += f"\nstdout: {result.stdout}\nstderr: {result.stderr}"
        raise RuntimeError(message)
    return result.stdout or ""


def run_pip(command: str, desc: str | None = None, live: bool = True) -> str:
    index = f" --index-url {shlex.quote(index_url)}" if index_url else ""
    return run(
        f"{shlex.quote(python)} -m pip {command} --prefer-binary{index}",
        desc=f"Installing {desc}" if desc else None,
        errdesc=f"Couldn't install {desc}",
        live=live,
    )


def check_run_python(code: str) -> bool:
    return subprocess.run([python, "-c", code], capture_output=True, check=False).returncode == 0


def git_clone(url: str, dir: str, name: str, commithash: str | None = None) -> None:  # noqa: A002 (A1111 name)
    if os.path.exists(dir):
        return
    subprocess.run([git, "-c", "protocol.ext.allow=never", "clone", "--", url, dir], check=True)
    if commithash:
        subprocess.run([git, "-C", dir, "checkout", commithash], check=True)
