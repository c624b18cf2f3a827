"""Extensions: discover, order, install from a git URL, enable/disable, update, uninstall.

An extension is a folder under `extensions/` (user, git-ignored) or `extensions-builtin/` (shipped) holding
`scripts/*.py`, optionally `preload.py`, `install.py`, `javascript/*.js`, `style.css`, `metadata.ini`.
One `ExtensionManager` per app; it owns no global state. The Extensions tab and the API call it.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdwebui.config.options import OptionInfo, write_json_atomic
from sdwebui.config.paths import REPO_DIR
from sdwebui.extensions.installer import run_install_py

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 300
INSTALL_STATE_FILE = ".install-state.json"
# An extension index (A1111's is ~1 MB) is read with a size and a time limit: a device, a FIFO or a slow or
# endless server must not exhaust memory or hold the worker.
INDEX_MAX_BYTES = 16 * 1024 * 1024
INDEX_TIMEOUT_S = 20.0
# git "remote helper" syntax (`ext::sh -c ...`, `fd::3`) can run commands: never accept it.
_REMOTE_HELPER = re.compile(r"^[A-Za-z0-9+.-]+::")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+ -]*$")


class ExtensionError(RuntimeError):
    """An extension operation was refused or failed; the message says which extension and why."""


@dataclass
class ExtensionMetadata:
    """`metadata.ini` of one extension (A1111 format)."""

    config: configparser.ConfigParser
    canonical_name: str

    @classmethod
    def read(cls, folder: Path, default_name: str) -> ExtensionMetadata:
        config = configparser.ConfigParser()
        path = folder / "metadata.ini"
        if path.is_file():
            try:
                config.read(path, encoding="utf-8")
            except configparser.Error as exc:
                log.error("extension %s: cannot read metadata.ini: %s", default_name, exc)
        name = config.get("Extension", "Name", fallback=None) or default_name
        return cls(config, name.strip().lower())

    def requires(self) -> list[str]:
        return parse_list(self.config.get("Extension", "Requires", fallback=""))

    def script_requirements(
        self, key: str, section: str, extra_section: str | None, loaded: Iterable[str]
    ) -> list[str]:
        """`Requires`/`Before`/`After` of a `[scripts/x.py]` section plus the `[scripts]` one.

        `a|b` means "a, or b when a is not installed" (A1111).
        """
        raw = self.config.get(section, key, fallback="") if self.config.has_section(section) else ""
        if extra_section and self.config.has_section(extra_section):
            raw += ", " + self.config.get(extra_section, key, fallback="")
        loaded = set(loaded)
        out = []
        for item in parse_list(raw.lower()):
            options = item.split("|")
            out.append(next((o for o in options if o in loaded), options[0]))
        return out


def parse_list(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,\s]+", text or "") if part.strip()]


@dataclass
class Extension:
    name: str  # folder name
    path: Path
    is_builtin: bool = False
    enabled: bool = True
    metadata: ExtensionMetadata | None = None
    remote: str | None = None
    branch: str | None = None
    commit_hash: str | None = None
    commit_date: int | None = None
    can_update: bool = False
    update_status: str = "unknown"  # "unknown" | "latest" | "behind" | "error: ..."
    install_error: str | None = None

    @property
    def canonical_name(self) -> str:
        return self.metadata.canonical_name if self.metadata else self.name.lower()

    def list_files(self, subdir: str, extension: str) -> list[Path]:
        folder = self.path / subdir
        if not folder.is_dir():
            return []
        return sorted(
            (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == extension),
            key=lambda p: p.name.lower(),
        )

    def read_info_from_repo(self) -> None:
        if not (self.path / ".git").exists():
            return
        self.remote = _git_out(self.path, "config", "--get", "remote.origin.url") or None
        self.branch = _git_out(self.path, "rev-parse", "--abbrev-ref", "HEAD") or None
        self.commit_hash = _git_out(self.path, "rev-parse", "HEAD") or None
        date = _git_out(self.path, "log", "-1", "--format=%ct")
        self.commit_date = int(date) if date.isdigit() else None

    def to_api(self) -> dict[str, Any]:
        """One entry of GET /sdapi/v1/extensions (A1111 field names)."""
        return {
            "name": self.name,
            "remote": self.remote or "",
            "branch": self.branch or "",
            "commit_hash": self.commit_hash or "",
            "version": (self.commit_hash or "")[:8],
            "commit_date": self.commit_date or 0,
            "enabled": self.enabled,
        }


def _git(cwd: Path | None, *args: str, timeout: float = GIT_TIMEOUT_S) -> subprocess.CompletedProcess:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true")
    cmd = ["git", "-c", "protocol.ext.allow=never", "-c", "protocol.fd.allow=never", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _git_out(cwd: Path, *args: str) -> str:
    try:
        result = _git(cwd, *args, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def check_clone_url(url: str) -> str:
    """Refuse URLs git would treat as options or as command-running remote helpers."""
    if not isinstance(url, str) or not url.strip():
        raise ExtensionError("install: the URL is empty")
    url = url.strip()
    if url.startswith("-"):
        raise ExtensionError(f"install: refusing URL {url!r}: it starts with '-' (git would read an option)")
    if _REMOTE_HELPER.match(url) or "ext::" in url:
        raise ExtensionError(
            f"install: refusing URL {url!r}: git remote-helper transports ('ext::') run commands"
        )
    if any(ord(c) < 32 for c in url):
        raise ExtensionError("install: refusing URL with control characters")
    return url


def folder_name_for(url: str, name: str | None = None) -> str:
    """The target folder name: the explicit name, else the last URL path part without `.git`."""
    if name is not None and name.strip():
        name = name.strip()
        if name in (".", "..") or ".." in name or "/" in name or "\\" in name or os.path.isabs(name):
            raise ExtensionError(f"install: invalid folder name {name!r}: no paths or '..' allowed")
        if not _SAFE_NAME.match(name):
            raise ExtensionError(
                f"install: invalid folder name {name!r}: use letters, digits, '_', '-', '.', '+', spaces"
            )
        return name
    tail = urllib.parse.urlparse(url).path if "://" in url else url
    tail = tail.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if tail.endswith(".git"):
        tail = tail[:-4]
    tail = re.sub(r"[^A-Za-z0-9_.+-]", "-", tail).lstrip(".-")
    if not tail or ".." in tail:
        raise ExtensionError(f"install: cannot derive a folder name from {url!r}; give one")
    return tail


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def disabled_extensions_option() -> dict[str, OptionInfo]:
    """The two A1111 settings this module reads; the app registers them in its Options."""
    return {
        "disabled_extensions": OptionInfo([], "Disable these extensions", do_not_save=False),
        "disable_all_extensions": OptionInfo(
            "none",
            "Disable all extensions (preserves the list of disabled extensions)",
            choices=["none", "extra", "all"],
        ),
    }


class ExtensionManager:
    """Everything the Extensions tab and the API do with extensions.

    `options` is the app's Options (A1111 keys `disabled_extensions`, `disable_all_extensions`).
    `allow_changes` is False when listening on a non-loopback address without
    `--enable-insecure-extension-access`: install, update and uninstall are then refused.
    """

    def __init__(
        self,
        extensions_dir: Path,
        builtin_dir: Path | None = None,
        options: Any = None,
        allow_changes: bool = True,
        disable_all: bool = False,
        disable_extra: bool = False,
        skip_install: bool = False,
        index_timeout_s: float = INDEX_TIMEOUT_S,
    ):
        self.extensions_dir = Path(extensions_dir)
        self.index_timeout_s = index_timeout_s
        self.builtin_dir = Path(builtin_dir) if builtin_dir else REPO_DIR / "extensions-builtin"
        self.options = options
        self.allow_changes = allow_changes
        self.disable_all = disable_all
        self.disable_extra = disable_extra
        self.skip_install = skip_install
        self.extensions: list[Extension] = []
        self._disabled_fallback: list[str] = []  # used when no Options object is given
        if options is not None:
            for key, info in disabled_extensions_option().items():
                if key not in options.data_labels:
                    options.add_option(key, info)

    @classmethod
    def from_args(cls, args: Any, paths: Any, options: Any = None) -> ExtensionManager:
        from sdwebui.config.flags import is_public

        allow = not is_public(args) or bool(getattr(args, "enable_insecure_extension_access", False))
        return cls(
            paths.extensions_dir,
            paths.builtin_extensions_dir,
            options,
            allow_changes=allow,
            disable_all=bool(getattr(args, "disable_all_extensions", False)),
            disable_extra=bool(getattr(args, "disable_extra_extensions", False)),
            skip_install=bool(getattr(args, "skip_install", False)),
        )

    # --- discovery ---
    @property
    def disabled_names(self) -> list[str]:
        if self.options is None:
            return list(self._disabled_fallback)
        return list(self.options.get("disabled_extensions", []) or [])

    def _set_disabled(self, names: list[str]) -> None:
        names = sorted(set(names))
        if self.options is None:
            self._disabled_fallback = names
            return
        self.options.set("disabled_extensions", names)
        self.options.save()

    def _all_disabled_mode(self) -> str:
        if self.disable_all:
            return "all"
        if self.disable_extra:
            return "extra"
        mode = self.options.get("disable_all_extensions", "none") if self.options is not None else "none"
        return mode if mode in ("none", "extra", "all") else "none"

    def discover(self) -> list[Extension]:
        """Scan both folders; built-ins first, then user extensions, each alphabetically."""
        disabled = set(self.disabled_names)
        mode = self._all_disabled_mode()
        state = self._read_install_state()
        found: list[Extension] = []
        for folder, builtin in ((self.builtin_dir, True), (self.extensions_dir, False)):
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
                if not path.is_dir() or path.name.startswith("."):
                    continue
                ext = Extension(name=path.name, path=path, is_builtin=builtin)
                ext.metadata = ExtensionMetadata.read(path, path.name)
                ext.enabled = path.name not in disabled and not (
                    mode == "all" or (mode == "extra" and not builtin)
                )
                entry = state.get(path.name) if not builtin else None
                if entry and entry.get("error"):
                    ext.install_error = entry["error"]
                    ext.enabled = False
                ext.read_info_from_repo()
                found.append(ext)
        self.extensions = found
        self._warn_missing_requirements()
        return found

    def active(self) -> list[Extension]:
        return [ext for ext in self.extensions if ext.enabled]

    def get(self, name: str) -> Extension:
        for ext in self.extensions or self.discover():
            if ext.name == name:
                return ext
        raise ExtensionError(f"no extension named {name!r}")

    def _warn_missing_requirements(self) -> None:
        loaded = {ext.canonical_name for ext in self.active()}
        for ext in self.active():
            for req in ext.metadata.requires() if ext.metadata else []:
                if not any(option in loaded for option in req.lower().split("|")):
                    log.warning("extension %s requires %s, which is not installed or enabled", ext.name, req)

    def ordered_script_files(
        self, subdir: str = "scripts", suffix: str = ".py"
    ) -> list[tuple[Extension, Path]]:
        """Script files of enabled extensions, ordered by metadata.ini Before/After (A1111 rules)."""
        active = self.active()
        loaded_exts = {ext.canonical_name for ext in active}
        scripts: dict[str, tuple[Extension, Path, list[str]]] = {}
        per_ext: dict[str, list[str]] = {ext.canonical_name: [] for ext in active}
        before: dict[str, list[str]] = {}
        for ext in active:
            for path in ext.list_files(subdir, suffix):
                key = ("builtin/" if ext.is_builtin else "") + ext.canonical_name + "/" + path.name
                section = f"{subdir}/{path.name}"
                md = ext.metadata
                after = md.script_requirements("After", section, subdir, loaded_exts) if md else []
                before[key] = md.script_requirements("Before", section, subdir, loaded_exts) if md else []
                scripts[key] = (ext, path, list(after))
                per_ext[ext.canonical_name].append(key)
        for key, targets in before.items():
            for target in targets:
                if target in scripts:
                    scripts[target][2].append(key)
                for other in per_ext.get(target, []):
                    scripts[other][2].append(key)
        for _key, (_ext, _path, after) in scripts.items():
            for item in list(after):
                if item not in scripts and item in per_ext:
                    after.remove(item)
                    after.extend(per_ext[item])
        order = topological_sort({key: value[2] for key, value in scripts.items()})
        return [(scripts[key][0], scripts[key][1]) for key in order]

    def javascript_files(self) -> list[Path]:
        return [p for ext in self.active() for p in ext.list_files("javascript", ".js")]

    def stylesheets(self) -> list[Path]:
        return [ext.path / "style.css" for ext in self.active() if (ext.path / "style.css").is_file()]

    # --- enable / disable ---
    def set_enabled(self, name: str, enabled: bool) -> None:
        """Takes effect at the next script reload ("Apply and restart UI")."""
        ext = self.get(name)
        disabled = set(self.disabled_names)
        if enabled:
            disabled.discard(name)
        else:
            disabled.add(name)
        self._set_disabled(sorted(disabled))
        ext.enabled = enabled

    # --- changes that run code: install / update / uninstall ---
    def _require_changes_allowed(self, action: str) -> None:
        if not self.allow_changes:
            raise ExtensionError(
                f"{action} refused: the server listens on a public address; "
                "start it with --enable-insecure-extension-access to allow extension changes"
            )

    def install(self, url: str, branch: str | None = None, name: str | None = None) -> Extension:
        """`git clone` any git URL (including local paths and file://) into extensions/<name>."""
        self._require_changes_allowed("install")
        url = check_clone_url(url)
        folder = folder_name_for(url, name)
        if branch is not None and (not branch.strip() or branch.startswith("-")):
            raise ExtensionError(f"install: invalid branch {branch!r}")
        self.extensions_dir.mkdir(parents=True, exist_ok=True)
        target = self.extensions_dir / folder
        if not target.resolve().is_relative_to(self.extensions_dir.resolve()):
            raise ExtensionError(f"install: folder {folder!r} escapes the extensions directory")
        if target.exists():
            raise ExtensionError(f"install: extension folder {folder!r} already exists")
        tmp = self.extensions_dir / f".installing-{folder}"
        shutil.rmtree(tmp, ignore_errors=True)
        args = ["clone", "--filter=blob:none"]
        if branch:
            args += ["--branch", branch.strip()]
        try:
            result = _git(None, *args, "--", url, str(tmp))
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExtensionError(f"install {folder}: git clone timed out") from exc
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExtensionError(f"install {folder}: git clone failed: {result.stderr.strip()[-500:]}")
        os.replace(tmp, target)
        self.discover()
        ext = self.get(folder)
        self.run_install_script(ext, force=True)
        return self.get(folder)

    def check_updates(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """`git fetch` each (or the named) extension and compare HEAD with its upstream."""
        out = {}
        for ext in self.extensions or self.discover():
            if names is not None and ext.name not in names:
                continue
            if not (ext.path / ".git").exists():
                continue
            fetch = _git(ext.path, "fetch", "--quiet")
            if fetch.returncode != 0:
                ext.update_status = f"error: {fetch.stderr.strip()[-200:]}"
            else:
                head = _git_out(ext.path, "rev-parse", "HEAD")
                upstream = _git_out(ext.path, "rev-parse", "@{u}")
                if not upstream:
                    ext.update_status = "unknown"
                else:
                    ext.update_status = "latest" if head == upstream else "behind"
            ext.can_update = ext.update_status == "behind"
            out[ext.name] = ext.update_status
        return out

    def update(self, name: str) -> Extension:
        """Fetch and move to the upstream commit; re-runs install.py when it changed."""
        self._require_changes_allowed("update")
        ext = self.get(name)
        if not (ext.path / ".git").exists():
            raise ExtensionError(f"update {name}: not a git checkout")
        for args in (("fetch", "--quiet"), ("reset", "--hard", "@{u}")):
            result = _git(ext.path, *args)
            if result.returncode != 0:
                raise ExtensionError(f"update {name}: git {args[0]} failed: {result.stderr.strip()[-500:]}")
        ext.read_info_from_repo()
        ext.update_status, ext.can_update = "latest", False
        self.run_install_script(ext)
        return ext

    def uninstall(self, name: str) -> None:
        self._require_changes_allowed("uninstall")
        ext = self.get(name)
        if ext.is_builtin:
            raise ExtensionError(f"uninstall {name}: built-in extensions can only be disabled")
        if not ext.path.resolve().is_relative_to(self.extensions_dir.resolve()):
            raise ExtensionError(f"uninstall {name}: folder is outside the extensions directory")
        shutil.rmtree(ext.path)
        state = self._read_install_state()
        state.pop(name, None)
        self._write_install_state(state)
        self._set_disabled([n for n in self.disabled_names if n != name])
        self.discover()

    # --- install.py ---
    def _read_install_state(self) -> dict[str, Any]:
        path = self.extensions_dir / INSTALL_STATE_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            return {}

    def _write_install_state(self, state: dict[str, Any]) -> None:
        if self.extensions_dir.is_dir():
            write_json_atomic(self.extensions_dir / INSTALL_STATE_FILE, state)

    def run_install_script(self, ext: Extension, force: bool = False) -> bool:
        """Run install.py in a subprocess (same Python) if new or changed. False on failure."""
        script = ext.path / "install.py"
        if not script.is_file() or ext.is_builtin:
            return True
        state = self._read_install_state()
        digest = file_sha256(script)
        entry = state.get(ext.name) or {}
        if not force and entry.get("sha256") == digest and not entry.get("error"):
            return True
        if self.skip_install:
            return True
        log.info("extension %s: running install.py", ext.name)
        error = run_install_py(ext.name, ext.path, self.extensions_dir)
        state[ext.name] = {"sha256": digest, "error": error}
        self._write_install_state(state)
        ext.install_error = error
        if error:
            log.error("extension %s disabled: %s", ext.name, error)
            ext.enabled = False
        return error is None

    def run_pending_installs(self) -> None:
        """At start-up: run install.py of enabled extensions that are new or changed since last run."""
        for ext in self.active():
            self.run_install_script(ext)

    # --- listings for UI and API ---
    def list_for_ui(self) -> list[dict[str, Any]]:
        return [
            {
                **ext.to_api(),
                "path": str(ext.path),
                "is_builtin": ext.is_builtin,
                "update_status": ext.update_status,
                "can_update": ext.can_update,
                "install_error": ext.install_error,
            }
            for ext in (self.extensions or self.discover())
        ]

    def extensions_for_api(self) -> list[dict[str, Any]]:
        """Body of GET /sdapi/v1/extensions."""
        return [ext.to_api() for ext in (self.extensions or self.discover())]

    def load_index(self, url_or_path: str) -> list[dict[str, Any]]:
        """Available extensions from an A1111-format index JSON (URL or local file; offline with a file).
        Refused on a public listener like install: it reads server files and reaches server-side ports."""
        self._require_changes_allowed("loading an extension index")
        text = read_index_text(url_or_path, timeout_s=self.index_timeout_s)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ExtensionError(f"extension index {url_or_path}: not valid JSON: {exc}") from exc
        entries = data.get("extensions") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise ExtensionError(f"extension index {url_or_path}: no 'extensions' list")
        installed_remotes = {
            _norm_url(ext.remote) for ext in (self.extensions or self.discover()) if ext.remote
        }
        installed_names = {ext.name.lower() for ext in self.extensions}
        out = []
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get("url"):
                continue
            url = str(entry["url"])
            out.append(
                {
                    "name": str(entry.get("name") or folder_name_for(url)),
                    "url": url,
                    "description": str(entry.get("description", "")),
                    "tags": list(entry.get("tags", [])),
                    "installed": _norm_url(url) in installed_remotes
                    or folder_name_for(url).lower() in installed_names,
                }
            )
        return out


def _norm_url(url: str | None) -> str:
    url = (url or "").strip().rstrip("/")
    return url[:-4] if url.endswith(".git") else url


def read_index_text(
    url_or_path: str, max_bytes: int = INDEX_MAX_BYTES, timeout_s: float = INDEX_TIMEOUT_S
) -> str:
    """The index's text: an http(s) URL, a file:// URL or a path; at most `max_bytes`, within `timeout_s`,
    and only from a regular file (never a device or FIFO)."""
    parsed = urllib.parse.urlparse(url_or_path)
    try:
        if parsed.scheme in ("http", "https"):
            data = _read_url(url_or_path, max_bytes, timeout_s)
        else:
            path = (
                Path(urllib.request.url2pathname(parsed.path))
                if parsed.scheme == "file"
                else Path(url_or_path)
            )
            data = _read_regular_file(path, max_bytes)
    except OSError as exc:
        raise ExtensionError(f"extension index {url_or_path}: cannot read: {exc}") from exc
    except ValueError as exc:  # over a limit, or not a regular file
        raise ExtensionError(f"extension index {url_or_path}: {exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExtensionError(f"extension index {url_or_path}: not UTF-8 text: {exc}") from exc


def _read_regular_file(path: Path, max_bytes: int) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then tells what was really opened.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"larger than {max_bytes} bytes")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes")
    return data


def _read_url(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """Socket timeouts bound each read, not the whole: the download runs in a daemon thread that stops itself
    at the deadline, and the caller stops waiting for it then (a server dripping bytes cannot hold it)."""
    deadline = time.monotonic() + timeout_s
    outcome: dict[str, Any] = {}

    def download() -> None:
        chunks: list[bytes] = []
        size = 0
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (http(s) only)
                while time.monotonic() < deadline and (chunk := response.read1(64 * 1024)):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ValueError(f"larger than {max_bytes} bytes")
                    chunks.append(chunk)
                outcome["data"] = b"".join(chunks) if time.monotonic() < deadline else None
        except (OSError, ValueError) as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=download, name="extension-index", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if "error" in outcome:
        raise outcome["error"]
    if outcome.get("data") is None:
        raise ValueError(f"not received within {timeout_s:g} s")
    return outcome["data"]


def topological_sort(dependencies: dict[str, list[str]]) -> list[str]:
    """Keys ordered so each comes after its dependencies; insertion order otherwise; cycles broken."""
    visited: set[str] = set()
    result: list[str] = []

    def visit(key: str, stack: tuple[str, ...]) -> None:
        if key in visited or key in stack:
            return
        for dep in dependencies.get(key, []):
            if dep in dependencies:
                visit(dep, (*stack, key))
        visited.add(key)
        result.append(key)

    for key in dependencies:
        visit(key, ())
    return result
