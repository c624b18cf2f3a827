"""The FastAPI application: API routes, auth, CORS, JSON errors, and the UI mounted beside them."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from modules.api.auth import basic_auth_dependency
from modules.api.docs import install_offline_docs
from modules.api.errors import install_error_handlers
from modules.api.routes import create_api_router
from modules.cmd_args import parse_credentials
from modules.services import AppServices

log = logging.getLogger(__name__)


def create_app(services: AppServices, with_ui: bool = False, with_api: bool = True) -> FastAPI:
    """OpenAPI at /openapi.json, docs at /docs; the UI (webui.layout.mount_ui) at / when `with_ui`."""
    args = services.args
    app = FastAPI(
        title="Stable Diffusion web UI API", version=services.version, docs_url=None, redoc_url=None
    )
    install_offline_docs(app)  # /docs and /redoc with local assets (FastAPI's load them from a CDN)
    install_error_handlers(app)
    origins = [o.strip() for o in (getattr(args, "cors_allow_origins", None) or "").split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials=True,
        )
    if with_api:
        auth = (
            basic_auth_dependency(parse_credentials(args.api_auth))
            if getattr(args, "api_auth", None)
            else None
        )
        app.include_router(create_api_router(services, auth))
    app.state.services = services
    if with_ui:
        from webui.layout import mount_ui

        gradio_auth = getattr(args, "gradio_auth", None)
        ui_auth = list(parse_credentials(gradio_auth, "--gradio-auth").items()) if gradio_auth else None
        app = mount_ui(app, services, path="/", auth=ui_auth)

    @app.on_event("shutdown")
    def _stop_workers() -> None:
        services.jobs.shutdown()

    return app


def serve_app(app: FastAPI, host: str, port: int) -> int:
    import uvicorn

    log.info("serving on http://%s:%d", host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
