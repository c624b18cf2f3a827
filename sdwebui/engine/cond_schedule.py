"""Per-step text conditioning of one batch: prompt editing schedules and AND-composable sub-prompts.

Each distinct text is encoded once per batch; `at_step` picks the encodings that apply at a step (A1111's
reconstruct_cond_batch) and pads all embeddings to a common length with the encoding of the empty prompt,
so that cond and uncond rows fit in one batched U-Net call.

A batch's conditioning comes from its prompts (`from_prompts`, the engine's own path) or from A1111's
records (`from_learned`: what `prompt_parser.get_multicond_learned_conditioning` / `get_learned_conditioning`
return, for an extension that replaced them). A1111's `cond` of one text is a tensor [tokens, dim], or for a
model with a pooled embedding (SDXL) a dict {"crossattn": [tokens, dim], "vector": [pooled]}; our "vector" is
the pooled text embedding alone (the engine adds the size conditioning itself, A1111 appends it there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sdwebui.engine import prompt_parser
from sdwebui.engine.conditioning import Conditioning, PromptEncoder


@dataclass(frozen=True, eq=False)
class EncodedText:
    """One text's encoding: `embeds` [tokens, dim], `pooled` [P] (None for models without one)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None


Schedule = list[tuple[int, EncodedText]]  # (end_at_step, encoding used up to and including that step)


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
    """Encoded schedules of one batch of images: per image its (schedule, weight) parts, per image one
    uncond schedule, and the empty prompt's encoding that pads shorter embeddings."""

    def __init__(
        self, cond_parts: list[list[tuple[Schedule, float]]], uncond: list[Schedule], empty: EncodedText
    ):
        if not cond_parts or any(not parts for parts in cond_parts) or len(uncond) != len(cond_parts):
            raise ValueError(
                f"conditioning needs at least one part per image and one uncond schedule per image, got "
                f"{[len(parts) for parts in cond_parts]} parts and {len(uncond)} uncond schedules"
            )
        self._cond_parts = cond_parts
        self._uncond = uncond
        self._empty = empty
        self._cache: tuple[tuple[int, ...], StepConditioning] | None = None

    @classmethod
    def from_prompts(
        cls, encoder: PromptEncoder, prompts: list[str], negative_prompts: list[str], steps: int
    ) -> BatchConditioning:
        """The engine's own path: every distinct text of the batch's schedules encoded in one call."""
        text_parts = []  # per image: [(text schedule, weight)]
        for prompt in prompts:
            parts = prompt_parser.split_and(prompt)
            schedules = prompt_parser.get_learned_conditioning_prompt_schedules([p for p, _ in parts], steps)
            text_parts.append([(s, w) for s, (_, w) in zip(schedules, parts, strict=True)])
        uncond_texts = prompt_parser.get_learned_conditioning_prompt_schedules(negative_prompts, steps)

        texts = {text for parts in text_parts for sched, _ in parts for _, text in sched}
        texts |= {text for sched in uncond_texts for _, text in sched}
        texts.add("")
        ordered = sorted(texts)
        encoded = dict(zip(ordered, _rows(encoder.encode(ordered)), strict=True))

        def schedule(texts_schedule: list[tuple[int, str]]) -> Schedule:
            return [(end, encoded[text]) for end, text in texts_schedule]

        cond_parts = [[(schedule(s), w) for s, w in parts] for parts in text_parts]
        return cls(cond_parts, [schedule(s) for s in uncond_texts], encoded[""])

    @classmethod
    def from_learned(
        cls,
        multicond: prompt_parser.MulticondLearnedConditioning,
        uncond: list[list[prompt_parser.ScheduledPromptConditioning]],
        empty: EncodedText,
    ) -> BatchConditioning:
        """A1111's records (see the module docstring); ValueError naming what does not fit the model."""
        if not isinstance(multicond, prompt_parser.MulticondLearnedConditioning):
            raise ValueError(f"expected a MulticondLearnedConditioning, got {type(multicond).__name__}")
        cond_parts = [
            [(_learned_schedule(part.schedules, empty), float(part.weight)) for part in parts]
            for parts in multicond.batch
        ]
        return cls(cond_parts, [_learned_schedule(s, empty) for s in uncond], empty)

    def at_step(self, step: int) -> StepConditioning:
        """Conditioning for sampler step `step`, counted from 0 as A1111's CFG denoiser counts."""
        cond, owners, weights = [], [], []
        for image, parts in enumerate(self._cond_parts):
            for schedule, weight in parts:
                cond.append(_at_step(schedule, step))
                owners.append(image)
                weights.append(weight)
        uncond = [_at_step(s, step) for s in self._uncond]
        key = tuple(id(entry) for entry in cond + uncond) + (len(cond),)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        length = max(entry.embeds.shape[0] for entry in cond + uncond)
        result = StepConditioning(
            cond=torch.stack([self._padded(entry, length) for entry in cond]),
            cond_pooled=_stack_pooled(cond),
            cond_owner=owners,
            cond_weight=weights,
            uncond=torch.stack([self._padded(entry, length) for entry in uncond]),
            uncond_pooled=_stack_pooled(uncond),
        )
        self._cache = (key, result)
        return result

    def _padded(self, entry: EncodedText, length: int) -> torch.Tensor:
        embeds, empty = entry.embeds, self._empty.embeds
        missing = length - embeds.shape[0]
        if missing <= 0:
            return embeds
        repeats = -(-missing // empty.shape[0])
        return torch.cat([embeds, empty.repeat(repeats, 1)[:missing].to(embeds.device, embeds.dtype)])


def empty_encoding(encoder: PromptEncoder) -> EncodedText:
    """The empty prompt's encoding: what pads shorter embeddings (as A1111 pads with empty chunks)."""
    return _rows(encoder.encode([""]))[0]


def _rows(conditioning: Conditioning) -> list[EncodedText]:
    pooled = conditioning.pooled
    return [
        EncodedText(embeds, None if pooled is None else pooled[i])
        for i, embeds in enumerate(conditioning.embeds)
    ]


def _at_step(schedule: Schedule, step: int) -> EncodedText:
    """The entry whose range holds `step` (`step <= end_at_step`); after the end, the last one."""
    for end_at_step, entry in schedule:
        if step <= end_at_step:
            return entry
    return schedule[-1][1]


def _stack_pooled(entries: list[EncodedText]) -> torch.Tensor | None:
    return None if entries[0].pooled is None else torch.stack([entry.pooled for entry in entries])


# -- A1111's cond values ---------------------------------------------------------------------------------
def learned_format(conditioning: Conditioning) -> Any:
    """What A1111's `sd_model.get_learned_conditioning(texts)` returns for encoded texts: the embeddings
    [B, tokens, dim], or {"crossattn": embeddings, "vector": pooled [B, P]} for a model with a pooled one."""
    if conditioning.pooled is None:
        return conditioning.embeds
    return {"crossattn": conditioning.embeds, "vector": conditioning.pooled}


def _learned_schedule(
    schedule: list[prompt_parser.ScheduledPromptConditioning], empty: EncodedText
) -> Schedule:
    if not isinstance(schedule, list | tuple) or not schedule:
        raise ValueError(f"a prompt's schedule must be a non-empty list, got {schedule!r:.80}")
    result = []
    for entry in schedule:
        end_at_step, cond = entry  # A1111's namedtuple, or ours (it unpacks the same way)
        if isinstance(end_at_step, bool) or not isinstance(end_at_step, int):
            raise ValueError(f"end_at_step must be an integer step, got {end_at_step!r}")
        result.append((end_at_step, _learned_cond(cond, empty)))
    return result


def _learned_cond(cond: Any, empty: EncodedText) -> EncodedText:
    pooled = None
    if isinstance(cond, dict):
        embeds, pooled = cond.get("crossattn"), cond.get("vector")
    else:
        embeds = cond
    dim = empty.embeds.shape[-1]
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2 or embeds.shape[-1] != dim:
        raise ValueError(
            f"a cond must be a tensor [tokens, {dim}] (or a dict with 'crossattn'), got "
            f"{tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__}"
        )
    embeds = embeds.to(empty.embeds.device, empty.embeds.dtype)
    if empty.pooled is None:
        return EncodedText(embeds, None)
    if not isinstance(pooled, torch.Tensor) or tuple(pooled.shape) != tuple(empty.pooled.shape):
        raise ValueError(
            f"this model's cond is a dict with 'vector' [{empty.pooled.shape[-1]}] (the pooled text embedding), "
            f"got {tuple(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled).__name__}"
        )
    return EncodedText(embeds, pooled.to(empty.pooled.device, empty.pooled.dtype))
