"""The extra networks panel's data: one card per Lora / textual inversion, rendered as A1111's card HTML.

A card carries what a click adds to the prompt (``<lora:name:weight>`` plus the activation text, the
negative text for the negative prompt; an embedding's name), its sort keys (name, date, path), the text the
search matches and its sub-folder for the folder tree; search, sort and the tree work in the page
(javascript/extra_networks.js). Previews are served by ``/sd_extra_networks/thumb?tab=&name=``, which looks
the name up among the listed files: a client never names a path.
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException
from fastapi.responses import FileResponse

from sdwebui.models.lora.library import LoraEntry
from sdwebui.models.lora.sidecars import UserMetadata, preview_of, read_user_metadata
from sdwebui.models.model import ModelFamily

LORA = "lora"
TEXTUAL_INVERSION = "textual_inversion"
TABS = {TEXTUAL_INVERSION: "Textual Inversion", LORA: "Lora"}
THUMB_ROUTE = "/sd_extra_networks/thumb"


@dataclass(frozen=True)
class Card:
    kind: str  # LORA or TEXTUAL_INVERSION
    name: str  # the file name without extension: what the edit dialog and the preview route look up
    relative: str  # path under its folder, "/"-separated
    mtime: float
    preview: Path | None
    prompt: str  # added to the prompt on click
    negative: str  # added to the negative prompt on click ("" none)
    description: str
    search_terms: str


@dataclass(frozen=True)
class CardDetails:
    """What the edit dialog shows: the user metadata and the training metadata (``ss_*`` keys)."""

    kind: str
    name: str
    user: UserMetadata
    training: dict[str, str]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def model_version(model: Any) -> str | None:
    family = getattr(model, "family", None)
    if family is None:
        return None
    if family in (ModelFamily.SDXL, ModelFamily.SDXL_INPAINT, ModelFamily.SDXL_REFINER):
        return "SDXL"
    return "SD2" if family in (ModelFamily.SD2, ModelFamily.SD2_V, ModelFamily.SD2_INPAINT) else "SD1"


def _forbidden_aliases(entries: list[LoraEntry]) -> set[str]:
    """Aliases a tag cannot use: one another network has as its file name or alias (A1111 uses the name)."""
    counts = Counter(n.lower() for e in entries for n in {e.name, e.alias})
    return {e.alias.lower() for e in entries if e.alias != e.name and counts[e.alias.lower()] > 1}


def _number(value: float) -> str:
    return f"{value:g}"


def lora_cards(services: Any) -> list[Card]:
    """The Lora cards, as A1111's Lora page: the alias or file name per `lora_preferred_name`, networks for
    another model family hidden unless `lora_show_all` (unknown ones too with `lora_hide_unknown_for_versions`)."""
    if services.loras is None:
        return []
    opts = services.options
    entries = services.loras.entries()
    forbidden = _forbidden_aliases(entries)
    version = model_version(getattr(services.models, "current", None))
    show_all = bool(opts.get("lora_show_all", False))
    hide_unknown = version in (opts.get("lora_hide_unknown_for_versions", []) or [])
    default = float(opts.get("extra_networks_default_multiplier", 1.0))
    by_name = opts.get("lora_preferred_name", "Alias from file") == "Filename"
    cards = []
    for entry in entries:
        if version and not show_all and entry.sd_version != version:
            if entry.sd_version or hide_unknown:  # A1111 shows unknown versions unless told not to
                continue
        tag = entry.name if by_name or entry.alias.lower() in forbidden else entry.alias
        weight = entry.user.preferred_weight or default
        prompt = f"<lora:{tag}:{_number(weight)}>"
        if entry.user.activation_text:
            prompt += " " + entry.user.activation_text
        negative = f"({entry.user.negative_text}:1)" if entry.user.negative_text else ""
        relative = PurePosixPath(Path(entry.relative)).as_posix()
        terms = " ".join([entry.name, entry.alias, relative, entry.user.description]).lower()
        cards.append(
            Card(
                LORA,
                entry.name,
                relative,
                _mtime(entry.path),
                entry.preview,
                prompt,
                negative,
                entry.user.description,
                terms,
            )  # fmt: skip
        )
    return cards


def _relative(path: Path, dirs: list[Path]) -> str:
    for root in dirs:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
    return path.name


def embedding_cards(services: Any) -> list[Card]:
    """The textual-inversion cards: those that fit the loaded model (all of them before one is loaded)."""
    model = getattr(services.models, "current", None)
    embeddings = services.embeddings.counted(model)
    cards = []
    for name, embedding in sorted(embeddings.items()):
        user = read_user_metadata(embedding.path)
        relative = _relative(embedding.path, services.embeddings.dirs)
        terms = " ".join([name, relative, user.description]).lower()
        cards.append(
            Card(
                TEXTUAL_INVERSION,
                name,
                relative,
                _mtime(embedding.path),
                preview_of(embedding.path),
                name,
                "",
                user.description,
                terms,
            )  # fmt: skip
        )
    return cards


def cards_for(services: Any, kind: str) -> list[Card]:
    return lora_cards(services) if kind == LORA else embedding_cards(services)


def _network_path(services: Any, kind: str, name: str) -> Path | None:
    """The listed file named `name` (exact file name), or None."""
    if kind == LORA:
        entry = (
            next((e for e in services.loras.entries() if e.name == name), None) if services.loras else None
        )
        return entry.path if entry else None
    if kind == TEXTUAL_INVERSION:
        embedding = services.embeddings.all().get(name)
        return embedding.path if embedding else None
    return None


def card_details(services: Any, kind: str, name: str) -> CardDetails:
    if kind == LORA and services.loras is not None:
        entry = next((e for e in services.loras.entries() if e.name == name), None)
        if entry is not None:
            training = {k: v for k, v in entry.metadata.items() if k.startswith("ss_")}
            return CardDetails(kind, name, entry.user, training)
    path = _network_path(services, kind, name)
    if path is None:
        raise LookupError(f"no {TABS.get(kind, kind)} network named {name!r} (try refresh)")
    return CardDetails(kind, name, read_user_metadata(path), {})


def save_details(services: Any, kind: str, name: str, user: UserMetadata) -> None:
    """Write the user metadata beside the listed file (LookupError when none is named `name`); the dialog
    does not show "sd version", so the file's value is kept."""
    user = dataclasses.replace(user, sd_version=card_details(services, kind, name).user.sd_version)
    if kind == LORA and services.loras is not None:
        try:
            services.loras.save_user_metadata(name, user)
            return
        except Exception as error:
            raise LookupError(str(error)) from None
    if kind != TEXTUAL_INVERSION or not services.embeddings.save_user_metadata(name, user):
        raise LookupError(f"no {TABS.get(kind, kind)} network named {name!r} (try refresh)")


# -- HTML --------------------------------------------------------------------------------------------------
def _folders(cards: list[Card]) -> list[str]:
    found = set()
    for card in cards:
        parent = PurePosixPath(card.relative).parent
        while str(parent) not in (".", ""):
            found.add(str(parent))
            parent = parent.parent
    return sorted(found)


def _tree_html(tab: str, kind: str, cards: list[Card]) -> str:
    def button(path: str, label: str, depth: int) -> str:
        return (
            f'<button class="extra-network-dir" data-path="{html.escape(path)}" style="--depth:{depth}">'
            f"{html.escape(label)}</button>"
        )

    items = [button("", "All", 0)]
    items += [button(p + "/", PurePosixPath(p).name, p.count("/") + 1) for p in _folders(cards)]
    return f'<div class="extra-network-tree" id="{tab}_{kind}_tree">{"".join(items)}</div>'


def _card_html(tab: str, card: Card, version: int) -> str:
    attr = html.escape
    if card.preview is not None:
        url = f"{THUMB_ROUTE}?tab={card.kind}&name={quote(card.name)}&mtime={int(version)}"
        image = f'<img class="card-preview" src="{attr(url)}" loading="lazy" alt="">'
    else:
        image = '<div class="card-preview card-no-preview"></div>'
    data = {
        "name": card.name,
        "path": card.relative,
        "search": card.search_terms,
        "sort-name": card.name.lower(),
        "sort-date": f"{card.mtime:020.6f}",
        "sort-path": card.relative.lower(),
        "prompt": card.prompt,
        "negative": card.negative,
        "allow-negative": "1" if card.kind == TEXTUAL_INVERSION else "",
    }
    attrs = " ".join(f'data-{k}="{attr(v)}"' for k, v in data.items())
    description = f'<div class="card-description">{attr(card.description)}</div>' if card.description else ""
    return (
        f'<div class="extra-network-card" {attrs} title="{attr(card.relative)}">{image}'
        f'<button class="card-edit" title="Edit metadata">Edit</button>'
        f'<div class="card-text"><div class="card-name">{attr(card.name)}</div>{description}</div></div>'
    )


def pane_html(tab: str, kind: str, cards: list[Card]) -> str:
    """One network tab: search, sort, folder tree and cards (the page's script handles their events)."""
    prefix = f"{tab}_{kind}"
    sort = "".join(f'<option value="{v}">{label}</option>' for v, label in
                   (("name", "Name"), ("date", "Date modified"), ("path", "Path")))  # fmt: skip
    controls = (
        f'<div class="extra-network-controls">'
        f'<input type="search" class="extra-network-search" id="{prefix}_search" placeholder="Search...">'
        f'<select class="extra-network-sort" id="{prefix}_sort">{sort}</select>'
        f'<button class="extra-network-sort-dir" id="{prefix}_sort_dir" data-dir="asc">Ascending</button>'
        f"</div>"
    )
    if cards:
        body = "".join(
            _card_html(tab, card, int(card.mtime)) for card in sorted(cards, key=lambda c: c.name.lower())
        )
    else:
        body = f'<div class="extra-network-empty">No {TABS[kind]} files found.</div>'
    return (
        f'<div class="extra-network-pane" id="{prefix}_pane" data-tabname="{tab}" data-kind="{kind}">'
        f'{controls}<div class="extra-network-body">{_tree_html(tab, kind, cards)}'
        f'<div class="extra-network-cards" id="{prefix}_cards">{body}</div></div></div>'
    )


def training_metadata_html(training: dict[str, str]) -> str:
    if not training:
        return '<div class="extra-network-metadata">No training metadata (ss_* keys) in this file.</div>'
    rows = []
    for key, value in sorted(training.items()):
        if value[:1] in "{[":
            try:
                value = json.dumps(json.loads(value), indent=1)
            except ValueError:
                pass
        rows.append(f"<tr><th>{html.escape(key)}</th><td><pre>{html.escape(value)}</pre></td></tr>")
    return f'<h4>Training metadata</h4><table class="extra-network-metadata">{"".join(rows)}</table>'


# -- previews ----------------------------------------------------------------------------------------------
def install_thumb_route(app: Any, services: Any, guard: Any = None) -> None:
    """GET /sd_extra_networks/thumb?tab=lora&name=x: the preview of the listed network `x`, else 404."""
    from fastapi import Depends

    dependencies = [Depends(guard)] if guard is not None else []

    @app.get(THUMB_ROUTE, dependencies=dependencies, include_in_schema=False)
    def thumb(tab: str, name: str, mtime: str = ""):
        if tab not in TABS:
            raise HTTPException(404, f"tab: no extra networks tab {tab!r} (one of {', '.join(TABS)})")
        path = _network_path(services, tab, name)
        preview = preview_of(path) if path is not None else None
        if preview is None:
            raise HTTPException(404, f"name: no preview for {name!r}")
        return FileResponse(preview, headers={"Cache-Control": "no-cache"})
