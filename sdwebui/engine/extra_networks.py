"""Extra networks in prompts: ``<lora:name:weight>`` tags parsed, removed from the encoded text, activated.

Syntax as A1111: ``<lora:name>``, ``<lora:name:w>`` (text encoder and U-Net), ``<lora:name:te:unet>``, and
named ``te=``/``unet=`` arguments that win over positional ones (``<lora:name:1:unet=0.5:te=0.8>``); the
U-Net multiplier defaults to the text encoder's. ``lyco`` is an alias of ``lora``. The kinds an extension
registered (``EngineHooks.extra_network_kinds``: the facade activates them per batch) are removed from the
encoded text; other kinds are refused, as are LoRA tags in a negative prompt (A1111 encodes them as text
there). The tags stay in the job's prompts, so the infotext keeps them.

Which networks apply: as A1111, those of the first prompt of each batch (a script that gives the images of
one batch different LoRAs gets the first image's for all of them). They are applied to the job's model
through its lease: ``LoraNetworksPatch`` is a lease patch that puts an ``ActiveNetworks`` on the job's view
(``model.extra[ACTIVE_KEY]``); the engine asks it per batch for the wanted set and it re-patches only when
the set changes; the lease's undo restores the shared weights bit-exactly. The other checkpoints a job's
passes run on (the refiner, hr_checkpoint_name) get the same set per batch through their own leases
(sdwebui.engine.pass_networks: applied where it fits; a file that fits nothing there is named in the
infotext, not refused as on the job's model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdwebui.engine.hooks import JobState
from sdwebui.engine.prompt_parser import extra_network_tags
from sdwebui.engine.requests import RequestError
from sdwebui.models.lora import DeltaCache, LoraError, LoraNetwork, LoraPatch, NetworkWeight, Undo
from sdwebui.models.model import LoadedModel

LORA_KINDS = ("lora", "lyco")
ACTIVE_KEY = "extra_networks"  # LoadedModel.extra key of the job's ActiveNetworks
HASHES_KEY = "Lora hashes"


@dataclass(frozen=True)
class LoraTag:
    name: str
    te: float = 1.0
    unet: float = 1.0
    text: str = dataclasses.field(default="", compare=False)  # as written, for messages


def _number(value: str, tag: str, field_name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise RequestError(field_name, f"{tag}: {value!r} is not a number") from None


def parse_lora_tag(tag: str, field_name: str = "prompt") -> LoraTag:
    """One ``<lora:...>`` tag as written; RequestError for a malformed weight or an unknown argument."""
    items = tag[1:-1].split(":")[1:]
    positional = [item for item in items if len(item.split("=")) != 2]
    named = dict(item.split("=") for item in items if len(item.split("=")) == 2)
    unknown = sorted(set(named) - {"te", "unet"})
    if unknown:
        raise RequestError(field_name, f"{tag}: unsupported argument(s) {', '.join(unknown)} (te=, unet=)")
    if not positional or len(positional) > 3 or not positional[0].strip():
        raise RequestError(field_name, f"{tag}: expected <lora:name:te_weight:unet_weight>")
    te = _number(positional[1], tag, field_name) if len(positional) > 1 else 1.0
    te = _number(named["te"], tag, field_name) if "te" in named else te
    unet = _number(positional[2], tag, field_name) if len(positional) > 2 else te
    unet = _number(named["unet"], tag, field_name) if "unet" in named else unet
    return LoraTag(positional[0].strip(), te, unet, tag)


def split_prompt(
    prompt: str, field_name: str = "prompt", handled: frozenset[str] = frozenset()
) -> tuple[str, list[LoraTag]]:
    """(the text to encode, the LoRA tags). Tags of the `handled` kinds (extra networks an extension
    registered: the facade activates them) are removed too; any other kind is a RequestError."""
    text, loras = prompt, []
    for tag in extra_network_tags(prompt):
        kind = tag[1:].split(":", 1)[0]
        if kind in handled and kind not in LORA_KINDS and field_name == "prompt":
            text = text.replace(tag, "", 1)
            continue
        if kind not in LORA_KINDS:
            raise RequestError(field_name, f"extra networks are not supported in this build: remove {tag}")
        if field_name != "prompt":
            raise RequestError(field_name, f"LoRA tags work in the prompt only: remove {tag}")
        loras.append(parse_lora_tag(tag, field_name))
        text = text.replace(tag, "", 1)
    return text, loras


def check_prompts(
    prompts: list[str], negative_prompts: list[str], handled: frozenset[str] = frozenset()
) -> list[LoraTag]:
    """Every tag checked; the LoRA tags of the first prompt (the ones that apply)."""
    first: list[LoraTag] | None = None
    for prompt in prompts:
        tags = split_prompt(prompt, handled=handled)[1]
        first = tags if first is None else first
    for negative in negative_prompts:
        split_prompt(negative, "negative_prompt")
    return first or []


def lora_tags(prompt: str) -> list[LoraTag]:
    """Only the LoRA tags of a prompt (an extension's own tag kinds are left to its scripts)."""
    tags = extra_network_tags(prompt)
    return [parse_lora_tag(tag) for tag in tags if tag[1:].split(":", 1)[0] in LORA_KINDS]


# -- applying ----------------------------------------------------------------------------------------------
Resolve = Callable[[str, LoadedModel], LoraNetwork | None]  # a name -> the network read for the model


class ActiveNetworks:
    """The networks applied to one job's view right now."""

    def __init__(self, patch: LoraNetworksPatch, model: LoadedModel):
        self.patch, self.model = patch, model
        self.current: tuple[LoraTag, ...] = ()
        self.requested: tuple[LoraTag, ...] = ()  # the prompt's tags, as the engine last asked
        self.pinned: tuple[LoraTag, ...] = ()  # set by a script (modules.extra_networks' Lora network)
        self.weights: list[tuple[str, NetworkWeight]] = []
        self._undo: Undo | None = None

    def activate(self, tags: list[LoraTag]) -> bool:
        """Patch the model with `tags` and the pinned ones (unpatching the previous set); True when the
        set changed."""
        self.requested = tuple(tags)
        wanted = (*tags, *(tag for tag in self.pinned if tag not in tags))
        if wanted == self.current:
            return False
        weights = [(tag.name, NetworkWeight(self._network(tag.name), tag.te, tag.unet)) for tag in wanted]
        patch = LoraPatch([w for _, w in weights], self.patch.cache)
        if self._undo is not None and weights and patch.reweight(self._undo):  # same networks, new weights
            self.current, self.weights = wanted, weights
            return True
        self._unpatch()
        try:
            if weights:
                self._undo = patch.apply(self.model)
        except LoraError as error:
            raise RequestError("prompt", str(error)) from None
        self.current, self.weights = wanted, weights
        return True

    def pin(self, tags: list[LoraTag]) -> None:
        """Networks applied beside the prompt's from now on (a script's activate(p, params)); [] unpins."""
        self.pinned = tuple(tags)
        self.activate(list(self.requested))

    def deactivate(self) -> None:
        self.pinned = self.requested = ()
        self._unpatch()

    def _unpatch(self) -> None:
        undo, self._undo = self._undo, None
        self.current, self.weights = (), []
        if undo is not None:
            undo()

    def hashes(self) -> str | None:
        """A1111's ``Lora hashes`` value: "name: shorthash, ..." by the names written in the prompt."""
        if not self.patch.add_hashes:
            return None
        seen = dict.fromkeys(
            f"{name.replace(':', '').replace(',', '')}: {weight.network.shorthash}"
            for name, weight in self.weights
            if weight.network.shorthash
        )
        return ", ".join(seen) or None

    def _network(self, name: str) -> LoraNetwork:
        try:
            network = self.patch.resolve(name, self.model)
        except (LoraError, OSError) as error:
            raise RequestError("prompt", f"LoRA {name!r}: {error}") from None
        if network is None:
            raise RequestError("prompt", f"unknown LoRA {name!r} (see /sdapi/v1/loras; try refresh)")
        return network


@dataclass(frozen=True, eq=False)
class LoraNetworksPatch:
    """The lease patch of a job that may use LoRAs: nothing changes until the engine activates a set."""

    resolve: Resolve
    cache: DeltaCache
    add_hashes: bool = True

    def apply(self, model: LoadedModel) -> Callable[[], None]:
        active = ActiveNetworks(self, model)
        model.extra[ACTIVE_KEY] = active

        def undo() -> None:
            try:
                active.deactivate()
            finally:
                model.extra.pop(ACTIVE_KEY, None)

        return undo


class JobNetworks:
    """Per job: each batch's prompts checked, their networks activated, the text to encode returned."""

    def __init__(
        self,
        model: LoadedModel,
        state: JobState,
        switch_allowed: bool = True,
        handled: frozenset[str] = frozenset(),
    ):
        self.model, self.state, self.switch_allowed = model, state, switch_allowed
        self.handled = handled  # extension-registered tag kinds: removed from the text, not refused
        self.activations = 0
        self.wrote_hashes = False
        # called when a later batch changes the networks: encodings cached by text are stale then
        self.on_change: Callable[[], None] = lambda: None

    def prompts_for_batch(self, prompts: list[str], negative_prompts: list[str]) -> list[str]:
        """The prompts without their tags, after activating the networks of the first one."""
        tags = check_prompts(prompts, negative_prompts, self.handled)
        split = [split_prompt(p, handled=self.handled) for p in prompts]
        active: Any = self.model.extra.get(ACTIVE_KEY)
        if active is None:
            written = [tag for _, tags_of in split for tag in tags_of]
            if written:
                raise RequestError("prompt", f"LoRA is not available for this job: remove {written[0].text}")
            return [text for text, _ in split]  # tags of handled kinds removed
        if self.activations and not self.switch_allowed and tuple(tags) != active.current:
            raise RequestError(
                "prompt", "the batches of this job name different LoRAs: use stage order batch"
            )
        changed = active.activate(tags)
        self.activations += 1
        hashes = active.hashes()
        if hashes:
            self.state.extra_generation_params[HASHES_KEY] = hashes
        elif self.wrote_hashes:  # only ours: an extension may write the key itself
            self.state.extra_generation_params.pop(HASHES_KEY, None)
        self.wrote_hashes = bool(hashes)
        if changed and self.activations > 1:
            self.on_change()
        return [text for text, _ in split]
