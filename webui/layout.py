"""The whole page: quicksettings bar, then the txt2img / img2img / Extras / PNG Info / extensions' tabs /
Settings / Extensions tabs.

`create_ui(services)` builds the Blocks; `ui_assets()` gives its CSS (Gradio 6 takes it at mount time) and
`page_scripts_html()` the scripts written into the served page (webui.page_scripts); `mount_ui` puts them
on a FastAPI app; `mount_page` is what app.py hands
the server (sdwebui.api.server.UiMount): the UI with its login in front.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import HTTPException
from starlette.requests import Request

from sdwebui.api.auth import Credentials
from sdwebui.api.errors import install_gradio_error_handlers
from sdwebui.api.file_route import install_file_route
from sdwebui.api.throttle import LoginThrottle
from sdwebui.extensions.bridge import extension_tabs
from sdwebui.extensions.component_hooks import observe as observe_components
from sdwebui.facade.scripts import BLOCKS_BUILD_LOCK
from webui import module_selector, paste
from webui.backend import UiBackend
from webui.extensions_tab import create_extensions_tab
from webui.extra_networks import install_thumb_route
from webui.extras_tab import build_extras_tab
from webui.family_presets import wire_family_presets
from webui.img2img_tab import brush_size, build_img2img_tab
from webui.login import LoginGate, UiLogin
from webui.module_selector import ModuleSelector, build_module_selector
from webui.page_scripts import PageScripts, scripts_html
from webui.pnginfo_tab import build_pnginfo_tab
from webui.settings_tab import SettingsControls, build_quicksettings, build_settings_tab, displayed_value
from webui.txt2img_tab import build_txt2img_tab
from webui.ui_config import UiConfig

WEBUI_DIR = Path(__file__).resolve().parent


JS_API = WEBUI_DIR / "javascript" / "script.js"  # A1111's page API (gradioApp, onUiLoaded...): goes first


def ui_assets(extra_css: list[Path] | None = None) -> dict[str, str]:
    """The page's CSS, ours then the extensions' style.css (the scripts: page_scripts_html)."""
    css_files = [WEBUI_DIR / "style.css", WEBUI_DIR / "extra_networks.css", *(extra_css or [])]
    css = "\n".join(path.read_text(encoding="utf-8") for path in css_files if path.exists())
    return {"css": css}


def page_scripts_html(extensions: Any) -> bytes:
    """A1111's page API first, then our scripts, then the extensions' javascript files (A1111's order), so
    extension scripts find gradioApp() & co. when they run."""
    ours = sorted(p for p in (WEBUI_DIR / "javascript").glob("*.js") if p != JS_API)
    return scripts_html([JS_API, *ours], extensions.javascript_urls() if extensions is not None else [])


def create_ui(services: Any) -> gr.Blocks:
    with BLOCKS_BUILD_LOCK:  # no other Blocks (a headless script UI) is built beside the page
        return _create_ui(services)


def _create_ui(services: Any) -> gr.Blocks:
    backend = UiBackend(services)
    cfg = UiConfig(Path(services.paths.ui_config_file))
    extensions = getattr(services, "extensions", None)  # set by attach_extensions (app.py)
    added_tabs = extension_tabs() if extensions is not None else []  # on_ui_tabs: Blocks built outside ours
    # observe: extensions' on_before_component / on_after_component around every block built here
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False) as demo, observe_components(demo):
        # queue() builds a whole Gradio app for the Blocks: called here, while they are empty, that is cheap;
        # its settings are read when events run, so this is the same queue as one set up after the build
        demo.queue(default_concurrency_limit=None)
        with gr.Row(elem_id="top_bar", equal_height=False):
            with gr.Column(scale=3, min_width=200):
                quick = build_quicksettings(backend)
            with gr.Column(scale=2, min_width=200):  # Forge's "VAE / Text Encoder" (Flux / SD3 parts)
                modules = build_module_selector(backend)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                txt2img = build_txt2img_tab(backend, cfg)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                img2img = build_img2img_tab(backend, cfg)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                extras = build_extras_tab(backend, cfg)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                pnginfo = build_pnginfo_tab()
            for blocks, title, elem_id in added_tabs:
                with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                    blocks.render()
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings = build_settings_tab(backend)
            if extensions is not None:
                with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                    create_extensions_tab(services)

        _wire_send_to(tabs, backend, txt2img, img2img, extras, pnginfo, modules)
        _sync_modules(backend, settings, modules)
        wire_family_presets(demo, backend, quick, [txt2img.params, img2img.params])

        sizes = [
            component
            for tab, params in (("txt2img", txt2img.params), ("img2img", img2img.params))
            if not cfg.has_value(tab, "Width") and not cfg.has_value(tab, "Height")
            for component in (params.width, params.height)
        ]

        def refresh_on_load():
            # values change after the Blocks were built (Apply, API, another browser, a model switch)
            native = backend.native_resolution()
            return [
                *settings.current_values(backend),
                *quick.current_values(backend),
                module_selector.current_value(backend),
                *[native for _ in sizes],
            ]

        # the settings as JSON for the page's `opts` (javascript/script.js reads it, as A1111's settings_json)
        settings_json = gr.Textbox(value="{}", elem_id="settings_json", visible="hidden", show_label=False)
        # after an Apply / a quicksetting change / a VAE / Text Encoder change
        for applied in (*settings.applied, *quick.applied, modules.applied):
            applied.then(lambda: options_json(services), outputs=settings_json, show_progress="hidden")
        demo.load(
            lambda: [*refresh_on_load(), options_json(services)],
            outputs=[*settings.components, *quick.components, modules.dropdown, *sizes, settings_json],
            show_progress="hidden",
        ).then(None, js="() => { document.body.dataset.uiLoaded = '1'; }")  # for tests and scripts
    cfg.save_missing()
    return demo


def _sync_modules(backend: UiBackend, settings: SettingsControls, modules: ModuleSelector) -> None:
    """The VAE / Text Encoder setting is also a Settings tab field: each shows the other's change (a stale
    value there would be written back by the tab's next Apply)."""
    key = module_selector.OPTION
    if key in settings.keys:
        box = settings.components[settings.keys.index(key)]
        modules.applied.then(lambda: displayed_value(backend, key), outputs=box, show_progress="hidden")
    for applied in settings.applied:
        applied.then(
            lambda: module_selector.current_value(backend), outputs=modules.dropdown, show_progress="hidden"
        )


def options_json(services: Any) -> str:
    """Every setting's current value, for the page's `opts` (values JSON cannot hold become strings)."""
    return json.dumps(services.options.items(), default=str)


def _wire_send_to(
    tabs: gr.Tabs, backend: UiBackend, txt2img, img2img, extras, pnginfo, modules: ModuleSelector
) -> None:
    """Send-to buttons: results to img2img / inpaint / extras (image and generation parameters, pasted as
    A1111 does), PNG Info parameters to txt2img / img2img (and its `Module N` parts to the VAE / Text
    Encoder selector, as Forge)."""
    img2img_fields = (("Denoising strength", img2img.denoising_strength, float), *img2img.paste_fields())
    pasted = paste.all_outputs(img2img.prompt_row, img2img.params, img2img_fields)

    def selected_file(last) -> tuple[str | None, str]:
        """The selected result as a PNG file carrying its parameters, and those parameters."""
        image, text = last.selected_image(), last.selected_infotext()
        if image is None:
            raise gr.Error("Nothing to send: generate an image first.")
        return backend.gallery_files.write(image, text, stem="sent"), text

    def pasted_values(text: str) -> list:
        parsed = paste.pasted_params(text) if text else {}
        updates = paste.field_updates(parsed, img2img.prompt_row, img2img.params, img2img_fields)
        return paste.as_outputs(updates, pasted)

    def to_img2img(last):
        path, text = selected_file(last)
        mode = img2img.select_mode("img2img")
        return [path, *pasted_values(text), *mode, gr.Tabs(selected="img2img"), gr.Tabs(selected="img2img")]

    def to_inpaint(last):
        path, text = selected_file(last)
        mode = img2img.select_mode("inpaint")
        editor = {"background": path, "layers": [], "composite": path}
        brush = brush_size(min(last.selected_image().size))
        return [
            editor,
            *pasted_values(text),
            *mode,
            gr.Tabs(selected="img2img"),
            gr.Tabs(selected="inpaint"),
            brush,
        ]

    def to_extras(last):
        return selected_file(last)[0], gr.Tabs(selected="extras")

    mode_outputs = [img2img.mode, img2img.inpaint_controls]
    for source in (txt2img.results, img2img.results):
        for button, handler, target, extra in (
            (source.send_to_img2img, to_img2img, img2img.init_image, []),
            (source.send_to_inpaint, to_inpaint, img2img.inpaint, [img2img.inpaint_brush]),
        ):
            button.click(
                handler,
                inputs=source.last,
                outputs=[target, *pasted, *mode_outputs, tabs, img2img.tabs, *extra],
                show_progress="hidden",
            )
        source.send_to_extras.click(
            to_extras, inputs=source.last, outputs=[extras.image, tabs], show_progress="hidden"
        )

    _wire_pnginfo_send(tabs, backend, txt2img, img2img, img2img_fields, pnginfo, modules)


def _wire_pnginfo_send(tabs: gr.Tabs, backend: UiBackend, txt2img, img2img, img2img_fields: tuple, pnginfo,
                       modules: ModuleSelector) -> None:  # fmt: skip
    """PNG Info's parameters to txt2img / img2img, its `Module N` parts to the VAE / Text Encoder selector."""
    for button, target, tab_id, extra_outputs, fields in (
        (pnginfo.send_to_txt2img, txt2img, "txt2img", [], txt2img.paste_fields()),
        (pnginfo.send_to_img2img, img2img, "img2img", [img2img.init_image], img2img_fields),
    ):
        outputs = paste.all_outputs(target.prompt_row, target.params, fields)

        def send(
            text, image, target=target, outputs=outputs, tab_id=tab_id, extra=extra_outputs, fields=fields
        ):
            if not text:
                raise gr.Error("This image has no generation parameters to send.")
            parsed = paste.pasted_params(text)
            updates = paste.field_updates(parsed, target.prompt_row, target.params, fields)
            values = paste.as_outputs(updates, outputs)
            pasted_modules = module_selector.paste_update(backend, parsed)
            return [*values, pasted_modules, gr.Tabs(selected=tab_id), *([image] if extra else [])]

        button.click(
            send,
            inputs=[pnginfo.parameters, pnginfo.image],
            outputs=[*outputs, modules.dropdown, tabs, *extra_outputs],
            show_progress="hidden",
        )


def mount_ui(app, services: Any, path: str = "/", auth: Any = None, **kwargs: Any):
    """Mount the UI on a FastAPI app with its CSS and scripts (and the extensions' style.css / .js files)."""
    demo = create_ui(services)  # with its queue
    extensions = getattr(services, "extensions", None)
    css = [Path(p) for p in extensions.stylesheets()] if extensions is not None else []
    app = gr.mount_gradio_app(app, demo, path=path, auth=auth, **ui_assets(css), **kwargs)
    app.add_middleware(PageScripts, html=lambda: page_scripts_html(extensions), path=path)
    app.state.demo = demo  # on_app_started(demo, app) gets it (sdwebui.api.server)
    return app


def _login_required(login: UiLogin):
    def guard(request: Request) -> None:
        if login.user(request) is None:
            raise HTTPException(401, "log in first")

    return guard


def mount_page(app, services: Any, credentials: Credentials | None, throttle: LoginThrottle):
    """The UI at / behind our login page when `credentials` (--gradio-auth) are set (sdwebui.api.server.UiMount)."""
    login = UiLogin(credentials, throttle) if credentials else None
    extensions = getattr(services, "extensions", None)
    if extensions is not None:  # /file=extensions/<name>/...: extension assets, behind the same login
        install_file_route(app, extensions.manager.active, guard=_login_required(login) if login else None)
    install_thumb_route(app, services, guard=_login_required(login) if login else None)  # card previews
    app = mount_ui(app, services, path="/", auth_dependency=login.user if login else None)
    install_gradio_error_handlers(app)
    if login is not None:
        app.add_middleware(LoginGate, login=login)
    return app
