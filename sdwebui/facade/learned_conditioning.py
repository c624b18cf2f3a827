"""The engine's conditioning hook, served by A1111's `prompt_parser` functions when an extension replaced them.

Extensions such as prompt fusion set `modules.prompt_parser.get_learned_conditioning` (or
`get_multicond_learned_conditioning`) to a wrapper of their own. A1111 computes every batch's conditioning
through those module attributes, so the wrapper sees and may change it; here, when one is replaced, the
engine's `conditioning` hook calls them as A1111's processing does:

    uc = get_learned_conditioning(sd_model, SdConditioning(negatives, is_negative_prompt=True, ...), steps, ...)
    c = get_multicond_learned_conditioning(sd_model, SdConditioning(prompts, ...), steps, ...)

and the engine samples with what they return. `sd_model.get_learned_conditioning(texts)` encodes on the
pass's own text encoders (clip skip, embeddings and their TI hashes as the engine's path). Schedules count
the pass's steps and use the current scheduling rules (the engine's; `hires_steps` is None,
`use_old_scheduling` False). Not replaced: no hook, the engine encodes the prompts itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sdwebui.engine import hooks as eh
from sdwebui.engine import prompt_parser
from sdwebui.engine.cond_schedule import BatchConditioning, empty_encoding, learned_format
from sdwebui.engine.conditioning import PromptEncoder
from sdwebui.engine.errors import RequestError
from sdwebui.facade.shared import SdModelView

log = logging.getLogger("webui.extensions")


class ConditioningModel(SdModelView):
    """`sd_model` as the parser functions receive it, its `get_learned_conditioning` on one pass's encoder."""

    def __init__(self, encoder: PromptEncoder):
        super().__init__(encoder.model)
        object.__setattr__(self, "_encoder", encoder)

    def get_learned_conditioning(self, texts: list[str]) -> Any:
        """A1111's: embeddings [len(texts), tokens, dim], or {"crossattn", "vector"} for SDXL."""
        return learned_format(self._encoder.encode(list(texts)))


def conditioning_hook() -> Callable[[eh.ConditioningArgs], None] | None:
    """The hook when an extension replaced a parser function (checked per job), else None."""
    return learned_conditioning if prompt_parser.replaced_functions() else None


def learned_conditioning(args: eh.ConditioningArgs) -> None:
    model = ConditioningModel(args.encoder)
    size = {"width": args.width, "height": args.height}
    negatives = prompt_parser.SdConditioning(args.negative_prompts, is_negative_prompt=True, **size)
    prompts = prompt_parser.SdConditioning(args.prompts, **size)
    try:
        uncond = prompt_parser.get_learned_conditioning(model, negatives, args.steps, None, False)
        cond = prompt_parser.get_multicond_learned_conditioning(model, prompts, args.steps, None, False)
        args.conditioning = BatchConditioning.from_learned(cond, uncond, empty_encoding(args.encoder))
    except RequestError:  # the prompts themselves are wrong: the job's 4xx, as on the engine's path
        raise
    except Exception:  # an extension fails alone (logged): the batch gets the engine's conditioning
        names = ", ".join(
            f"prompt_parser.{name} (set by {getattr(getattr(prompt_parser, name), '__module__', '?')})"
            for name in prompt_parser.replaced_functions()
        )
        log.exception("%s failed; the engine's own conditioning is used for this batch", names)
