"""CLIP tokenizers built offline from the BPE vocabulary that open-clip-torch ships in its package.

SD1 and SDXL's CLIP-L pad with ``<|endoftext|>``; SD2 and SDXL's OpenCLIP-bigG pad with ``!`` (id 0),
as the tokenizers published with those models do.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers costs a second to import: only when a tokenizer is built
    import transformers

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
OPENCLIP_PAD_TOKEN = "!"
VOCAB_SIZE = 49408
MAX_LENGTH = 77


def bpe_vocab_path() -> Path:
    # Locate the package without importing it (importing open_clip pulls in torchvision and more).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open-clip-torch is not installed; it ships the CLIP BPE vocabulary")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip BPE vocabulary not found at {path}")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """vocab (token -> id) and merges exactly as OpenAI CLIP's SimpleTokenizer builds them."""
    lines = gzip.open(bpe_vocab_path()).read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1])
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(pair) for pair in merges]
    tokens += [START_TOKEN, END_TOKEN]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(
            f"CLIP vocabulary from {bpe_vocab_path()} has {len(vocab)} tokens, expected {VOCAB_SIZE}"
        )
    return vocab, merges


def build_clip_tokenizer(pad_token: str = END_TOKEN) -> transformers.CLIPTokenizer:
    """A fresh CLIPTokenizer (max length 77); ``pad_token="!"`` for the OpenCLIP text encoders."""
    from sdwebui.models.libraries import import_transformers

    import_transformers()  # a request thread may build this while the model load imports transformers
    import transformers

    vocab, merges = clip_vocab_and_merges()
    if pad_token not in vocab:
        raise ValueError(f"pad token {pad_token!r} is not in the CLIP vocabulary")
    return transformers.CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        pad_token=pad_token,
        model_max_length=MAX_LENGTH,
    )


def build_openclip_tokenizer() -> transformers.CLIPTokenizer:
    return build_clip_tokenizer(pad_token=OPENCLIP_PAD_TOKEN)


def shared_clip_tokenizer(pad_token: str = END_TOKEN) -> transformers.CLIPTokenizer:
    """One tokenizer per pad token for the whole process, shared by every loaded model.

    Building one costs ~0.1 s (the BPE merges table), which would otherwise be paid on every checkpoint load.
    Callers must treat it as read-only: never add tokens or change its settings.
    """
    return _cached_tokenizer(pad_token)  # positional, so f() and f(END_TOKEN) hit the same cache entry


@functools.lru_cache(maxsize=2)
def _cached_tokenizer(pad_token: str) -> transformers.CLIPTokenizer:
    return build_clip_tokenizer(pad_token)
