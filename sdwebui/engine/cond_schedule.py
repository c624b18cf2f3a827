"""Per-step text conditioning of one batch: prompt editing schedules and AND-composable sub-prompts.

Each distinct text is encoded once per batch; `at_step` picks the texts that apply at a step (A1111's
reconstruct_cond_batch) and pads all embeddings to a common length with the encoding of the empty prompt,
so that cond and uncond rows fit in one batched U-Net call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdwebui.engine import prompt_parser
from sdwebui.engine.conditioning import PromptEncoder


@dataclass
class StepConditioning:
    """Conditioning rows for one step: `cond` rows carry `cond_owner[i]` (image index) and `cond_weight[i]`."""

    cond: torch.Tensor  # [n_cond, tokens, dim]
    cond_pooled: torch.Tensor | None
    cond_owner: list[int]
    cond_weight: list[float]
    uncond: torch.Tensor  # [batch, tokens, dim]
    uncond_pooled: torch.Tensor | None

    @property
    def is_plain(self) -> bool:
        """One sub-prompt of weight 1 per image: cfg_scale == 1 can skip the uncond pass."""
        return len(self.cond_owner) == len(set(self.cond_owner)) and all(w == 1.0 for w in self.cond_weight)


class BatchConditioning:
    """Encoded prompt schedules of one batch of images."""

    def __init__(self, encoder: PromptEncoder, prompts: list[str], negative_prompts: list[str], steps: int):
        # per image: list of (schedule, weight); a schedule is [(end_at_step, text)]
        self._cond_parts: list[list[tuple[list[tuple[int, str]], float]]] = []
        for prompt in prompts:
            parts = prompt_parser.split_and(prompt)
            schedules = prompt_parser.get_learned_conditioning_prompt_schedules([p for p, _ in parts], steps)
            self._cond_parts.append([(s, w) for s, (_, w) in zip(schedules, parts, strict=True)])
        self._uncond_schedules = prompt_parser.get_learned_conditioning_prompt_schedules(
            negative_prompts, steps
        )

        texts = {text for parts in self._cond_parts for sched, _ in parts for _, text in sched}
        texts |= {text for sched in self._uncond_schedules for _, text in sched}
        texts.add("")
        ordered = sorted(texts)
        encoded = encoder.encode(ordered)
        self._embeds = {text: encoded.embeds[i] for i, text in enumerate(ordered)}
        self._pooled = (
            {text: encoded.pooled[i] for i, text in enumerate(ordered)}
            if encoded.pooled is not None
            else None
        )
        self._empty = self._embeds[""]
        self._cache: tuple[tuple[str, ...], StepConditioning] | None = None

    def at_step(self, step: int) -> StepConditioning:
        """Conditioning for 1-based `step`."""
        cond_texts, owners, weights = [], [], []
        for image, parts in enumerate(self._cond_parts):
            for schedule, weight in parts:
                cond_texts.append(prompt_parser.text_at_step(schedule, step))
                owners.append(image)
                weights.append(weight)
        uncond_texts = [prompt_parser.text_at_step(s, step) for s in self._uncond_schedules]
        key = tuple(cond_texts + ["\0"] + uncond_texts)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        length = max(self._embeds[t].shape[0] for t in cond_texts + uncond_texts)
        result = StepConditioning(
            cond=torch.stack([self._padded(t, length) for t in cond_texts]),
            cond_pooled=self._stack_pooled(cond_texts),
            cond_owner=owners,
            cond_weight=weights,
            uncond=torch.stack([self._padded(t, length) for t in uncond_texts]),
            uncond_pooled=self._stack_pooled(uncond_texts),
        )
        self._cache = (key, result)
        return result

    def _padded(self, text: str, length: int) -> torch.Tensor:
        embeds = self._embeds[text]
        missing = length - embeds.shape[0]
        if missing <= 0:
            return embeds
        repeats = -(-missing // self._empty.shape[0])
        return torch.cat([embeds, self._empty.repeat(repeats, 1)[:missing]])

    def _stack_pooled(self, texts: list[str]) -> torch.Tensor | None:
        return None if self._pooled is None else torch.stack([self._pooled[t] for t in texts])
