"""One network file matched to a model: the typed record the patch applies."""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdwebui.models.hashing import HashCache
from sdwebui.models.lora.dit_keys import check_family
from sdwebui.models.lora.errors import LoraError
from sdwebui.models.lora.files import FileIdentity, network_hash, read_network_file
from sdwebui.models.lora.keys import ModuleIndex, split_key
from sdwebui.models.lora.modules import NetworkModule, build_module

SHORTHASH_LENGTH = 12  # what A1111 writes in "Lora hashes:"


@dataclass
class LoraNetwork:
    name: str  # file name without extension (relative to the Lora folder when listed)
    alias: str  # ss_output_name, else name
    path: Path
    identity: FileIdentity
    metadata: dict[str, str]
    modules: dict[str, NetworkModule] = field(default_factory=dict)  # target -> module
    unmatched: list[str] = field(default_factory=list)  # network keys naming no module of the model
    hashes: HashCache | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def hash(self) -> str:
        """Full AutoV3 (safetensors) or sha256 (pickles): computed when first asked (the infotext), once;
        "" (no hash written) when the file changed or went since it was read: its digest is not this network's."""
        try:
            if FileIdentity.of(self.path) != self.identity:
                return ""
            return network_hash(self.path, self.metadata, self.hashes)
        except OSError:
            return ""

    @property
    def shorthash(self) -> str:
        return self.hash[:SHORTHASH_LENGTH]

    @property
    def training_metadata(self) -> dict[str, str]:
        return {k: v for k, v in self.metadata.items() if k.startswith("ss_")}


def group_keys(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """({network key: {part: tensor}}, keys that are no network weight)."""
    groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    foreign: list[str] = []
    for key, tensor in tensors.items():
        split = split_key(key)
        if split is None:
            foreign.append(key)
        else:
            groups[split[0]][split[1]] = tensor
    return dict(groups), foreign


def split_fused(
    network_key: str, targets: tuple[tuple[str, int], ...], parts: dict[str, torch.Tensor]
) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """A LoRA on a fused layer (Flux/SD3 qkv) as one LoRA per diffusers module: the up matrix's rows
    split in the modules' order, the down matrix and alpha shared (so alpha / rank stays the same)."""
    unsupported = sorted(set(parts) - {"lora_up.weight", "lora_down.weight", "alpha"})
    if unsupported or "lora_up.weight" not in parts or "lora_down.weight" not in parts:
        raise LoraError(
            f"{network_key}: a fused layer takes LoRA up/down (+ alpha) only (has {', '.join(sorted(parts))})"
        )
    up, sizes = parts["lora_up.weight"], [rows for _, rows in targets]
    if up.shape[0] != sum(sizes):
        raise LoraError(f"{network_key}: up matrix of {up.shape[0]} rows for a fused layer of {sum(sizes)}")
    shared = {k: v for k, v in parts.items() if k != "lora_up.weight"}
    chunks = torch.split(up, sizes, dim=0)
    return [
        (target, {**shared, "lora_up.weight": chunk})
        for (target, _), chunk in zip(targets, chunks, strict=True)
    ]


def load_network(
    path: str | Path, index: ModuleIndex, name: str | None = None, hashes: HashCache | None = None
) -> LoraNetwork:
    """Read a LoRA/LyCORIS/PEFT file and bind its keys to the model's modules.

    A file none of whose keys name a module of the model is an error naming the file; keys that name
    nothing while others match are kept in ``unmatched`` (A1111 logs them and goes on).
    """
    path = Path(path)
    content = read_network_file(path)
    groups, foreign = group_keys(content.tensors)
    network = LoraNetwork(
        name=name or path.stem,
        alias=content.metadata.get("ss_output_name") or name or path.stem,
        path=path,
        identity=FileIdentity.of(path),
        hashes=hashes,
        metadata=content.metadata,
        unmatched=sorted(foreign),
    )
    mismatch = check_family(path, sorted(content.tensors), content.metadata, index.family)
    if mismatch:
        raise LoraError(mismatch)
    for network_key, parts in groups.items():
        target = index.resolve(network_key)
        fused = index.fused.get(network_key) if target is None else None
        if target is None and fused is None:
            network.unmatched.append(network_key)
            continue
        try:
            pieces = split_fused(network_key, fused, parts) if fused else [(target, parts)]
            for piece_target, piece in pieces:
                network.modules[piece_target] = build_module(network_key, piece_target, piece)
        except LoraError as error:
            raise LoraError(f"{path}: {error}") from None
    if not network.modules:
        sample = ", ".join(sorted(content.tensors)[:3]) or "no tensors"
        raise LoraError(f"{path}: no key matches a module of the loaded model (keys like {sample})")
    return network
