"""A1111 prompt syntax: prompt editing schedules, alternation, emphasis weights, BREAK, AND.

Pure Python and A1111-compatible in what it returns (A1111's `modules/prompt_parser.py` is the reference;
this is an independent implementation without the `lark` dependency). Malformed prompts never raise:
like A1111, an unparseable schedule is used literally and unbalanced brackets are closed at the end.

Order of use for one prompt: `split_and` (composable `AND` parts) -> `get_learned_conditioning_prompt_schedules`
(prompt editing, one text per range of steps) -> `parse_prompt_attention` (weighted fragments + BREAK).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------------------
# Prompt editing and alternation
# ---------------------------------------------------------------------------------------------------------
# Grammar (A1111's, with its top-level tolerance of stray brackets):
#   start     := (prompt | stray "[](): chars")*
#   prompt    := (emphasized | scheduled | alternate | plain)*
#   emphasized:= "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"     (kept literally)
#   scheduled := "[" [prompt ":"] prompt ":" ws? NUMBER ws? "]"
#   alternate := "[" prompt ("|" prompt?)+ "]"
#   plain     := (any char but \[]():|  |  "\" followed by any char but newline)+
# A "|" outside an alternation, or a trailing lone backslash, makes the prompt unparseable: it is then used
# as is for every step (as A1111 does).

_NUMBER = re.compile(r"\s*([+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+))\s*\]")
_SPECIAL = "\\[]():|"


@dataclass
class _Scheduled:
    before: list | None  # None for the "[to:when]" form: nothing before `when`
    after: list
    when: str  # the number as written; what it means depends on the scheduling mode


@dataclass
class _Alternate:
    options: list[list] = field(default_factory=list)


class _ScheduleParser:
    """Recursive descent over the grammar above. Bracketed groups parse deterministically from their
    opening bracket, so taking a group whenever one parses (else a stray bracket) finds a parse if any exists."""

    def __init__(self, text: str):
        self.text = text
        self._groups: dict[int, tuple[list, int] | None] = {}  # memo: keeps unclosed "[[[[..." linear

    def parse(self) -> list | None:
        text, items, i = self.text, [], 0
        while i < len(text):
            char = text[i]
            if char in "([":
                group = self._group(i)
                if group is not None:
                    items.extend(group[0])
                    i = group[1]
                    continue
                items.append(char)
                i += 1
            elif char in ")]:":
                items.append(char)
                i += 1
            elif char == "|":
                return None  # only an alternation may hold "|"
            elif char == "\\":
                if i + 1 >= len(text) or text[i + 1] == "\n":
                    return None  # a lone trailing backslash
                items.append(text[i : i + 2])
                i += 2
            else:
                items.append(char)
                i += 1
        return items

    def _prompt(self, i: int) -> tuple[list, int] | None:
        """Items up to the next unconsumed ":", "|", ")", "]" or the end; None if a nested group is broken."""
        text, items, start = self.text, [], i
        while i < len(text):
            char = text[i]
            if char in ":|)]":
                break
            if char in "([":
                if start < i:
                    items.append(text[start:i])
                group = self._group(i)
                if group is None:
                    return None
                items.extend(group[0])
                i = start = group[1]
            elif char == "\\":
                if i + 1 >= len(text) or text[i + 1] == "\n":
                    return None
                i += 2  # escapes stay in the text: emphasis parsing reads them later
            else:
                i += 1
        if start < i:
            items.append(text[start:i])
        return items, i

    def _group(self, i: int) -> tuple[list, int] | None:
        if i not in self._groups:
            self._groups[i] = self._parse_group(i)
        return self._groups[i]

    def _parse_group(self, i: int) -> tuple[list, int] | None:
        text = self.text
        first = self._prompt(i + 1)
        if first is None or first[1] >= len(text):
            return None
        items, j = first
        closer = text[j]
        if text[i] == "(":
            if closer == ")":
                return ["(", *items, ")"], j + 1
            if closer != ":":
                return None
            second = self._prompt(j + 1)
            if second is None or second[1] >= len(text) or text[second[1]] != ")":
                return None
            return ["(", *items, ":", *second[0], ")"], second[1] + 1
        if closer == "]":
            return ["[", *items, "]"], j + 1
        if closer == "|":
            options = [items]
            while j < len(text) and text[j] == "|":
                option = self._prompt(j + 1)
                if option is None:
                    return None
                options.append(option[0])
                j = option[1]
            if j >= len(text) or text[j] != "]":
                return None
            return [_Alternate(options)], j + 1
        if closer != ":":
            return None
        number = _NUMBER.match(text, j + 1)
        if number is not None:
            return [_Scheduled(None, items, number.group(1))], number.end()
        second = self._prompt(j + 1)
        if second is None or second[1] >= len(text) or text[second[1]] != ":":
            return None
        number = _NUMBER.match(text, second[1] + 1)
        if number is None:
            return None
        return [_Scheduled(items, second[0], number.group(1))], number.end()


@dataclass(frozen=True)
class _StepRule:
    """How a schedule number becomes a step (A1111: plain pass, hires pass, or the pre-1.6 behaviour)."""

    steps: int
    int_offset: int = 0
    float_offset: float = 0.0
    old_scheduling: bool = False

    def resolve(self, when: str) -> int:
        value = float(when)
        if self.old_scheduling:
            value = value * self.steps if value < 1 else value
        elif "." in when:
            value = (value - self.float_offset) * self.steps
        else:
            value = value - self.int_offset
        return min(self.steps, int(value))


def _walk(items: list):
    for item in items:
        if isinstance(item, _Scheduled):
            yield item
            yield from _walk(item.before or [])
            yield from _walk(item.after)
        elif isinstance(item, _Alternate):
            yield item
            for option in item.options:
                yield from _walk(option)


def _text_at_step(items: list, step: int, rule: _StepRule) -> str:
    parts = []
    for item in items:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, _Scheduled):
            chosen = (item.before or []) if step <= rule.resolve(item.when) else item.after
            parts.append(_text_at_step(chosen, step, rule))
        else:
            parts.append(_text_at_step(item.options[(step - 1) % len(item.options)], step, rule))
    return "".join(parts)


def _schedule(prompt: str, rule: _StepRule) -> list[tuple[int, str]]:
    try:
        tree = _ScheduleParser(prompt).parse()
    except RecursionError:  # thousands of nested brackets: use the text as is rather than fail
        tree = None
    if tree is None:
        return [(rule.steps, prompt)]
    boundaries = {rule.steps}
    for node in _walk(tree):
        if isinstance(node, _Alternate):
            boundaries.update(range(1, rule.steps + 1))
        else:
            when = rule.resolve(node.when)
            if when >= 1:
                boundaries.add(when)
    return [(step, _text_at_step(tree, step, rule)) for step in sorted(boundaries)]


def get_learned_conditioning_prompt_schedules(
    prompts: list[str], steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[list[tuple[int, str]]]:
    """For each prompt, `(end_at_step, text)` pairs: `text` is used for steps up to and including `end_at_step`.

    `[a:b:when]` switches from a to b after `when`; `[a:when]` adds a, `[a::when]` removes it; `[a|b]` alternates
    every step. An integer `when` is a step; a number written with a "." is a fraction of the steps (A1111 >= 1.6;
    `use_old_scheduling=True` gives the older rule: below 1 is a fraction, else a step). With `hires_steps`,
    schedules are for the hires pass: integers count from the end of the first pass, fractions from 1.0.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if hires_steps is None or use_old_scheduling:
        rule = _StepRule(steps, old_scheduling=use_old_scheduling)
    else:
        if not isinstance(hires_steps, int) or hires_steps < 1:
            raise ValueError(f"hires_steps must be a positive integer, got {hires_steps!r}")
        rule = _StepRule(hires_steps, int_offset=steps, float_offset=1.0)
    schedules = {prompt: _schedule(prompt, rule) for prompt in set(prompts)}
    return [schedules[prompt] for prompt in prompts]


def text_at_step(schedule: list[tuple[int, str]], step: int) -> str:
    """The text of a schedule that applies at `step`: the first entry with `step <= end_at_step`.

    A1111's CFG denoiser passes its model-call counter, starting at 0, so with 10 steps `[a:b:3]` gives a for
    sampling steps 0..3 (four steps) and `[a|b]` gives a, a, b, a, b, ...
    """
    for end_at_step, text in schedule:
        if step <= end_at_step:
            return text
    return schedule[0][1]


# ---------------------------------------------------------------------------------------------------------
# Composable prompts: "a cat AND a dog :0.5"
# ---------------------------------------------------------------------------------------------------------
_AND = re.compile(r"\bAND\b")
_AND_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """The `AND` parts of a prompt with their weights (default 1.0); a trailing `:number` is a part's weight."""
    parts = []
    for subprompt in _AND.split(prompt):
        match = _AND_WEIGHT.search(subprompt)
        if match is None:
            parts.append((subprompt, 1.0))
            continue
        text, weight = match.groups()
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


def get_multicond_prompt_list(
    prompts: list[str],
) -> tuple[list[list[tuple[int, float]]], list[str], dict[str, int]]:
    """A1111's shape: per prompt `(index, weight)` into a deduplicated flat list of texts, plus text -> index."""
    all_indexes: list[list[tuple[int, float]]] = []
    flat: list[str] = []
    index_of: dict[str, int] = {}
    for prompt in prompts:
        indexes = []
        for text, weight in split_and(prompt):
            if text not in index_of:
                index_of[text] = len(flat)
                flat.append(text)
            indexes.append((index_of[text], weight))
        all_indexes.append(indexes)
    return all_indexes, flat, index_of


# ---------------------------------------------------------------------------------------------------------
# Emphasis
# ---------------------------------------------------------------------------------------------------------
_ATTENTION = re.compile(
    r"""
    \\\( | \\\) | \\\[ | \\\] | \\\\ | \\ |   # escapes; a lone backslash
    \( | \[ |
    :\s*([+-]?[.\d]+)\s*\) |                 # "(text:1.3)" closing with an explicit weight
    \) | \] |
    [^\\()\[\]:]+ |
    :
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
BREAK_MARKER = ("BREAK", -1.0)  # weight -1 exactly marks a chunk break, as in A1111
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Weighted fragments of a prompt: `(x)` x1.1, `[x]` /1.1, `(x:1.3)`, escapes `\\(` `\\)` `\\[` `\\]` `\\\\`.

    `BREAK` yields `("BREAK", -1.0)`. Unclosed brackets apply to the end of the prompt, stray closing ones are
    text, adjacent fragments with equal weights are merged. Never raises.
    """
    fragments: list[list] = []  # [text, weight], mutable while brackets close
    open_round: list[int] = []
    open_square: list[int] = []

    def multiply_from(start: int, multiplier: float) -> None:
        for fragment in fragments[start:]:
            fragment[1] *= multiplier

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            fragments.append([token[1:], 1.0])  # a lone backslash is dropped, as in A1111
        elif token == "(":
            open_round.append(len(fragments))
        elif token == "[":
            open_square.append(len(fragments))
        elif weight is not None and open_round and _is_float(weight):
            multiply_from(open_round.pop(), float(weight))
        elif token == ")" and open_round:
            multiply_from(open_round.pop(), ROUND_MULTIPLIER)
        elif token == "]" and open_square:
            multiply_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    fragments.append(list(BREAK_MARKER))
                fragments.append([part, 1.0])

    for start in open_round:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        multiply_from(start, SQUARE_MULTIPLIER)
    if not fragments:
        fragments = [["", 1.0]]

    merged: list[list] = [fragments[0]]
    for fragment in fragments[1:]:
        if fragment[1] == merged[-1][1]:
            merged[-1][0] += fragment[0]
        else:
            merged.append(fragment)
    return [(fragment_text, weight) for fragment_text, weight in merged]


def _is_float(text: str) -> bool:
    # "(a:1.2.3)" would make A1111 raise; here the ":1.2.3)" stays text and the bracket stays open.
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------
# Extra networks
# ---------------------------------------------------------------------------------------------------------
# A1111's extra-network syntax `<lora:name:0.8>`, `<hypernet:name>`, `<ti:...>`: a word, a colon, arguments.
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


def extra_network_tags(prompt: str) -> list[str]:
    """The `<kind:args>` extra-network tags in a prompt, as written (e.g. ["<lora:detail:0.8>"])."""
    return [match.group(0) for match in _EXTRA_NETWORK.finditer(prompt or "")]


# ---------------------------------------------------------------------------------------------------------
# A1111's conditioning records and the functions that make them (for extensions that wrap or read them)
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduledPromptConditioning:
    """The conditioning `cond` of one prompt, used up to step `end_at_step` (A1111's namedtuple fields)."""

    end_at_step: int
    cond: object

    def __iter__(self):  # unpacks as A1111's namedtuple: `end_at_step, cond = c`
        return iter((self.end_at_step, self.cond))


@dataclass
class ComposableScheduledPromptConditioning:
    schedules: list[ScheduledPromptConditioning]
    weight: float = 1.0


@dataclass
class MulticondLearnedConditioning:
    """Per prompt of a batch, its `AND` parts, each with its weight and schedule."""

    shape: tuple
    batch: list[list[ComposableScheduledPromptConditioning]]


class SdConditioning(list):
    """A1111's list of prompts for the model's text encoder, with what it knows of them: whether they are the
    negative prompts, and the image size (`copy_from`: another SdConditioning whose flags are taken)."""

    def __init__(self, prompts, is_negative_prompt: bool = False, width: int | None = None,
                 height: int | None = None, copy_from=None):  # fmt: skip
        super().__init__(prompts)
        source = prompts if copy_from is None else copy_from
        self.is_negative_prompt = is_negative_prompt or getattr(source, "is_negative_prompt", False)
        self.width = width or getattr(source, "width", None)
        self.height = height or getattr(source, "height", None)


def get_learned_conditioning(model, prompts, steps: int, hires_steps: int | None = None,
                             use_old_scheduling: bool = False) -> list[list[ScheduledPromptConditioning]]:  # fmt: skip
    """Per prompt, its schedule as `ScheduledPromptConditioning(end_at_step, cond)`: each text of the prompt's
    editing schedule encoded by `model.get_learned_conditioning(texts)` (one call per distinct prompt).

    `cond` is one row of what the model returns: a tensor [tokens, dim], or a dict of rows for a model with
    a pooled embedding. Extensions wrap this function (A1111 calls the module attribute, so a replacement is
    what the engine uses: see sdwebui.facade.learned_conditioning).
    """
    schedules = get_learned_conditioning_prompt_schedules(
        list(prompts), steps, hires_steps, use_old_scheduling
    )
    found: dict[str, list[ScheduledPromptConditioning]] = {}
    result = []
    for prompt, schedule in zip(prompts, schedules, strict=True):
        if prompt not in found:
            texts = SdConditioning([text for _, text in schedule], copy_from=prompts)
            conds = model.get_learned_conditioning(texts)
            found[prompt] = [
                ScheduledPromptConditioning(end_at_step, _row(conds, i))
                for i, (end_at_step, _) in enumerate(schedule)
            ]
        result.append(found[prompt])
    return result


def _row(conds, i: int):
    return {key: value[i] for key, value in conds.items()} if isinstance(conds, dict) else conds[i]


def get_multicond_learned_conditioning(model, prompts, steps: int, hires_steps: int | None = None,
                                       use_old_scheduling: bool = False) -> MulticondLearnedConditioning:  # fmt: skip
    """Every `AND` part of every prompt through `get_learned_conditioning` (the module attribute, so that an
    extension's replacement sees them), each distinct text once; per prompt its parts with their weights."""
    indexes, texts, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(
        model, SdConditioning(texts, copy_from=prompts), steps, hires_steps, use_old_scheduling
    )
    batch = [
        [ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in parts]
        for parts in indexes
    ]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


def cond_at_step(schedules: list[ScheduledPromptConditioning], current_step: int) -> object:
    """The `cond` whose range holds `current_step` (the last one after the end), as A1111's reconstruct."""
    for entry in schedules:
        if current_step <= entry.end_at_step:
            return entry.cond
    return schedules[-1].cond


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step: int) -> object:
    """Each prompt's cond at this step, stacked into one batch tensor when they are tensors (A1111)."""
    conds = [cond_at_step(schedules, current_step) for schedules in c]
    import torch  # only here: the parser itself is pure Python

    return torch.stack(conds) if conds and all(isinstance(x, torch.Tensor) for x in conds) else conds


# The functions as this module defines them: an extension that wraps one sets the module attribute to its own
# (the facade then routes the engine's conditioning through it).
_OWN = {"get_learned_conditioning": get_learned_conditioning,
        "get_multicond_learned_conditioning": get_multicond_learned_conditioning}  # fmt: skip


def replaced_functions() -> list[str]:
    """Names of this module's conditioning functions an extension replaced (empty: the engine's own path)."""
    module = globals()
    return [name for name, own in _OWN.items() if module.get(name) is not own]
