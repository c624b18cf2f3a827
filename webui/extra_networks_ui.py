"""A1111's extra networks panel under a generation tab's prompt: Textual Inversion / Lora / Hypernetworks
tabs of cards (webui.extra_networks), a Refresh button and the card's edit dialog.

The cards are HTML rendered when the panel opens or is refreshed; clicking, searching, sorting and the
folder tree happen in the page (javascript/extra_networks.js). The card's edit button writes
``{"kind", "name"}`` into a hidden box and clicks a hidden button, which opens the dialog here: the user
metadata (description, activation text, preferred weight, negative text, notes) is saved as ``name.json``
beside the listed file, and the training metadata (``ss_*`` keys) is shown read-only.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass

import gradio as gr

from sdwebui.models.lora.sidecars import UserMetadata
from webui import extra_networks as en
from webui.backend import UiBackend
from webui.progress import error_html

log = logging.getLogger(__name__)

NO_HYPERNETWORKS = "No hypernetworks: this build does not load hypernetwork files (use a Lora instead)."


@dataclass
class EditDialog:
    group: gr.Group
    title: gr.HTML
    description: gr.Textbox
    activation_text: gr.Textbox
    preferred_weight: gr.Slider
    negative_text: gr.Textbox
    notes: gr.Textbox
    training: gr.HTML
    save: gr.Button
    close: gr.Button
    status: gr.HTML

    def fields(self) -> list:
        return [self.description, self.activation_text, self.preferred_weight, self.negative_text, self.notes]


@dataclass
class ExtraNetworksPanel:
    accordion: gr.Accordion
    panes: dict[str, gr.HTML]
    refresh: gr.Button
    dialog: EditDialog


def _panes_html(backend: UiBackend, tab: str) -> list[str]:
    out = []
    for kind in en.TABS:
        try:
            out.append(en.pane_html(tab, kind, en.cards_for(backend.services, kind)))
        except Exception as exc:  # an unreadable folder: say so in the pane, keep the page working
            log.warning("extra networks %s: %s", kind, exc)
            out.append(error_html(f"{en.TABS[kind]}: {exc}"))
    return out


def _build_dialog(tab: str) -> EditDialog:
    with gr.Group(
        visible=False, elem_id=f"{tab}_extra_edit_dialog", elem_classes="extra-network-edit"
    ) as group:
        title = gr.HTML(elem_id=f"{tab}_extra_edit_title")
        description = gr.Textbox(label="Description", lines=2, elem_id=f"{tab}_extra_edit_description")
        activation = gr.Textbox(label="Activation text", elem_id=f"{tab}_extra_edit_activation_text")
        weight = gr.Slider(0.0, 2.0, value=0.0, step=0.01, label="Preferred weight (0: the default)",
                           elem_id=f"{tab}_extra_edit_preferred_weight")  # fmt: skip
        negative = gr.Textbox(label="Negative prompt", elem_id=f"{tab}_extra_edit_negative_text")
        notes = gr.Textbox(label="Notes", lines=2, elem_id=f"{tab}_extra_edit_notes")
        training = gr.HTML(elem_id=f"{tab}_extra_edit_training", elem_classes="extra-network-training")
        with gr.Row():
            save = gr.Button("Save", variant="primary", elem_id=f"{tab}_extra_edit_save")
            close = gr.Button("Cancel", elem_id=f"{tab}_extra_edit_cancel")
        status = gr.HTML(elem_id=f"{tab}_extra_edit_status")
    return EditDialog(group, title, description, activation, weight, negative, notes, training, save, close,
                      status)  # fmt: skip


def build_extra_networks(tab: str, backend: UiBackend) -> ExtraNetworksPanel:
    with gr.Accordion("Extra networks", open=False, elem_id=f"{tab}_extra_networks") as accordion:
        with gr.Row(elem_classes="compact-row"):
            refresh = gr.Button("Refresh", size="sm", scale=0, min_width=80, elem_id=f"{tab}_extra_refresh")
        panes: dict[str, gr.HTML] = {}
        with gr.Tabs(elem_id=f"{tab}_extra_tabs_networks"):
            for kind, label in en.TABS.items():
                with gr.Tab(label, elem_id=f"{tab}_{kind}_tab"):
                    panes[kind] = gr.HTML(elem_id=f"{tab}_{kind}_cards_html")
            with gr.Tab("Hypernetworks", elem_id=f"{tab}_hypernetworks_tab"):
                gr.HTML(f'<div class="extra-network-empty">{html.escape(NO_HYPERNETWORKS)}</div>')
        target = gr.Textbox(visible="hidden", elem_id=f"{tab}_extra_edit_target", show_label=False)
        open_edit = gr.Button(visible="hidden", elem_id=f"{tab}_extra_edit_open")
        dialog = _build_dialog(tab)
    panel = ExtraNetworksPanel(accordion, panes, refresh, dialog)
    _wire(tab, backend, panel, target, open_edit)
    return panel


def _wire(tab: str, backend: UiBackend, panel: ExtraNetworksPanel, target: gr.Textbox, open_edit) -> None:
    services, dialog, panes = backend.services, panel.dialog, list(panel.panes.values())
    panel.accordion.expand(lambda: _panes_html(backend, tab), outputs=panes, show_progress="hidden")

    def refresh():
        if services.loras is not None:
            services.loras.refresh()
        services.embeddings.refresh()
        return _panes_html(backend, tab)

    panel.refresh.click(refresh, outputs=panes, show_progress="hidden")

    def open_dialog(raw: str):
        try:
            request = json.loads(raw or "{}")
            details = en.card_details(services, str(request.get("kind")), str(request.get("name")))
        except (ValueError, LookupError, AttributeError) as exc:
            return [gr.update()] * 8 + [error_html(str(exc))]
        user = details.user
        title = f"<h3>{html.escape(en.TABS[details.kind])}: {html.escape(details.name)}</h3>"
        return [gr.update(visible=True), title, user.description, user.activation_text, user.preferred_weight,
                user.negative_text, user.notes, en.training_metadata_html(details.training), ""]  # fmt: skip

    open_edit.click(
        open_dialog,
        inputs=target,
        outputs=[dialog.group, dialog.title, *dialog.fields(), dialog.training, dialog.status],
        show_progress="hidden",
    )

    def save(raw: str, description: str, activation: str, weight: float, negative: str, notes: str):
        try:
            request = json.loads(raw or "{}")
            user = UserMetadata(description=description or "", activation_text=activation or "",
                                preferred_weight=float(weight or 0.0), negative_text=negative or "",
                                notes=notes or "")  # fmt: skip
            en.save_details(services, str(request.get("kind")), str(request.get("name")), user)
        except (ValueError, LookupError, OSError, AttributeError) as exc:
            return [gr.update(), error_html(f"Not saved: {exc}"), *[gr.update() for _ in panes]]
        return [gr.update(visible=False), "", *_panes_html(backend, tab)]

    dialog.save.click(
        save,
        inputs=[target, *dialog.fields()],
        outputs=[dialog.group, dialog.status, *panes],
        show_progress="hidden",
    )
    dialog.close.click(lambda: gr.update(visible=False), outputs=dialog.group, show_progress="hidden")
