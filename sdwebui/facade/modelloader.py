"""A1111's `modules.modelloader`: finding model files, and `load_file_from_url` for an offline app.

The app never downloads: `load_file_from_url` returns the file when it is already in `model_dir` (where
A1111 would have saved it) and otherwise raises an error naming the file and the folder to put it in.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from pathlib import Path

log = logging.getLogger("webui.extensions")


class OfflineDownloadError(RuntimeError):
    """An extension asked for a file from the network; the app is offline."""


def friendly_name(file: str) -> str:
    if file.startswith("http"):
        file = urllib.parse.urlparse(file).path
    return os.path.splitext(os.path.basename(file))[0]


def load_file_from_url(url: str, *, model_dir: str, progress: bool = True, file_name: str | None = None,
                       hash_prefix: str | None = None, re_download: bool = False) -> str:  # fmt: skip
    """The path of `file_name` (default: the URL's last part) in `model_dir`; never downloads."""
    name = file_name or os.path.basename(urllib.parse.urlparse(url).path)
    path = Path(model_dir) / name
    if path.is_file() and not re_download:
        return str(path)
    raise OfflineDownloadError(
        f"{name} is not in {model_dir}: the app does not download files (it runs offline); "
        f"get it from {url} and put it there"
    )


def _listed(folder: str | None, ext_filter: list[str] | None, ext_blacklist: list[str] | None) -> list[str]:
    if not folder or not os.path.isdir(folder):
        return []
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            full = os.path.join(root, file)
            if ext_filter and not any(file.lower().endswith(e.lower()) for e in ext_filter):
                continue
            if ext_blacklist and any(file.lower().endswith(e.lower()) for e in ext_blacklist):
                continue
            found.append(full)
    return found


def load_models(model_path: str, model_url: str | None = None, command_path: str | None = None,
                ext_filter: list[str] | None = None, download_name: str | None = None,
                ext_blacklist: list[str] | None = None, hash_prefix: str | None = None) -> list[str]:  # fmt: skip
    """Model files in `command_path` (a flag's folder) and `model_path` (A1111); with none found and a
    `model_url`, the file A1111 would download, when it is already there (else a warning, no download)."""
    found = list(dict.fromkeys(_listed(command_path, ext_filter, ext_blacklist) +
                               _listed(model_path, ext_filter, ext_blacklist)))  # fmt: skip
    if not found and model_url:
        try:
            found.append(load_file_from_url(model_url, model_dir=model_path, file_name=download_name))
        except OfflineDownloadError as exc:
            log.warning("%s", exc)
    return found


def load_upscalers() -> None:
    """Refresh `shared.sd_upscalers` from the app's upscaler files."""
    from sdwebui.facade import upscaler

    upscaler.refresh_sd_upscalers()
