"""A1111's `modules.extra_networks` for extensions: `<name:arg1:arg2>` prompt tags and their handlers.

An extension registers an `ExtraNetwork` subclass under a tag name; `parse_prompt(s)` removes the tags from
prompts and returns their arguments by name; `activate(p, data)` calls each registered network with its
arguments (and the others with none), `deactivate(p, data)` undoes them.

As in A1111 the registry holds the built-in Lora network (`lora`, alias `lyco`: `ExtraNetworkLora`). The
engine applies the LoRA tags of each batch's prompt itself (sdwebui.engine.extra_networks); calling the
Lora network's `activate(p, params)` applies that set to the job's model the same way. For a job that
builds `p`, `activate_batch` runs A1111's per-batch step: every batch's prompts parsed, the networks an
extension registered activated with their tags (the others with []), `after_extra_networks_activate`
called with all tags found; `deactivate_job` at the end. The engine removes the registered kinds from the
encoded text (`custom_kinds()`, given it as `EngineHooks.extra_network_kinds`) and keeps them in the
infotext.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from typing import Any

from sdwebui.engine.extra_networks import ACTIVE_KEY, LORA_KINDS, parse_lora_tag
from sdwebui.facade import errors

log = logging.getLogger("webui.extensions")

_TAG = re.compile(r"<(\w+):([^>]+)>")

extra_network_registry: dict[str, ExtraNetwork] = {}
extra_network_aliases: dict[str, ExtraNetwork] = {}


class ExtraNetworkParams:
    """The arguments of one tag: `items` as written, `positional` ones and `named` ("key=value") ones."""

    def __init__(self, items: list[Any] | None = None):
        self.items = list(items or [])
        self.positional: list[Any] = []
        self.named: dict[str, str] = {}
        for item in self.items:
            parts = item.split("=") if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExtraNetworkParams) and self.items == other.items

    def __repr__(self) -> str:
        return f"ExtraNetworkParams(items={self.items!r})"


class ExtraNetwork:
    """Base class: `activate(p, params_list)` is called on every run (an empty list means "off"),
    `deactivate(p)` at the end."""

    def __init__(self, name: str):
        self.name = name

    def activate(self, p: Any, params_list: list[ExtraNetworkParams]) -> None:
        raise NotImplementedError

    def deactivate(self, p: Any) -> None:
        raise NotImplementedError


class ExtraNetworkLora(ExtraNetwork):
    """A1111's built-in Lora network: `activate(p, params)` patches the job's model with those networks
    (each params: name, then te/unet weights or te=/unet=) beside the prompt's own tags, for the rest of
    the job; `deactivate(p)` removes them. Outside a job that allows LoRAs it raises (nothing to patch)."""

    def __init__(self):
        super().__init__("lora")

    @staticmethod
    def _active(p: Any) -> Any:
        extra = getattr(getattr(p, "sd_model", None), "extra", None)
        return extra.get(ACTIVE_KEY) if isinstance(extra, dict) else None

    def activate(self, p: Any, params_list: list[ExtraNetworkParams]) -> None:
        tags = [
            parse_lora_tag("<lora:" + ":".join(str(i) for i in params.items) + ">") for params in params_list
        ]
        active = self._active(p)
        if active is None:
            if tags:
                raise RuntimeError("no LoRA-enabled job model on p.sd_model: Lora networks cannot be applied")
            return
        active.pin(tags)

    def deactivate(self, p: Any) -> None:
        active = self._active(p)
        if active is not None:
            active.pin([])


def register_default_extra_networks() -> None:
    lora = ExtraNetworkLora()
    register_extra_network(lora)
    register_extra_network_alias(lora, "lyco")


def initialize() -> None:
    """Empty the registry but for the built-in Lora network (A1111 re-registers it at start-up)."""
    extra_network_registry.clear()
    extra_network_aliases.clear()
    register_default_extra_networks()


def custom_kinds() -> frozenset[str]:
    """The tag kinds extensions registered (names and aliases), which the engine leaves to them."""
    names = set(extra_network_registry) | set(extra_network_aliases)
    return frozenset(names - set(LORA_KINDS))


def _is_builtin(network: ExtraNetwork) -> bool:
    return isinstance(network, ExtraNetworkLora)


def activate_batch(p: Any, prompts: list[str]) -> None:
    """A1111's per-batch activation for a job with `p`: the registered networks of extensions get their
    tags from the batch's first prompt (the others []); the built-in Lora tags are the engine's to apply."""
    _, data = parse_prompts(prompts)
    p.extra_network_data = data
    custom = {name: params for name, params in data.items() if name not in LORA_KINDS}
    done = []
    for network, params in lookup_extra_networks(custom).items():
        _call(network, "activating", lambda n=network, a=params: n.activate(p, a), params)
        done.append(network)
    for network in {id(n): n for n in extra_network_registry.values()}.values():
        if network not in done and not _is_builtin(network):
            _call(network, "activating", lambda n=network: n.activate(p, []), [])
    after = getattr(getattr(p, "scripts", None), "after_extra_networks_activate", None)
    if after is not None:
        after(p, batch_number=getattr(p, "iteration", 0), prompts=getattr(p, "prompts", None),
              seeds=getattr(p, "seeds", None), subseeds=getattr(p, "subseeds", None),
              extra_network_data=data)  # fmt: skip


def deactivate_job(p: Any) -> None:
    """`deactivate(p)` on every network an extension registered, once the job's batches are done; as A1111,
    only when the prompts held tags."""
    if not getattr(p, "extra_network_data", None):
        return
    for network in {id(n): n for n in extra_network_registry.values()}.values():
        if not _is_builtin(network):
            _call(network, "deactivating", lambda n=network: n.deactivate(p), [])


def _call(network: ExtraNetwork, doing: str, fn: Any, params: list) -> None:
    """A failing network is reported (A1111's errors.display) and the others still run."""
    try:
        fn()
    except Exception as exc:
        errors.display(exc, f"{doing} extra network {network.name} with arguments {params}")


def register_extra_network(extra_network: ExtraNetwork) -> None:
    extra_network_registry[extra_network.name] = extra_network


def register_extra_network_alias(extra_network: ExtraNetwork, alias: str) -> None:
    extra_network_aliases[alias] = extra_network


def lookup_extra_networks(
    extra_network_data: dict[str, list[ExtraNetworkParams]],
) -> dict[ExtraNetwork, list]:
    """Tag name -> params, as registered network -> params (aliases resolved; unknown names skipped)."""
    found: dict[ExtraNetwork, list[ExtraNetworkParams]] = {}
    for name, params in extra_network_data.items():
        network = extra_network_registry.get(name) or extra_network_aliases.get(name)
        if network is None:
            log.info("skipping unknown extra network: %s", name)
            continue
        found.setdefault(network, []).extend(params)
    return found


def activate(p: Any, extra_network_data: dict[str, list[ExtraNetworkParams]]) -> None:
    """Each named network with its params, then every other registered one with []; a failing network is
    reported and the others still run."""
    done = []
    for network, params in lookup_extra_networks(extra_network_data).items():
        try:
            network.activate(p, params)
            done.append(network)
        except Exception as exc:
            errors.display(exc, f"activating extra network {network.name} with arguments {params}")
    for name, network in extra_network_registry.items():
        if network not in done:
            try:
                network.activate(p, [])
            except Exception as exc:
                errors.display(exc, f"activating extra network {name}")
    after = getattr(getattr(p, "scripts", None), "after_extra_networks_activate", None)
    if after is not None:
        after(p, batch_number=getattr(p, "iteration", 0), prompts=getattr(p, "prompts", None),
              seeds=getattr(p, "seeds", None), subseeds=getattr(p, "subseeds", None),
              extra_network_data=extra_network_data)  # fmt: skip


def deactivate(p: Any, extra_network_data: dict[str, list[ExtraNetworkParams]]) -> None:
    """`deactivate(p)` on the named networks, then on every other registered one."""
    named = lookup_extra_networks(extra_network_data)
    others = [n for n in extra_network_registry.values() if n not in named]
    for network in [*named, *others]:
        try:
            network.deactivate(p)
        except Exception as exc:
            errors.display(exc, f"deactivating extra network {network.name}")


def parse_prompt(prompt: str) -> tuple[str, dict[str, list[ExtraNetworkParams]]]:
    """The prompt without its `<name:args>` tags, and {name: [params of each tag]} in the order written."""
    found: dict[str, list[ExtraNetworkParams]] = defaultdict(list)

    def take(match: re.Match[str]) -> str:
        found[match.group(1)].append(ExtraNetworkParams(items=match.group(2).split(":")))
        return ""

    return _TAG.sub(take, prompt or ""), found


def parse_prompts(prompts: list[str]) -> tuple[list[str], dict[str, list[ExtraNetworkParams]]]:
    """Every prompt without its tags; the tags of the first prompt (A1111: one set of networks per batch)."""
    cleaned: list[str] = []
    first: dict[str, list[ExtraNetworkParams]] | None = None
    for prompt in prompts:
        text, data = parse_prompt(prompt)
        cleaned.append(text)
        if first is None:
            first = data
    return cleaned, first if first is not None else defaultdict(list)


register_default_extra_networks()
