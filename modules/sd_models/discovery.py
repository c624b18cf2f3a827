"""Finding checkpoints and VAEs on disk (cheap: nothing is read but directory listings)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modules.sd_models.model import CheckpointInfo

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")
VAE_EXTENSIONS = (".safetensors", ".pt", ".ckpt", ".bin")
# The embedded default model ships with the code (not the data dir); listed after the user's models.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "default"


@dataclass(frozen=True)
class VaeInfo:
    path: Path
    name: str  # file name relative to its VAE dir, as A1111 lists it (e.g. "vae-ft-mse.safetensors")


def _is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "model_index.json").is_file() and (path / "unet").is_dir()


def _sidecar(path: Path) -> Path | None:
    for suffix in (".yaml", ".json"):
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def checkpoint_info(path: Path, root: Path | None = None, sha256: str | None = None) -> CheckpointInfo:
    path = Path(path).resolve()
    folder = _is_diffusers_folder(path)
    relative = (
        path.relative_to(root.resolve()) if root and path.is_relative_to(root.resolve()) else Path(path.name)
    )
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


def _walk(root: Path) -> list[Path]:
    """Checkpoint files and diffusers folders under root (not descending into diffusers folders)."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir(), key=lambda p: p.name.lower()):
        if entry.name.startswith("."):
            continue
        if _is_diffusers_folder(entry):
            found.append(entry)
        elif entry.is_dir():
            found.extend(_walk(entry))
        elif entry.suffix.lower() in CHECKPOINT_EXTENSIONS and not entry.name.lower().endswith(
            tuple(".vae" + e for e in VAE_EXTENSIONS)
        ):
            found.append(entry)
    return found


def list_checkpoints(
    dirs: Sequence[Path], extra_files: Sequence[Path] = (), include_default: bool = True
) -> list[CheckpointInfo]:
    """User dirs first (in order), then --ckpt files, then the embedded default model; first name wins."""
    infos: list[CheckpointInfo] = []
    seen: set[str] = set()
    sources: list[tuple[Path | None, list[Path]]] = [(Path(d), _walk(Path(d))) for d in dirs]
    sources.append((None, [Path(f) for f in extra_files if Path(f).exists()]))
    if include_default:
        sources.append((DEFAULT_MODEL_DIR, _walk(DEFAULT_MODEL_DIR)))
    for root, paths in sources:
        for path in paths:
            info = checkpoint_info(path, root)
            if info.name in seen or info.filename in {i.filename for i in infos}:
                continue
            seen.add(info.name)
            infos.append(info)
    return infos


def list_vaes(dirs: Sequence[Path], checkpoint_dirs: Sequence[Path] = ()) -> list[VaeInfo]:
    """models/VAE/** files plus ``*.vae.*`` files next to checkpoints."""
    vaes: list[VaeInfo] = []
    for d in map(Path, dirs):
        if d.is_dir():
            for path in sorted(d.rglob("*")):
                if path.is_file() and path.suffix.lower() in VAE_EXTENSIONS:
                    vaes.append(VaeInfo(path.resolve(), path.relative_to(d).as_posix()))
    for d in map(Path, checkpoint_dirs):
        if d.is_dir():
            for path in sorted(d.rglob("*.vae.*")):
                if path.suffix.lower() in VAE_EXTENSIONS:
                    vaes.append(VaeInfo(path.resolve(), path.name))
    return vaes


def automatic_vae(checkpoint: CheckpointInfo, vaes: Sequence[VaeInfo]) -> VaeInfo | None:
    """A1111 "Automatic": ``<checkpoint>.vae.<ext>`` next to it, else a VAE file named like the checkpoint."""
    path = Path(checkpoint.path)
    base = path if checkpoint.is_diffusers_folder else path.with_suffix("")
    for ext in VAE_EXTENSIONS:
        candidate = base.parent / f"{base.name}.vae{ext}"
        if candidate.is_file():
            return VaeInfo(candidate.resolve(), candidate.name)
    stem = base.name
    for vae in vaes:
        if vae.path.name.split(".")[0] == stem:
            return vae
    return None
