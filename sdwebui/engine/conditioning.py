"""Text conditioning as A1111 computes it: 75-token chunks, emphasis weights, CLIP skip, SDXL dual encoders.

A prompt (one text of a prompt-editing schedule, one `AND` part) is split into weighted fragments
(`prompt_parser.parse_prompt_attention`), tokenized fragment by fragment, and packed into chunks of 75 tokens.
`BREAK` starts a new chunk; when a chunk fills up and a comma lies within the last 20 tokens, the text after
that comma moves to the next chunk. Each chunk is wrapped as `[BOS] tokens [EOS] pad...` (77 ids; the pad id is
the tokenizer's: `<|endoftext|>` for CLIP-L, `!` = 0 for OpenCLIP), encoded on its own, and the chunks are
concatenated along the token axis (T = 77 * chunks). Prompts of one batch are padded to the same number of
chunks with the encoding of an empty chunk.

Emphasis (A1111 "Original"): the encoder output is multiplied token-wise by the weights, then rescaled so its
mean is the unweighted mean. A1111 takes that mean over the whole batch of one chunk position; here it is
taken per prompt and chunk, so a prompt's encoding never depends on the other prompts of the batch (identical
whenever the batch repeats one prompt, the usual case).

Layers (`clip_skip` as in A1111: 1 = last layer):
- SD1 / SD2: 1 = `last_hidden_state`; n > 1 = `hidden_states[-n]` then the encoder's `final_layer_norm`.
  For SD2 the diffusers text encoder already stops one layer before OpenCLIP's last (the "penultimate" layer
  of the original config), so 1 gives what A1111 uses for SD2. A1111 ignores clip skip for SD2; we apply it.
- SDXL (base, inpaint, refiner): `hidden_states[-(clip_skip + 1)]` of each encoder with no final norm, so 1 =
  the penultimate layer as SGM/A1111 and diffusers use; CLIP-L and bigG outputs are concatenated on C. The
  pooled embedding is the bigG projection (`text_embeds`) of the first chunk. A1111 ignores clip skip for SDXL
  by default; we follow diffusers (`clip_skip=n` here is diffusers' `clip_skip=n - 1`).

Textual inversion (A1111): where the tokens of a loaded embedding's name appear, they are replaced by as many
placeholder tokens as the embedding has vectors (they count toward the chunk; an embedding never straddles two
chunks; emphasis weights them like any token), and the encoder's token embeddings at those positions are
replaced by the vectors (SDXL: `clip_l` ones for CLIP-L, `clip_g` ones for bigG).

For a plain prompt of at most 75 tokens and clip_skip 1 this equals diffusers' `encode_prompt` exactly.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sdwebui.engine import prompt_parser
from sdwebui.engine.requests import RequestError, TokenCounter
from sdwebui.models.embeddings_library import EmbeddingLibrary, ModelEmbeddings
from sdwebui.models.lora.embeddings import Embedding
from sdwebui.models.model import LoadedModel

CHUNK_LENGTH = 75  # tokens per chunk, without BOS and EOS
COMMA_BACKTRACK = 20  # A1111 "comma_padding_backtrack" default
CACHE_SIZE = 64  # encoded texts kept per PromptEncoder
PLACEHOLDER_TOKEN = 0  # the id under an embedding's vectors (A1111's); the encoder never sees its vector
MEAN_RESTORE_EPS = 1e-3  # means smaller than this fraction of the mean magnitude are not restored
# Emphasis beyond this only overflows the model: (x) nested 500 deep is x1.1^500 = 5e20, whose square is
# inf in float32 (NaN images); the encoder's output is already saturated far below it.
MAX_EMPHASIS = 1000.0
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")  # <lora:name:1.0>, removed before counting tokens


@dataclass
class Conditioning:
    """Encoded prompts: `embeds` [B, 77 * chunks, C]; `pooled` [B, P] for SDXL, else None."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.embeds.ndim != 3:
            raise ValueError(
                f"Conditioning.embeds must be [batch, tokens, channels], got {tuple(self.embeds.shape)}"
            )
        if self.pooled is not None and self.pooled.shape[0] != self.embeds.shape[0]:
            raise ValueError(
                f"Conditioning.pooled batch {self.pooled.shape[0]} != embeds batch {self.embeds.shape[0]}"
            )


@dataclass(frozen=True)
class EmbeddingFix:
    """Embedding `name`'s vectors stand at `offset` (an index into the chunk's tokens) onwards."""

    offset: int
    name: str


@dataclass(frozen=True)
class PromptChunk:
    """Up to 75 token ids (no BOS/EOS), one weight per token, and the embeddings placed in it."""

    tokens: tuple[int, ...]
    multipliers: tuple[float, ...]
    fixes: tuple[EmbeddingFix, ...] = ()

    def input_ids(self, bos: int, eos: int, pad: int) -> list[int]:
        return [bos, *self.tokens, eos] + [pad] * (CHUNK_LENGTH - len(self.tokens))

    def weights(self) -> list[float]:
        return [1.0, *self.multipliers] + [1.0] * (CHUNK_LENGTH + 1 - len(self.multipliers))


@dataclass(frozen=True)
class TokenizedPrompt:
    chunks: tuple[PromptChunk, ...]
    token_count: int  # as A1111's counter: 75 per full chunk plus the tokens of the last one


EMPTY_CHUNK = PromptChunk((), ())


class EmbeddingVocabulary:
    """Embedding names as token sequences, longest first per first token (A1111's `ids_lookup`)."""

    def __init__(self, tokenizer: Any, embeddings: Mapping[str, Embedding]):
        self.vectors = {name: embedding.vectors for name, embedding in embeddings.items()}
        self._by_first: dict[int, list[tuple[tuple[int, ...], str]]] = {}
        names = list(embeddings)
        ids_lists = tokenizer(names, add_special_tokens=False, verbose=False)["input_ids"] if names else []
        for name, ids in zip(names, ids_lists, strict=True):
            if ids:
                self._by_first.setdefault(ids[0], []).append((tuple(ids), name))
        for candidates in self._by_first.values():
            candidates.sort(key=lambda item: -len(item[0]))

    def match(self, ids: list[int], position: int) -> tuple[str, int] | None:
        """(name, tokens of the name) of the embedding whose name starts at `ids[position]`, if any."""
        for name_ids, name in self._by_first.get(ids[position], ()):
            if tuple(ids[position : position + len(name_ids)]) == name_ids:
                return name, len(name_ids)
        return None


def _comma_token(tokenizer: Any) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids(",</w>")  # get_vocab() would copy 49408 entries per call
    return None if token_id is None or token_id == tokenizer.unk_token_id else token_id


def tokenize_prompt(
    text: str,
    tokenizer: Any,
    comma_backtrack: int = COMMA_BACKTRACK,
    vocabulary: EmbeddingVocabulary | None = None,
) -> TokenizedPrompt:
    """Split one prompt (no prompt-editing or AND syntax left) into weighted 75-token chunks, A1111's way;
    the names in `vocabulary` become their embeddings' placeholder tokens."""
    fragments = prompt_parser.parse_prompt_attention(text)
    token_lists = tokenizer(
        [fragment for fragment, _ in fragments], truncation=False, add_special_tokens=False, verbose=False
    )["input_ids"]
    packer = _ChunkPacker(_comma_token(tokenizer), comma_backtrack)
    for ids, (fragment, weight) in zip(token_lists, fragments, strict=True):
        if (fragment, weight) == prompt_parser.BREAK_MARKER:
            packer.close_chunk()
            continue
        position = 0
        while position < len(ids):
            packer.make_room(ids[position])
            found = vocabulary.match(ids, position) if vocabulary is not None else None
            if found is None:
                packer.add([ids[position]], weight)
                position += 1
                continue
            name, length = found
            packer.add_embedding(name, vocabulary.vectors[name], weight)
            position += length
    return packer.finish()


class _ChunkPacker:
    """The chunks of one prompt as tokens arrive (A1111's `tokenize_line`)."""

    def __init__(self, comma: int | None, comma_backtrack: int):
        self.comma, self.comma_backtrack = comma, comma_backtrack
        self.chunks: list[PromptChunk] = []
        self.tokens: list[int] = []
        self.multipliers: list[float] = []
        self.fixes: list[EmbeddingFix] = []
        self.token_count = 0
        self.last_comma = -1

    def close_chunk(self, is_last: bool = False) -> None:
        self.token_count += len(self.tokens) if is_last else CHUNK_LENGTH
        self.chunks.append(PromptChunk(tuple(self.tokens), tuple(self.multipliers), tuple(self.fixes)))
        self.tokens, self.multipliers, self.fixes, self.last_comma = [], [], [], -1

    def make_room(self, token: int) -> None:
        """Before `token` is added: note a comma, or start a new chunk when this one is full."""
        full = len(self.tokens) == CHUNK_LENGTH
        if token == self.comma:
            self.last_comma = len(self.tokens)
        elif (
            self.comma_backtrack
            and full
            and self.last_comma != -1
            and len(self.tokens) - self.last_comma <= self.comma_backtrack
        ):
            # the words after the last comma move to the next chunk rather than being cut in two
            split = self.last_comma + 1
            moved_tokens, moved_multipliers = self.tokens[split:], self.multipliers[split:]
            moved_fixes = [EmbeddingFix(f.offset - split, f.name) for f in self.fixes if f.offset >= split]
            self.tokens, self.multipliers = self.tokens[:split], self.multipliers[:split]
            self.fixes = [f for f in self.fixes if f.offset < split]
            self.close_chunk()
            self.tokens, self.multipliers, self.fixes = moved_tokens, moved_multipliers, moved_fixes
        if len(self.tokens) == CHUNK_LENGTH:
            self.close_chunk()

    def add(self, tokens: list[int], weight: float) -> None:
        self.tokens.extend(tokens)
        self.multipliers.extend([weight] * len(tokens))

    def add_embedding(self, name: str, vectors: int, weight: float) -> None:
        if len(self.tokens) + vectors > CHUNK_LENGTH:  # an embedding is never split between chunks
            self.close_chunk()
        self.fixes.append(EmbeddingFix(len(self.tokens), name))
        self.add([PLACEHOLDER_TOKEN] * vectors, weight)

    def finish(self) -> TokenizedPrompt:
        if self.tokens or not self.chunks:
            self.close_chunk(is_last=True)
        return TokenizedPrompt(tuple(self.chunks), self.token_count)


def check_emphasis(text: str) -> None:
    """RequestError for an emphasis weight the model cannot take (|weight| > MAX_EMPHASIS)."""
    for fragment, weight in prompt_parser.parse_prompt_attention(text):
        if (fragment, weight) != prompt_parser.BREAK_MARKER and not abs(weight) <= MAX_EMPHASIS:
            raise RequestError(
                "prompt",
                f"emphasis weight {weight:.3g} of {fragment[:40]!r} in {text[:60]!r} is beyond "
                f"+-{MAX_EMPHASIS:g} (each ( ) multiplies by 1.1): the model would overflow to NaN",
            )


def count_tokens(
    text: str,
    tokenizer: Any,
    steps: int = 20,
    is_positive: bool = True,
    vocabulary: EmbeddingVocabulary | None = None,
) -> tuple[int, int]:
    """(tokens used, chunk limit) for the UI counter, e.g. (12, 75) or (80, 150), as A1111 shows it.

    Extra-network tags (`<lora:x:1>`) are ignored; an embedding counts as its vectors; `AND` parts (positive
    prompt only) and every text of a prompt-editing schedule are counted on their own and the longest one is
    reported.
    """
    text = _EXTRA_NETWORK.sub("", text)
    texts = prompt_parser.get_multicond_prompt_list([text])[1] if is_positive else [text]
    variants = [
        t
        for schedule in prompt_parser.get_learned_conditioning_prompt_schedules(texts, steps)
        for _, t in schedule
    ]
    count = max(tokenize_prompt(v, tokenizer, vocabulary=vocabulary).token_count for v in variants)
    return count, math.ceil(max(count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH


def embedding_token_counter(tokenizer: Any, embeddings: Mapping[str, Embedding]) -> TokenCounter:
    """The limits' token counter (sdwebui.engine.requests.TokenCounter) with `embeddings` counted as vectors."""
    vocabulary = EmbeddingVocabulary(tokenizer, embeddings) if embeddings else None
    return lambda text, steps, is_positive: count_tokens(text, tokenizer, steps, is_positive, vocabulary)[0]


def ti_hashes(used: Mapping[str, Embedding]) -> str | None:
    """A1111's infotext value `TI hashes`: "name: shorthash, ..." (":" and "," dropped from names)."""
    hashes = [
        f"{name.replace(':', '').replace(',', '')}: {embedding.shorthash}"
        for name, embedding in used.items()
        if embedding.shorthash
    ]
    return ", ".join(hashes) or None


@dataclass(frozen=True)
class _Encoded:
    embeds: torch.Tensor  # [77 * chunks, C]
    pooled: torch.Tensor | None  # [P]


class PromptEncoder:
    """Encodes prompts with a model's text encoders; keeps a small per-instance cache (make one per job)."""

    def __init__(self, model: LoadedModel, clip_skip: int = 1, embeddings: EmbeddingLibrary | None = None):
        if not model.text_encoders or len(model.text_encoders) != len(model.tokenizers):
            raise ValueError(
                f"model {model.info.name!r} needs one tokenizer per text encoder, got "
                f"{len(model.text_encoders)} encoders and {len(model.tokenizers)} tokenizers"
            )
        layers = min(encoder.config.num_hidden_layers for encoder in model.text_encoders)
        if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or not 1 <= clip_skip <= layers:
            raise RequestError(  # the request's value does not fit this model: a 4xx naming the field
                "clip_skip", f"must be an integer from 1 to {layers} for this model, got {clip_skip!r}"
            )
        self.model = model
        self.clip_skip = clip_skip
        self._cache: OrderedDict[str, _Encoded] = OrderedDict()
        # the library's embeddings for this model, fixed for the encoder's (the job's) lifetime
        self.embeddings = embeddings.for_model(model) if embeddings is not None else ModelEmbeddings()
        self._vocabulary = (
            EmbeddingVocabulary(self.tokenizer, self.embeddings.loaded) if self.embeddings.loaded else None
        )
        self.used: dict[str, Embedding] = {}  # embeddings the encoded texts used, in order of first use

    @property
    def tokenizer(self) -> Any:
        """The tokenizer that decides chunking (SDXL's two tokenizers share the CLIP BPE vocabulary)."""
        return self.model.tokenizers[0]

    def count_tokens(self, text: str, steps: int = 20, is_positive: bool = True) -> tuple[int, int]:
        return count_tokens(text, self.tokenizer, steps, is_positive, self._vocabulary)

    def ti_hashes(self) -> str | None:
        """`TI hashes` of the embeddings used so far (None when none was)."""
        return ti_hashes(self.used)

    def encode(self, prompts: list[str]) -> Conditioning:
        """Encode texts free of prompt-editing and AND syntax (emphasis and BREAK are handled here)."""
        if isinstance(prompts, str) or not prompts:
            raise ValueError("PromptEncoder.encode expects a non-empty list of prompt strings")
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise TypeError(f"prompts must be strings, got {type(prompt).__name__}")
        found = self._lookup(list(dict.fromkeys(prompts)))
        encoded = [found[p] for p in prompts]
        length = max(e.embeds.shape[0] for e in encoded)
        if any(e.embeds.shape[0] < length for e in encoded):
            empty = self._lookup([""])[""].embeds  # A1111 pads shorter prompts with empty chunks
            embeds = torch.stack([self._pad(e.embeds, empty, length) for e in encoded])
        else:
            embeds = torch.stack([e.embeds for e in encoded])
        pooled = None if encoded[0].pooled is None else torch.stack([e.pooled for e in encoded])
        return Conditioning(embeds=embeds, pooled=pooled)

    def _lookup(self, texts: list[str]) -> dict[str, _Encoded]:
        """Cached encodings of distinct texts; the missing ones are encoded together in one batch."""
        found = {t: self._cache[t] for t in texts if t in self._cache}
        missing = [t for t in texts if t not in found]
        if missing:
            found.update(zip(missing, self._encode_texts(missing), strict=True))
        for text in texts:
            self._remember(text, found[text])
        return found

    @staticmethod
    def _pad(embeds: torch.Tensor, empty_chunk: torch.Tensor, length: int) -> torch.Tensor:
        missing_chunks = (length - embeds.shape[0]) // empty_chunk.shape[0]
        return torch.cat([embeds, empty_chunk.repeat(missing_chunks, 1)]) if missing_chunks else embeds

    def _remember(self, prompt: str, encoded: _Encoded) -> None:
        self._cache[prompt] = encoded
        self._cache.move_to_end(prompt)
        while len(self._cache) > CACHE_SIZE:
            del self._cache[next(k for k in self._cache if k != "")]  # "" pads every batch: keep it

    @torch.no_grad()
    def _encode_texts(self, texts: list[str]) -> list[_Encoded]:
        for text in texts:
            check_emphasis(text)
        tokenized = [tokenize_prompt(text, self.tokenizer, vocabulary=self._vocabulary) for text in texts]
        chunks = [chunk for prompt in tokenized for chunk in prompt.chunks]
        for fix in (fix for chunk in chunks for fix in chunk.fixes):
            self.used.setdefault(fix.name, self.embeddings.loaded[fix.name])
        per_encoder = []
        pooled = None
        encoders = zip(self.model.text_encoders, self.model.tokenizers, strict=True)
        for index, (encoder, tokenizer) in enumerate(encoders):
            with self._vectors_placed(encoder, index, chunks):
                hidden, text_embeds = self._run_encoder(encoder, tokenizer, chunks)
            per_encoder.append(hidden)
            if text_embeds is not None:
                pooled = text_embeds  # SDXL: the last (bigG) encoder's projection
        hidden = torch.cat(per_encoder, dim=-1)  # [chunks, 77, C]
        weights = torch.tensor(
            [chunk.weights() for chunk in chunks], dtype=torch.float32, device=hidden.device
        )
        hidden = _apply_emphasis(hidden, weights)

        results, start = [], 0
        for prompt in tokenized:
            end = start + len(prompt.chunks)
            embeds = hidden[start:end].reshape(-1, hidden.shape[-1])
            results.append(_Encoded(embeds, None if pooled is None else pooled[start]))
            start = end
        return results

    @contextlib.contextmanager
    def _vectors_placed(self, encoder: Any, index: int, chunks: list[PromptChunk]) -> Iterator[None]:
        """While encoding `chunks`: the embeddings' vectors replace the token embeddings at their placeholders
        (a forward hook on the encoder's token embedding, removed after the call; none for plain prompts)."""
        rows = [
            (row, fix.offset + 1, self.embeddings.vectors_for(fix.name, index))  # + 1: after BOS
            for row, chunk in enumerate(chunks)
            for fix in chunk.fixes
        ]
        if not rows:
            yield
            return

        def place(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
            output = output.clone()
            for row, start, vectors in rows:
                output[row, start : start + vectors.shape[0]] = vectors.to(output.device, output.dtype)
            return output

        handle = encoder.get_input_embeddings().register_forward_hook(place)
        try:
            yield
        finally:
            handle.remove()

    def _run_encoder(
        self, encoder: Any, tokenizer: Any, chunks: list[PromptChunk]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        ids = torch.tensor([chunk.input_ids(bos, eos, pad) for chunk in chunks], device=encoder.device)
        output = encoder(input_ids=ids, output_hidden_states=self.model.is_sdxl or self.clip_skip > 1)
        if self.model.is_sdxl:
            hidden = output.hidden_states[-(self.clip_skip + 1)]
        elif self.clip_skip == 1:
            hidden = output.last_hidden_state
        else:
            # transformers 5 puts final_layer_norm on CLIPTextModel itself, earlier versions on .text_model
            final_layer_norm = getattr(encoder, "text_model", encoder).final_layer_norm
            hidden = final_layer_norm(output.hidden_states[-self.clip_skip])
        return hidden, getattr(output, "text_embeds", None)


def _apply_emphasis(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Multiply each token's vector by its weight, then restore each chunk's original mean.

    When a chunk's mean is negligible next to its magnitude (an encoder whose final norm has no bias, such as
    a freshly initialised one), the ratio of means is noise that can flip signs: the rescale is skipped.
    """
    if bool((weights == 1.0).all()):
        return hidden
    z = hidden.float()
    original_mean = z.mean(dim=(1, 2), keepdim=True)
    z = z * weights[:, :, None]
    new_mean = z.mean(dim=(1, 2), keepdim=True)
    scale = z.abs().mean(dim=(1, 2), keepdim=True)
    well_defined = (new_mean.abs() > MEAN_RESTORE_EPS * scale) & (
        original_mean.abs() > MEAN_RESTORE_EPS * scale
    )
    z = z * torch.where(well_defined, original_mean / new_mean, torch.ones_like(new_mean))
    return z.to(hidden.dtype)


def clip_token_counter(text: str, steps: int, is_positive: bool) -> int:
    """A prompt's tokens as the engine encodes it (the longest AND part / scheduled variant). Every model
    family tokenizes with the CLIP BPE vocabulary, so no model has to be loaded to count."""
    from sdwebui.models.tokenizer import shared_clip_tokenizer

    return count_tokens(text, shared_clip_tokenizer(), steps, is_positive)[0]
