"""One network file matched to a model: the typed record the patch applies."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

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
    hash: str  # full AutoV3 (safetensors) or sha256 (pickles)
    metadata: dict[str, str]
    modules: dict[str, NetworkModule] = field(default_factory=dict)  # target -> module
    unmatched: list[str] = field(default_factory=list)  # network keys naming no module of the model

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


def load_network(path: str | Path, index: ModuleIndex, name: str | None = None) -> LoraNetwork:
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
        hash=network_hash(path, content.metadata),
        metadata=content.metadata,
        unmatched=sorted(foreign),
    )
    for network_key, parts in groups.items():
        target = index.resolve(network_key)
        if target is None:
            network.unmatched.append(network_key)
            continue
        try:
            network.modules[target] = build_module(network_key, target, parts)
        except LoraError as error:
            raise LoraError(f"{path}: {error}") from None
    if not network.modules:
        sample = ", ".join(sorted(content.tensors)[:3]) or "no tensors"
        raise LoraError(f"{path}: no key matches a module of the loaded model (keys like {sample})")
    return network
