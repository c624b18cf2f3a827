"""ExtensionManager: install from real git repos, ordering, enable/disable, updates, safety rules."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest

from sdwebui.config.options import Options
from sdwebui.extensions.manager import ExtensionError, ExtensionManager, check_clone_url, folder_name_for


def git(cwd: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "HOME": str(cwd),
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def make_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    return root


def manager(tmp_path: Path, **kwargs) -> ExtensionManager:
    options = Options({}, tmp_path / "config.json")
    builtin = tmp_path / "builtin"
    builtin.mkdir(exist_ok=True)
    return ExtensionManager(tmp_path / "extensions", builtin, options, **kwargs)


def test_install_from_local_path_and_file_url(tmp_path):
    repo = make_repo(tmp_path / "src" / "sd-webui-demo.git", {"scripts/a.py": "x = 1\n"})
    mgr = manager(tmp_path)
    ext = mgr.install(str(repo))
    assert ext.name == "sd-webui-demo"
    assert (tmp_path / "extensions" / "sd-webui-demo" / "scripts" / "a.py").read_text() == "x = 1\n"
    assert ext.remote == str(repo) and ext.branch == "main" and len(ext.commit_hash) == 40
    ext2 = mgr.install(repo.as_uri(), name="second")
    assert ext2.path.name == "second"
    api = {e["name"]: e for e in mgr.extensions_for_api()}
    assert set(api) == {"sd-webui-demo", "second"} and api["second"]["enabled"] is True
    with pytest.raises(ExtensionError, match="already exists"):
        mgr.install(str(repo))


def test_install_branch(tmp_path):
    repo = make_repo(tmp_path / "src" / "ext", {"scripts/a.py": "x = 1\n"})
    git(repo, "checkout", "-q", "-b", "dev")
    (repo / "scripts" / "a.py").write_text("x = 2\n")
    git(repo, "commit", "-q", "-am", "dev")
    git(repo, "checkout", "-q", "main")
    ext = manager(tmp_path).install(str(repo), branch="dev")
    assert ext.branch == "dev" and (ext.path / "scripts" / "a.py").read_text() == "x = 2\n"


@pytest.mark.parametrize(
    "url",
    ["--upload-pack=touch /tmp/pwned", "ext::sh -c touch% /tmp/pwned", "fd::3", "  ", "-oProxyCommand=x"],
)
def test_dangerous_urls_rejected(tmp_path, url):
    with pytest.raises(ExtensionError, match="install"):
        manager(tmp_path).install(url)
    assert not (tmp_path / "extensions").exists() or not any((tmp_path / "extensions").iterdir())


@pytest.mark.parametrize("name", ["..", "../evil", "/abs/path", "a/b", "..\\x", ".hidden"])
def test_folder_names_sanitised(tmp_path, name):
    repo = make_repo(tmp_path / "src" / "ext", {"scripts/a.py": ""})
    with pytest.raises(ExtensionError, match="folder name"):
        manager(tmp_path).install(str(repo), name=name)


def test_folder_name_derivation():
    assert folder_name_for("https://github.com/user/sd-webui-foo.git") == "sd-webui-foo"
    assert folder_name_for("git@github.com:user/bar.git") == "bar"
    assert folder_name_for("/tmp/x/baz/") == "baz"
    assert check_clone_url(" file:///tmp/x ") == "file:///tmp/x"


def test_changes_refused_when_listening_publicly(tmp_path):
    from modules.cmd_args import build_parser
    from modules.paths import DataPaths

    repo = make_repo(tmp_path / "src" / "ext", {"scripts/a.py": ""})
    paths = DataPaths(tmp_path)
    public = build_parser().parse_args(["--listen", "--insecure", "--data-dir", str(tmp_path)])
    mgr = ExtensionManager.from_args(public, paths)
    with pytest.raises(ExtensionError, match="enable-insecure-extension-access"):
        mgr.install(str(repo))
    assert not (paths.extensions_dir / "ext").exists()
    allowed = build_parser().parse_args(["--listen", "--insecure", "--enable-insecure-extension-access"])
    assert ExtensionManager.from_args(allowed, paths).install(str(repo)).name == "ext"
    with pytest.raises(ExtensionError, match="uninstall refused"):
        mgr.uninstall("ext")
    local = ExtensionManager.from_args(argparse.Namespace(listen=False, server_name=None), paths)
    local.uninstall("ext")
    assert not (paths.extensions_dir / "ext").exists()


def test_enable_disable_persisted_and_disable_all(tmp_path):
    repo = make_repo(tmp_path / "src" / "ext", {"scripts/a.py": ""})
    mgr = manager(tmp_path)
    mgr.install(str(repo))
    mgr.set_enabled("ext", False)
    assert json.loads((tmp_path / "config.json").read_text())["disabled_extensions"] == ["ext"]
    assert mgr.ordered_script_files() == []
    fresh = ExtensionManager(tmp_path / "extensions", tmp_path / "builtin", _load_options(tmp_path))
    fresh.discover()
    assert [e.enabled for e in fresh.extensions] == [False]
    fresh.set_enabled("ext", True)
    assert [p.name for _, p in fresh.ordered_script_files()] == ["a.py"]
    off = ExtensionManager(tmp_path / "extensions", tmp_path / "builtin", disable_all=True)
    off.discover()
    assert off.active() == []


def _load_options(tmp_path: Path) -> Options:
    options = Options({}, tmp_path / "config.json")
    options.load()
    return options


def test_script_order_follows_metadata(tmp_path):
    mgr = manager(tmp_path)
    ext_dir = tmp_path / "extensions"
    make_repo(ext_dir / "aaa", {"scripts/first.py": "", "metadata.ini": "[scripts/first.py]\nAfter = zzz\n"})
    make_repo(ext_dir / "mmm", {"scripts/mid.py": "", "metadata.ini": "[Extension]\nName = middle\n"})
    make_repo(ext_dir / "zzz", {"scripts/last.py": "", "metadata.ini": "[scripts]\nBefore = middle\n"})
    mgr.discover()
    order = [p.name for _, p in mgr.ordered_script_files()]
    assert order == ["last.py", "first.py", "mid.py"]


def test_install_script_runs_and_failure_disables(tmp_path):
    good = make_repo(
        tmp_path / "src" / "good",
        {
            "install.py": "import pathlib, launch\n"
            "ok = launch.is_installed('torch') and not launch.is_installed('surely-not-installed-pkg')\n"
            "pathlib.Path('installed.txt').write_text('ok' if ok else 'bad')\n",
            "scripts/a.py": "",
        },
    )
    bad = make_repo(tmp_path / "src" / "bad", {"install.py": "raise SystemExit('no luck')\n"})
    mgr = manager(tmp_path)
    ext = mgr.install(str(good))
    assert (ext.path / "installed.txt").read_text() == "ok" and ext.install_error is None
    broken = mgr.install(str(bad))
    assert broken.enabled is False and "no luck" in broken.install_error
    assert [e["install_error"] is not None for e in mgr.list_for_ui()] == [True, False]
    (ext.path / "installed.txt").unlink()
    mgr.run_pending_installs()  # unchanged install.py: not run again
    assert not (ext.path / "installed.txt").exists()


def test_check_updates_and_update(tmp_path):
    repo = make_repo(tmp_path / "src" / "ext", {"scripts/a.py": "v = 1\n"})
    mgr = manager(tmp_path)
    ext = mgr.install(str(repo))
    assert mgr.check_updates() == {"ext": "latest"}
    (repo / "scripts" / "a.py").write_text("v = 2\n")
    git(repo, "commit", "-q", "-am", "v2")
    assert mgr.check_updates() == {"ext": "behind"}
    mgr.update("ext")
    assert (ext.path / "scripts" / "a.py").read_text() == "v = 2\n"
    assert mgr.check_updates() == {"ext": "latest"}


def test_load_index_offline(tmp_path):
    repo = make_repo(tmp_path / "src" / "ext", {"scripts/a.py": ""})
    mgr = manager(tmp_path)
    mgr.install(str(repo))
    index = tmp_path / "index.json"
    entries = [{"name": "Ext", "url": str(repo), "description": "d", "tags": ["x"]}]
    entries.append({"name": "Other", "url": "https://example.invalid/other.git"})
    index.write_text(json.dumps({"extensions": entries}))
    listed = mgr.load_index(str(index))
    assert [(e["name"], e["installed"]) for e in listed] == [("Ext", True), ("Other", False)]
    assert mgr.load_index(index.as_uri())[0]["tags"] == ["x"]
    with pytest.raises(ExtensionError, match="cannot read"):
        mgr.load_index(str(tmp_path / "missing.json"))
