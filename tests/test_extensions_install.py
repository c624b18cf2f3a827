"""install.py cannot break the app: every pip run of an extension keeps the app's packages where they are
(a constraints file from the installed versions), a conflicting pin is refused with the extension's name,
the extension is disabled with that reason and the app still starts. Offline: pip runs with --no-index."""

from __future__ import annotations

import importlib.metadata
import shutil
import textwrap

import pytest

from sdwebui.extensions import constraints
from sdwebui.extensions.manager import ExtensionManager
from tests.sample_extensions.harness import SAMPLES, generate, make_app, reset_scripts
from webui.extensions_tab import ExtensionsActions


@pytest.fixture(autouse=True)
def offline_pip(monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip resolves against what is installed, never the network
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)


def _extension(root, name, install_py, **files):
    folder = root / name
    (folder / "scripts").mkdir(parents=True)
    (folder / "install.py").write_text(textwrap.dedent(install_py))
    for relative, text in files.items():
        (folder / relative).write_text(text)
    return folder


def _installed(manager):
    manager.discover()
    manager.run_pending_installs()
    return {ext.name: ext for ext in manager.extensions}


def test_constraints_pin_the_installed_app_packages(tmp_path):
    pins = constraints.read_constraints(constraints.write_constraints(tmp_path / "c.txt"))
    for name in ("torch", "diffusers", "transformers", "gradio", "fastapi", "pydantic", "numpy",
                 "huggingface-hub", "safetensors", "opencv-python-headless", "matplotlib"):  # fmt: skip
        assert pins[name] == importlib.metadata.version(name), name
    installs, removals = constraints.pip_requests(
        '"/py" -m pip install -U einops "pydantic==1.10.17" --prefer-binary'
    )
    assert (installs, removals) == (["einops", "pydantic==1.10.17"], [])
    refused = constraints.conflicts(installs + ["numpy>=1.0", "torch; python_version<'3'"], pins, "x")
    assert [r.requirement for r in refused] == ["pydantic==1.10.17"]
    _, removals = constraints.pip_requests("uninstall -y torch requests")
    assert [r.requirement for r in constraints.conflicts([], pins, "x", removals)] == ["uninstall torch"]


def test_conflicting_pin_is_refused_before_pip_and_disables_the_extension(tmp_path):
    ext_dir = tmp_path / "extensions"
    shutil.copytree(SAMPLES / "sample-pin", ext_dir / "sample-pin")  # its install.py catches the error
    ok = _extension(
        ext_dir, "needs-einops", "import launch\nlaunch.run_pip('install einops>=0.6', 'einops')\n"
    )
    before = importlib.metadata.version("pydantic")
    found = _installed(ExtensionManager(ext_dir, tmp_path / "none"))
    pin = found["sample-pin"]
    assert pin.enabled is False
    assert "extension sample-pin asks for pydantic==1.10.17, but the app runs on pydantic " + before in (
        pin.install_error
    )
    assert importlib.metadata.version("pydantic") == before
    assert found["needs-einops"].enabled and found["needs-einops"].install_error is None  # satisfied: no-op
    assert (ok.parent / ".pip-constraints.txt").read_text().count("pydantic==" + before) == 1


def test_plain_pip_in_install_py_runs_under_the_constraints(tmp_path):
    ext_dir = tmp_path / "extensions"
    _extension(
        ext_dir,
        "raw-pip",
        """\
        import subprocess, sys
        subprocess.run([sys.executable, "-m", "pip", "install", "-r", "requirements.txt"], check=True)
        """,
        **{"requirements.txt": "diffusers==0.31.0\n"},
    )
    error = _installed(ExtensionManager(ext_dir, tmp_path / "none"))["raw-pip"].install_error
    # without the constraints pip would only say it found no diffusers 0.31.0 offline
    assert (
        "install.py of raw-pip: pip refused a requirement that conflicts with the app's own packages" in error
    )
    assert "(constraint) diffusers==" + importlib.metadata.version("diffusers") in error


def test_app_starts_with_the_failed_extension_shown_in_the_tab(tmp_path, tiny_sd1_model):
    data = tmp_path / "data"
    shutil.copytree(SAMPLES / "sample-pin", data / "extensions" / "sample-pin")
    services, _ = make_app(data, tiny_sd1_model)
    try:
        rows = {row[0]: row for row in ExtensionsActions(services).installed_rows()}
        assert rows["sample-pin"][1] is False and "asks for pydantic==1.10.17" in rows["sample-pin"][6]
        assert "sample pin" not in {i["name"] for i in services.scripts.script_info()}
        assert len(generate(services, request={"batch_size": 1}).images) == 1  # the app runs on
    finally:
        services.jobs.shutdown()
        reset_scripts()
