"""Reading network files: tensors + metadata of .safetensors / .pt / .ckpt, and A1111's AutoV3 hash."""

from __future__ import annotations

import hashlib
import json
import mmap
from dataclasses import dataclass
from pathlib import Path

import safetensors
import torch

from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.hashing import HashCache
from sdwebui.models.lora.errors import LoraError
from sdwebui.models.safe_pickle import load_pickled_checkpoint

NETWORK_SUFFIXES = (".safetensors", ".pt", ".ckpt")
_CHUNK = 1 << 20
_HEADER_LIMIT = 100 << 20  # safetensors refuses headers over 100 MB too


@dataclass(frozen=True)
class FileIdentity:
    """What makes two reads of a path the same file: a changed mtime or size invalidates cached deltas."""

    path: str
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        stat = Path(path).stat()
        return cls(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@dataclass
class NetworkFile:
    """The raw content of one file: every tensor by key, and the safetensors metadata (strings)."""

    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]


def autov3_hash(path: str | Path) -> str:
    """sha256 of a .safetensors file's tensor payload (the bytes after the 8-byte length and the JSON header).

    This is the kohya "addnet" hash A1111 uses for LoRAs; its first 12 hex digits are what
    ``Lora hashes:`` shows. Metadata edits do not change it, tensor edits do. The file is mapped, not read
    into a buffer: the pages safetensors mapped to load the tensors are the ones hashed.
    """
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        if Path(path).stat().st_size <= 8 + header_size:
            return hashlib.sha256(b"").hexdigest()
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                return hashlib.sha256(view[8 + header_size :]).hexdigest()
            finally:
                view.release()


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


ADDNET_SECTION = "hashes-addnet"  # A1111's cache.json section for these hashes


def network_hash(path: Path, metadata: dict[str, str], hashes: HashCache | None = None) -> str:
    """The full hash A1111 records: kohya's precomputed ``sshs_model_hash`` if present, else computed
    (AutoV3 for .safetensors, plain file sha256 for pickles), through the app's hash cache when given."""
    if metadata.get("sshs_model_hash"):
        return metadata["sshs_model_hash"]
    if path.suffix.lower() != ".safetensors":
        return hashes.sha256(path) if hashes is not None else sha256_of_file(path)
    cached = hashes.cached(path, ADDNET_SECTION) if hashes is not None else None
    if cached is not None:
        return cached
    stat = path.stat()  # before reading: a file rewritten meanwhile is not recorded as this digest
    digest = autov3_hash(path)
    if hashes is not None:
        hashes.store(path, digest, ADDNET_SECTION, stat)
    return digest


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """Only the JSON header's ``__metadata__``, without touching tensors (for listings)."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 2 <= size <= _HEADER_LIMIT:
                raise ValueError(f"header length {size} out of range")
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as error:
        raise LoraError(f"{path}: not a readable safetensors file: {error}") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in (metadata or {}).items()}


def read_network_file(path: str | Path) -> NetworkFile:
    """All tensors of a network file; pickles go through the safe unpickler (code is refused, never run)."""
    path = Path(path)
    if not path.is_file():
        raise LoraError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in NETWORK_SUFFIXES:
        raise LoraError(f"{path}: not a network file (expected one of {', '.join(NETWORK_SUFFIXES)})")
    if suffix == ".safetensors":
        try:
            with safetensors.safe_open(str(path), framework="pt") as handle:
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
                metadata = dict(handle.metadata() or {})
        except Exception as error:  # SafetensorError/OSError/... for truncated or foreign files
            raise LoraError(f"{path}: not a readable safetensors file: {error}") from None
        return NetworkFile(path, tensors, metadata)
    try:
        state = load_pickled_checkpoint(path)
    except CheckpointLoadError as error:
        raise LoraError(str(error)) from None
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LoraError(f"{path}: holds a {type(state).__name__}, not a dict of tensors")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return NetworkFile(path, tensors, {})
