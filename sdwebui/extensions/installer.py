"""Run one extension's install.py in a subprocess (same Python) under the app's pip constraints.

The subprocess gets `PIP_CONSTRAINT` (every pip it runs keeps the app's packages where they are), the
extension's name and a file where the `launch` shim records what it refused. A refusal fails the install
even when install.py caught the exception and exited 0: the extension then is disabled with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sdwebui.config.paths import REPO_DIR
from sdwebui.extensions import constraints

INSTALL_TIMEOUT_S = 900
CONSTRAINTS_FILE = ".pip-constraints.txt"
# pip's words when a constraint made the request impossible (a plain `pip install` without `launch`)
_PIP_CONFLICT = ("ResolutionImpossible", "conflicting dependencies")


def install_env(name: str, extensions_dir: Path, refusals: Path) -> dict[str, str]:
    env = dict(os.environ)
    # REPO_DIR for `from modules import ...` and `import launch`; the shims folder for `launch` as well
    shims = str(REPO_DIR / "sdwebui" / "extensions" / "shims")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), shims, env.get("PYTHONPATH")]))
    env["WEBUI_EXTENSIONS_DIR"] = str(extensions_dir)
    ours = constraints.write_constraints(extensions_dir / CONSTRAINTS_FILE)
    env[constraints.ENV_CONSTRAINTS] = " ".join(
        filter(None, [str(ours), env.get(constraints.ENV_CONSTRAINTS)])
    )
    env[constraints.ENV_EXTENSION] = name
    env[constraints.ENV_REFUSALS] = str(refusals)
    return env


def _refusal_messages(path: Path) -> list[str]:
    if not path.is_file():
        return []
    messages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            messages.append(str(json.loads(line)["message"]))
        except (ValueError, KeyError, TypeError):
            continue
    return messages


def run_install_py(name: str, folder: Path, extensions_dir: Path) -> str | None:
    """Run `folder/install.py`; None when it succeeded, else why it failed (shown in the Extensions tab)."""
    extensions_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="webui-install-") as tmp:
        refusals = Path(tmp) / "refusals.jsonl"
        try:
            result = subprocess.run(
                [sys.executable, str(folder / "install.py")],
                cwd=folder,
                env=install_env(name, extensions_dir, refusals),
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"install.py did not finish within {INSTALL_TIMEOUT_S} s"
        refused = _refusal_messages(refusals)
    if refused:
        return "install.py: " + "; ".join(dict.fromkeys(refused))
    if result.returncode == 0:
        return None
    output = (result.stderr or result.stdout).strip()
    everything = f"{result.stdout}\n{result.stderr}"  # pip explains the conflict on stdout
    if any(word in everything for word in _PIP_CONFLICT):
        asked = [line.strip() for line in everything.splitlines() if "The user requested" in line]
        return (
            f"install.py of {name}: pip refused a requirement that conflicts with the app's own packages "
            f"(pinned in {extensions_dir / CONSTRAINTS_FILE}): {'; '.join(asked) or output[-800:]}"
        )
    return f"install.py exited with {result.returncode}: {output[-1000:]}"
