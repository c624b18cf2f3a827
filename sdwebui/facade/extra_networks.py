"""A1111's `modules.extra_networks` for extensions: `<name:arg1:arg2>` prompt tags and their handlers.

An extension registers an `ExtraNetwork` subclass under a tag name; `parse_prompt(s)` removes the tags from
prompts and returns their arguments by name; `activate(p, data)` calls each registered network with its
arguments (and the others with none), `deactivate(p, data)` undoes them. The app's own processing does not
call them yet (no built-in extra networks: the engine refuses prompts that still hold tags), so an
extension that registers a network parses and activates it in its own script.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from typing import Any

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


def initialize() -> None:
    extra_network_registry.clear()
    extra_network_aliases.clear()


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
