"""LoRA / LyCORIS networks and textual-inversion embeddings: reading, key mapping, maths, reversible patches.

Reading a network for a model::

    index = build_index(model)                      # every name a file may use for each module
    network = load_network(path, index)             # LoraNetwork: name, alias, hash, metadata, modules
    patch = LoraPatch([NetworkWeight(network, te=1.0, unet=0.8)], cache)
    undo = patch.apply(model)                       # in place, under no_grad; the lease's Patch protocol
    ...
    undo()                                          # bit-exact originals written back

- ``LoraNetwork.modules`` maps a target (``unet.<path>``, ``text_encoder.<path>``, ``text_encoder_2.<path>``)
  to a ``NetworkModule`` whose ``weights`` is one of LoraWeights (LoRA/LoCon, Tucker ``lora_mid``),
  HadaWeights (LoHa), LokrWeights (LoKr), IA3Weights, OftWeights / BoftWeights (OFT, BOFT: rotations of
  the output rows), GloraWeights (GLoRA), FullWeights (``diff``); plus alpha, scale,
  ``dora_scale`` (DoRA) and ``diff_b``.
- ``compute_delta(weight, module, multiplier)`` is the fp32 difference one module makes.
- ``LoraPatch.apply``: if it raises, the model is already restored. A difference that does not depend on
  the weight (LoRA, LoHa, LoKr, diff) is built from the network's factors (held by the library, never
  re-read for a new multiplier). A weight in RAM is copied for the job and written back from the copy
  (``undo``) while the RAM budget (the ``DeltaCache`` limit, a quarter of the machine's RAM by default:
  copies first, cached differences in what is left) has room, else undone by subtraction as below; ``LoraPatch.reweight(undo)`` then writes ``copy + new * d`` in one pass, the very bits of a
  fresh apply. On an accelerator the difference is subtracted again instead (no copy over the bus): the
  few elements where rounding makes that inexact are kept and written back, a fingerprint proves the weight
  bit-identical, and a reweight is one more step ``W += (new - old) * d``, undone step by step.
  On the CPU the dense multiplier-1 difference is kept in the ``DeltaCache`` while that has room (on a GPU
  rebuilding it is cheaper than a copy).
  Weight-dependent differences (DoRA, IA3, OFT, BOFT, GLoRA) keep a CPU copy of the weight, and their
  multiplier-1 differences are cached per (file identity, target, checkpoint) in the ``DeltaCache``
  (bounded in bytes, least recently used out), so a new multiplier only re-scales.
- Flux / SD3 (``dit_keys``): kohya, BFL/ComfyUI and diffusers/PEFT names through the loader's rule tables;
  a fused layer's up matrix (qkv) is split by rows. A network for another family is an error naming both. Each network's difference is taken against the
  unpatched weight (A1111 chains them; this only differs when two networks with DoRA share a module).
- ``Lora hashes:`` shows ``LoraNetwork.shorthash`` (AutoV3: sha256 of the safetensors payload, 12 hex),
  computed when first asked and kept in the app's ``HashCache`` (cache.json, section ``hashes-addnet``).
- ``read_embedding(path)`` reads A1111 textual inversions (``string_to_param``, ``emb_params``, SDXL
  ``clip_l``/``clip_g``, diffusers ``{token: tensor}``); pickles go through the safe unpickler.
"""

from sdwebui.models.lora.cache import DeltaCache, DeltaKey
from sdwebui.models.lora.deltas import base_delta, compute_delta, scale_of
from sdwebui.models.lora.embeddings import Embedding, read_embedding
from sdwebui.models.lora.errors import EmbeddingError, LoraError
from sdwebui.models.lora.files import autov3_hash, read_network_file, read_safetensors_metadata
from sdwebui.models.lora.keys import ModuleIndex, build_index
from sdwebui.models.lora.modules import (
    BoftWeights,
    FullWeights,
    GloraWeights,
    HadaWeights,
    IA3Weights,
    LokrWeights,
    LoraWeights,
    NetworkModule,
    OftWeights,
)
from sdwebui.models.lora.network import LoraNetwork, load_network
from sdwebui.models.lora.patch import LoraPatch, NetworkWeight, applied, resolve_module
from sdwebui.models.lora.undo import Undo

__all__ = [
    "BoftWeights",
    "GloraWeights",
    "OftWeights",
    "DeltaCache",
    "DeltaKey",
    "Embedding",
    "EmbeddingError",
    "FullWeights",
    "HadaWeights",
    "IA3Weights",
    "LokrWeights",
    "LoraError",
    "LoraNetwork",
    "LoraPatch",
    "LoraWeights",
    "ModuleIndex",
    "NetworkModule",
    "NetworkWeight",
    "applied",
    "autov3_hash",
    "base_delta",
    "build_index",
    "compute_delta",
    "load_network",
    "read_embedding",
    "read_network_file",
    "read_safetensors_metadata",
    "resolve_module",
    "scale_of",
    "Undo",
]
