"""A1111's `/file=<path>` route for extension assets: `/file=extensions/<name>/javascript/x.js` (what A1111's
`webpath()` writes for a file under its root), `/file=extensions-builtin/<name>/...`, or an absolute path.

Only regular files inside an enabled extension's folder are served; no hidden component (`.git`), no path
that leaves the folder (`..`, symlinks out of it). Outside those folders: 403; inside but missing: 404.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Protocol

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse

URL_PREFIXES = {"extensions": False, "extensions-builtin": True}  # A1111 folder name -> is_builtin


class AssetRoot(Protocol):
    """One folder whose files `/file=` serves: an enabled extension (sdwebui.extensions.manager.Extension)."""

    name: str
    path: Path
    is_builtin: bool


def resolve_asset(requested: str, roots: Iterable[AssetRoot]) -> Path:
    """The file `/file=<requested>` names; HTTPException 403 (not under a root) or 404 (no such file)."""
    roots = list(roots)
    if "\\" in requested or "\x00" in requested:
        raise HTTPException(403, "file=: not an allowed path")
    parts = PurePosixPath(requested).parts
    if any(part == ".." or part.startswith(".") for part in parts):
        raise HTTPException(403, "file=: hidden or parent path components are not served")
    candidate = _candidate(requested, parts, roots)
    resolved = candidate.resolve()
    if not any(resolved.is_relative_to(root.path.resolve()) for root in roots):
        raise HTTPException(403, "file=: only files inside extension folders are served")
    if not resolved.is_file():
        raise HTTPException(404, f"file=: no such file: {requested}")
    return resolved


def _candidate(requested: str, parts: tuple[str, ...], roots: list[AssetRoot]) -> Path:
    if requested.startswith("/"):
        return Path(requested)
    if len(parts) >= 3 and parts[0] in URL_PREFIXES:
        builtin = URL_PREFIXES[parts[0]]
        for root in roots:
            if root.name == parts[1] and root.is_builtin == builtin:
                return root.path.joinpath(*parts[2:])
    raise HTTPException(403, "file=: only files inside extension folders are served")


def install_file_route(
    app: FastAPI, roots: Callable[[], Iterable[AssetRoot]], guard: Callable[..., object] | None = None
) -> None:
    """Add `GET /file={path}` to `app`; `roots` is read per request (extensions can be enabled at any time);
    `guard`: a FastAPI dependency in front of it (the UI's login)."""
    dependencies = [Depends(guard)] if guard is not None else []

    @app.get("/file={requested:path}", include_in_schema=False, dependencies=dependencies)
    def extension_file(requested: str) -> FileResponse:
        return FileResponse(resolve_asset(requested, roots()))
