"""Prompt encoding for DiT families, combined as the family's table entry says (`FamilySpec.combine`).

Flux: context = T5 hidden states (padded to the family's sequence length), pooled = CLIP-L's pooled output.
SD3: context = [CLIP-L | CLIP-G penultimate hidden states, zero-padded to T5's width ; T5 hidden states]
along the sequence, pooled = CLIP-L | CLIP-G projections. Both as diffusers' pipelines encode them, so a
plain prompt gives their embeddings exactly. Emphasis `(text:1.2)` weights T5's tokens (Forge does the
same): each fragment is tokenized on its own and its hidden states scaled, then the mean restored.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from sdwebui.engine import prompt_parser
from sdwebui.engine.conditioning import Conditioning, check_emphasis
from sdwebui.engine.requests import RequestError
from sdwebui.models.families import COMBINE_SD3, family_spec
from sdwebui.models.model import LoadedModel

CACHE_SIZE = 64


class DiTPromptEncoder:
    """The PromptEncoder of Flux / SD3 models (same interface: encode, used, ti_hashes, count_tokens)."""

    def __init__(self, model: LoadedModel, clip_skip: int = 1, embeddings: Any = None):
        _check_clip_skip(model, clip_skip)
        self.model = model
        self.spec = family_spec(model.family)
        self.clip_skip = clip_skip
        self.used: dict[str, Any] = {}  # textual inversion embeddings do not apply to T5 models
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizers[-1]

    def ti_hashes(self) -> str | None:
        return None

    def count_tokens(self, text: str, steps: int = 20, is_positive: bool = True) -> tuple[int, int]:
        ids = self._t5_ids(text)[0]
        return len(ids), self.spec.text_encoders[-1].max_length

    def encode(self, prompts: list[str]) -> Conditioning:
        if isinstance(prompts, str) or not prompts:
            raise ValueError("DiTPromptEncoder.encode expects a non-empty list of prompt strings")
        encoded = [self._lookup(p) for p in prompts]
        return Conditioning(
            embeds=torch.stack([e for e, _ in encoded]), pooled=torch.stack([p for _, p in encoded])
        )

    def _lookup(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        if text not in self._cache:
            check_emphasis(text)
            self._cache[text] = self._encode(text)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(text)
        return self._cache[text]

    @torch.no_grad()
    def _encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        plain = "".join(part for part, _ in prompt_parser.parse_prompt_attention(text)).replace("BREAK", " ")
        clips = self.model.text_encoders[:-1]
        outputs = [
            self._clip(encoder, tokenizer, plain)
            for encoder, tokenizer in zip(clips, self.model.tokenizers, strict=False)
        ]
        t5 = self._t5(text)
        if self.spec.combine == COMBINE_SD3:
            clip_hidden = torch.cat([hidden for hidden, _ in outputs], dim=-1)
            clip_hidden = torch.nn.functional.pad(clip_hidden, (0, t5.shape[-1] - clip_hidden.shape[-1]))
            context = torch.cat([clip_hidden, t5], dim=0)
            pooled = torch.cat([p for _, p in outputs], dim=-1)
        else:
            context, pooled = t5, outputs[0][1]
        return context.float().cpu(), pooled.float().cpu()

    def _clip(self, encoder, tokenizer, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids = tokenizer(
            text, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        output = encoder(ids.to(encoder.device), output_hidden_states=True)
        pooled = output.text_embeds if hasattr(output, "text_embeds") else output.pooler_output
        if self.spec.combine != COMBINE_SD3 and self.clip_skip > 1:
            # Flux reads only CLIP-L's pooled vector: clip skip takes it from an earlier layer (its EOS
            # token through the final layer norm, as the pooled output is built from the last layer)
            eos = int((ids[0] == tokenizer.eos_token_id).int().argmax())
            layer = output.hidden_states[-self.clip_skip][0, eos]
            norm = getattr(encoder, "text_model", encoder).final_layer_norm  # transformers 4 / 5
            pooled = norm(layer)[None]
        hidden = output.hidden_states[-(self.clip_skip + 1)]
        return hidden[0], pooled[0]

    def _t5_ids(self, text: str) -> tuple[list[int], list[float]]:
        tokenizer = self.tokenizer
        ids: list[int] = []
        weights: list[float] = []
        for fragment, weight in prompt_parser.parse_prompt_attention(text):
            if fragment == "BREAK":
                continue
            piece = tokenizer(fragment, add_special_tokens=False).input_ids
            ids += piece
            weights += [weight] * len(piece)
        return ids, weights

    def _t5(self, text: str) -> torch.Tensor:
        tokenizer, encoder = self.tokenizer, self.model.text_encoders[-1]
        length = self.spec.text_encoders[-1].max_length
        ids, weights = self._t5_ids(text)
        ids, weights = ids[: length - 1] + [tokenizer.eos_token_id], weights[: length - 1] + [1.0]
        pad = length - len(ids)
        ids, weights = ids + [tokenizer.pad_token_id] * pad, weights + [1.0] * pad
        hidden = encoder(torch.tensor([ids], device=encoder.device))[0][0]
        if all(w == 1.0 for w in weights):
            return hidden
        z = hidden.float()
        mean = z.mean()
        z = z * torch.tensor(weights, device=z.device)[:, None]
        return (z * (mean / z.mean())).to(hidden.dtype)


def _check_clip_skip(model: LoadedModel, clip_skip: int) -> None:
    """Clip skip counts CLIP layers from the end (SD3: from its penultimate one); it must leave one."""
    spec = family_spec(model.family)
    layers = min(encoder.config.num_hidden_layers for encoder in model.text_encoders[:-1])
    usable = layers - 1 if spec.combine == COMBINE_SD3 else layers
    if not 1 <= clip_skip <= usable:
        raise RequestError(
            "clip_skip", f"must be from 1 to {usable} for {spec.label} (its CLIP has {layers} layers)"
        )
