"""Finding checkpoints and VAEs on disk (cheap: nothing is read but directory listings), and the one lookup
that turns a requested name into a file.

Safety rule: a name from a request (API, UI, infotext, script) becomes a file only through `find_listed`, a
match among what discovery listed. Discovery lists only regular files (and diffusers folders) whose real
location is inside a configured model folder: a device, FIFO or socket is never listed, nor a symlink
leading out of the folders the owner configured (a link into another configured folder is fine).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.model import CheckpointInfo

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".gguf")  # .gguf: quantized Flux / SD3 transformers
VAE_EXTENSIONS = (".safetensors", ".pt", ".ckpt", ".bin")
# The embedded default model ships with the code (not the data dir); listed after the user's models.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "default"

T = TypeVar("T")


@dataclass(frozen=True)
class ModelFile:
    """A discovered model file of any kind (VAE now; LoRA, upscaler, ControlNet, text encoder reuse it)."""

    path: Path  # real location (resolved)
    name: str  # file name relative to its folder, as A1111 lists it (e.g. "vae-ft-mse.safetensors")

    def names(self) -> tuple[str, ...]:
        """What a request may call it by."""
        return (self.name, str(self.path), self.path.name)


VaeInfo = ModelFile  # the name the manager and A1111-style code use for VAEs


class NotListedError(CheckpointLoadError):
    """A requested model name matches nothing discovery listed; `field` is the request field it came from."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def find_listed(
    name: str, entries: Sequence[T], names: Callable[[T], Iterable[str]], kind: str, field: str
) -> T:
    """The entry that `name` names, among `entries` listed by discovery, and nothing else: a path that was not
    listed is "not found" whether it exists or not (no file is touched, so no existence oracle)."""
    wanted = str(name).strip()
    for entry in entries:
        if wanted and wanted in names(entry):
            return entry
    known = ", ".join(str(next(iter(names(e)))) for e in entries[:20]) or "none"
    raise NotListedError(f"{kind} {name!r} not found; known: {known} (try refresh)", field)


def checkpoint_names(info: CheckpointInfo) -> tuple[str, ...]:
    """What a request may call a checkpoint by: title, name, file name (with or without extension), listed
    path, short or full hash."""
    hashes = (info.sha256, info.shorthash) if info.sha256 else ()
    return (
        info.title,
        info.name,
        info.filename,
        Path(info.filename).name,
        info.title.split(" [")[0],
        *hashes,
    )


def check_still_listable(info: CheckpointInfo) -> None:
    """Right before a load: the listed path is still a regular file (or folder); a file replaced by a FIFO or
    device since the last refresh would block the hash thread forever."""
    try:
        mode = os.stat(info.path).st_mode
    except OSError:
        raise CheckpointLoadError(f"{info.path}: no longer exists (refresh the list)") from None
    wanted = stat.S_ISDIR if info.is_diffusers_folder else stat.S_ISREG
    if not wanted(mode):
        raise CheckpointLoadError(f"{info.path}: no longer a regular file (refresh the list)")


def _real_roots(dirs: Iterable[Path]) -> list[Path]:
    return [Path(d).resolve() for d in dirs]


def _entry_kind(entry: Path, roots: Sequence[Path]) -> str | None:
    """The kind, `file`, `dir` or None (skip): anything but a regular file or folder, or a real location outside
    every configured folder (a symlink leading out), is skipped."""
    try:
        mode = entry.stat().st_mode
        real = entry.resolve()
    except (OSError, RuntimeError):  # dangling link, loop, no permission
        return None
    if not any(real.is_relative_to(root) for root in roots):
        return None
    if stat.S_ISREG(mode):
        return "file"
    return "dir" if stat.S_ISDIR(mode) else None


def _beside(candidate: Path, folder: Path) -> bool:
    """`candidate` is a regular file really located in `folder` (sidecars, `<name>.vae.pt`)."""
    try:
        return stat.S_ISREG(candidate.stat().st_mode) and candidate.resolve().parent == folder
    except (OSError, RuntimeError):
        return False


def _is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "model_index.json").is_file() and (path / "unet").is_dir()


def _sidecar(path: Path) -> Path | None:
    for suffix in (".yaml", ".json"):
        candidate = path.with_suffix(suffix)
        if _beside(candidate, path.parent):
            return candidate
    return None


def checkpoint_info(path: Path, root: Path | None = None, sha256: str | None = None) -> CheckpointInfo:
    listed = Path(path)
    path = listed.resolve()
    folder = _is_diffusers_folder(path)
    relative = Path(path.name)
    if root is not None and listed.is_relative_to(root):
        relative = listed.relative_to(root)  # a link into another configured folder keeps its listed name
    elif root is not None and path.is_relative_to(root.resolve()):
        relative = path.relative_to(root.resolve())
    name = relative.as_posix() if folder else relative.with_suffix("").as_posix()
    file_title = relative.as_posix()
    title = f"{file_title} [{sha256[:10]}]" if sha256 else file_title
    return CheckpointInfo(
        path=path,
        name=name,
        title=title,
        filename=str(path),
        sha256=sha256,
        is_diffusers_folder=folder,
        config_path=None if folder else _sidecar(path),
    )


def _walk(
    folder: Path, roots: Sequence[Path], keep: Callable[[Path], bool], is_unit: Callable[[Path], bool]
) -> list[Path]:
    """Files under `folder` that `keep` accepts, and folders that count as one model (`is_unit`, not descended
    into), by the rules in the module docstring; each real folder is visited once (no link loops)."""
    found: list[Path] = []
    seen: set[Path] = set()

    def visit(current: Path) -> None:
        real = current.resolve()
        if real in seen:
            return
        seen.add(real)
        try:
            entries = sorted(current.iterdir(), key=lambda p: p.name.lower())
        except OSError:  # unreadable folder: nothing listed from it
            return
        for entry in entries:
            kind = None if entry.name.startswith(".") else _entry_kind(entry, roots)
            if kind == "dir" and is_unit(entry):
                found.append(entry)
            elif kind == "dir":
                visit(entry)
            elif kind == "file" and keep(entry):
                found.append(entry)

    if _entry_kind(folder, _real_roots([folder])) == "dir":
        visit(folder)
    return found


def _is_checkpoint_file(path: Path) -> bool:
    name = path.name.lower()
    return path.suffix.lower() in CHECKPOINT_EXTENSIONS and not name.endswith(
        tuple(".vae" + e for e in VAE_EXTENSIONS)
    )


def _owner_file(path: Path) -> bool:
    """A --ckpt named by the owner may live anywhere, but must still be a regular file or diffusers folder."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or (stat.S_ISDIR(mode) and _is_diffusers_folder(path))


def list_checkpoints(
    dirs: Sequence[Path],
    extra_files: Sequence[Path] = (),
    include_default: bool = True,
    linked_roots: Sequence[Path] = (),
) -> list[CheckpointInfo]:
    """User dirs first (in order), then --ckpt files, then the embedded default model; first name wins.
    `linked_roots`: other configured folders that symlinks in `dirs` may point into."""
    folders = [Path(d) for d in dirs] + ([DEFAULT_MODEL_DIR] if include_default else [])
    roots = _real_roots([*folders, *linked_roots])
    infos: list[CheckpointInfo] = []
    seen: set[str] = set()
    sources: list[tuple[Path | None, list[Path]]] = [
        (d, _walk(d, roots, _is_checkpoint_file, _is_diffusers_folder)) for d in map(Path, dirs)
    ]
    sources.append((None, [Path(f) for f in extra_files if _owner_file(Path(f))]))
    if include_default:
        default = _walk(DEFAULT_MODEL_DIR, roots, _is_checkpoint_file, _is_diffusers_folder)
        sources.append((DEFAULT_MODEL_DIR, default))
    for root, paths in sources:
        for path in paths:
            info = checkpoint_info(path, root)
            if info.name in seen or info.filename in {i.filename for i in infos}:
                continue
            seen.add(info.name)
            infos.append(info)
    return infos


def _never(path: Path) -> bool:
    return False


def _is_vae_file(path: Path) -> bool:
    return path.suffix.lower() in VAE_EXTENSIONS


def _is_named_vae(path: Path) -> bool:
    return _is_vae_file(path) and ".vae." in path.name


def list_model_files(
    dirs: Sequence[Path], extensions: Sequence[str], linked_roots: Sequence[Path] = ()
) -> list[ModelFile]:
    """Model files of one kind (VAE, and later LoRA, upscaler, ControlNet, text encoder) under `dirs`, by the
    rules in the module docstring; look a requested name up with `find_listed(..., ModelFile.names, ...)`."""
    roots = _real_roots([*dirs, *linked_roots])
    wanted = tuple(e.lower() for e in extensions)
    files: list[ModelFile] = []
    for d in map(Path, dirs):
        for path in _walk(d, roots, lambda p: p.suffix.lower() in wanted, _never):
            files.append(ModelFile(path.resolve(), path.relative_to(d).as_posix()))
    return files


def list_vaes(
    dirs: Sequence[Path], checkpoint_dirs: Sequence[Path] = (), linked_roots: Sequence[Path] = ()
) -> list[ModelFile]:
    """models/VAE/** files plus ``*.vae.*`` files next to checkpoints."""
    roots = [*checkpoint_dirs, *linked_roots]
    vaes = list_model_files(dirs, VAE_EXTENSIONS, roots)
    all_roots = _real_roots([*dirs, *roots])
    for d in map(Path, checkpoint_dirs):
        for path in _walk(d, all_roots, _is_named_vae, _never):
            vaes.append(ModelFile(path.resolve(), path.name))
    return vaes


def automatic_vae(checkpoint: CheckpointInfo, vaes: Sequence[ModelFile]) -> ModelFile | None:
    """A1111 "Automatic": ``<checkpoint>.vae.<ext>`` next to it, else a VAE file named like the checkpoint."""
    path = Path(checkpoint.path)
    base = path if checkpoint.is_diffusers_folder else path.with_suffix("")
    for ext in VAE_EXTENSIONS:
        candidate = base.parent / f"{base.name}.vae{ext}"
        if _beside(candidate, base.parent.resolve()):
            return ModelFile(candidate.resolve(), candidate.name)
    stem = base.name
    for vae in vaes:
        if vae.path.name.split(".")[0] == stem:
            return vae
    return None
