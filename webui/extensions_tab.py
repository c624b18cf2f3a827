"""Extensions tab: Installed (enable/disable, check for updates, update, uninstall, Apply and restart UI),
Install from URL, Available (index JSON from a URL or a local file).

`create_extensions_tab(services)` builds the tab inside the caller's Blocks/Tab; the handlers live in
`ExtensionsActions` (plain Python over `services.extensions`, the ExtensionSystem) so they can be tested
without a browser.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr

from sdwebui.extensions.manager import ExtensionError

log = logging.getLogger(__name__)

INSTALLED_HEADERS = ["Extension", "Enabled", "Branch", "Version", "Update", "URL", "Problem"]
AVAILABLE_HEADERS = ["Extension", "Description", "Tags", "Installed", "URL"]
INDEX_OPTION = "extensions_index_url"
# A1111's public index; only fetched when the user clicks "Load from:" (a local file works offline)
DEFAULT_INDEX = (
    "https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/master/index.json"
)


class ExtensionsActions:
    """What the tab's buttons do; every method returns plain values for the components."""

    def __init__(self, services: Any):
        self.services = services

    @property
    def system(self):
        return self.services.extensions

    @property
    def manager(self):
        return self.system.manager

    def installed_rows(self) -> list[list[Any]]:
        return [
            [
                e["name"] + (" (built-in)" if e["is_builtin"] else ""),
                e["enabled"],
                e["branch"],
                e["version"],
                e["update_status"],
                e["remote"],
                e["install_error"] or "",
            ]
            for e in self.manager.list_for_ui()
        ]

    def names(self, user_only: bool = False) -> list[str]:
        return [e.name for e in self.manager.extensions if not (user_only and e.is_builtin)]

    def enabled_names(self) -> list[str]:
        return [e.name for e in self.manager.extensions if e.enabled]

    def apply_and_restart(self, enabled: list[str]) -> str:
        """Persist the enabled set and re-import the scripts of enabled extensions."""
        wanted = set(enabled or [])
        for name in self.names():
            self.manager.set_enabled(name, name in wanted)
        self.system.reload()
        return f"Applied: {len(wanted)} enabled. Reload the page to see changed UI elements."

    def check_updates(self) -> str:
        statuses = self.manager.check_updates()
        behind = [name for name, status in statuses.items() if status == "behind"]
        errors = [f"{name}: {status}" for name, status in statuses.items() if status.startswith("error")]
        text = f"Updates available: {', '.join(behind)}" if behind else "All extensions are up to date."
        return text + ("\n" + "\n".join(errors) if errors else "")

    def update(self, name: str) -> str:
        if not name:
            raise ExtensionError("update: choose an extension")
        ext = self.manager.update(name)
        return f"Updated {name} to {(ext.commit_hash or '')[:8]}. Apply and restart UI to use it."

    def uninstall(self, name: str) -> str:
        if not name:
            raise ExtensionError("uninstall: choose an extension")
        self.manager.uninstall(name)
        self.system.reload()
        return f"Uninstalled {name}."

    def install(self, url: str, branch: str, folder: str) -> str:
        ext = self.manager.install(url, (branch or "").strip() or None, (folder or "").strip() or None)
        if ext.install_error:
            return f"Installed {ext.name} but its install.py failed, so it is disabled: {ext.install_error}"
        self.system.reload()
        return f"Installed {ext.name} into {ext.path}."

    def available(self, index: str) -> list[list[Any]]:
        if not index or not index.strip():
            raise ExtensionError("extension index: give a URL or a file path")
        rows = self.manager.load_index(index.strip())
        options = getattr(self.services, "options", None)
        if options is not None and options.get(INDEX_OPTION) != index.strip():
            options.set(INDEX_OPTION, index.strip())
            options.save()
        return [[r["name"], r["description"], ", ".join(r["tags"]), r["installed"], r["url"]] for r in rows]


def _message(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _error(exc: Exception) -> str:
    return f"<p class='error'>{html.escape(str(exc))}</p>"


def create_extensions_tab(services: Any) -> ExtensionsActions:
    """Build the tab's components (call inside `with gr.Tab("Extensions"):`)."""
    actions = ExtensionsActions(services)
    default_index = (
        services.options.get(INDEX_OPTION, "") if getattr(services, "options", None) else ""
    ) or ""
    with gr.Tabs(elem_id="tabs_extensions"):
        with gr.Tab("Installed", id="installed"):
            with gr.Row():
                apply = gr.Button("Apply and restart UI", variant="primary", elem_id="extensions_apply")
                check = gr.Button("Check for updates", elem_id="extensions_check")
            enabled = gr.CheckboxGroup(
                label="Enabled extensions",
                choices=actions.names(),
                value=actions.enabled_names(),
                elem_id="extensions_enabled",
            )
            table = gr.Dataframe(
                headers=INSTALLED_HEADERS,
                value=actions.installed_rows(),
                interactive=False,
                elem_id="extensions_installed_table",
            )
            with gr.Row():
                chosen = gr.Dropdown(label="Extension", choices=actions.names(user_only=True), value=None)
                update = gr.Button("Update", elem_id="extensions_update")
                uninstall = gr.Button("Uninstall", variant="stop", elem_id="extensions_uninstall")
            status = gr.HTML(elem_id="extensions_status")
        with gr.Tab("Available", id="available"):
            with gr.Row():
                index = gr.Textbox(label="Extension index URL or file", value=default_index, scale=4)
                load = gr.Button("Load from:", elem_id="extensions_load_index")
            available = gr.Dataframe(
                headers=AVAILABLE_HEADERS, interactive=False, elem_id="extensions_available"
            )
            available_status = gr.HTML()
        with gr.Tab("Install from URL", id="install"):
            url = gr.Textbox(label="URL for extension's git repository", elem_id="extensions_install_url")
            branch = gr.Textbox(label="Specific branch name", placeholder="leave empty for default")
            folder = gr.Textbox(label="Local directory name", placeholder="leave empty for auto")
            install = gr.Button("Install", variant="primary", elem_id="extensions_install_button")
            install_status = gr.HTML(elem_id="extensions_install_result")

    def refreshed(message: str):
        return (
            message,
            actions.installed_rows(),
            gr.update(choices=actions.names(), value=actions.enabled_names()),
            gr.update(choices=actions.names(user_only=True), value=None),
        )

    outputs = [status, table, enabled, chosen]

    def guarded(fn, *args):
        try:
            return refreshed(_message(fn(*args)))
        except ExtensionError as exc:
            return refreshed(_error(exc))

    apply.click(lambda names: guarded(actions.apply_and_restart, names), inputs=[enabled], outputs=outputs)
    check.click(lambda: guarded(actions.check_updates), outputs=outputs)
    update.click(lambda name: guarded(actions.update, name), inputs=[chosen], outputs=outputs)
    uninstall.click(lambda name: guarded(actions.uninstall, name), inputs=[chosen], outputs=outputs)

    def do_install(u, b, f):
        message, rows, en, ch = guarded(actions.install, u, b, f)
        return message, rows, en, ch, message

    install.click(do_install, inputs=[url, branch, folder], outputs=[*outputs, install_status])

    def do_load(source):
        try:
            return actions.available(source), ""
        except ExtensionError as exc:
            return gr.update(), _error(exc)

    load.click(do_load, inputs=[index], outputs=[available, available_status])
    return actions
