"""The FastAPI application: API routes, auth, CORS, JSON errors, and the UI mounted beside them."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from sdwebui.api.auth import auth_setup, basic_auth_dependency
from sdwebui.api.docs import install_offline_docs
from sdwebui.api.errors import install_error_handlers, install_gradio_error_handlers
from sdwebui.api.guard import SecurityGuard, policy_from_args
from sdwebui.api.routes import create_api_router
from sdwebui.api.throttle import LoginThrottle
from sdwebui.services import AppServices

log = logging.getLogger(__name__)


def create_app(services: AppServices, with_ui: bool = False, with_api: bool = True) -> FastAPI:
    """OpenAPI at /openapi.json, docs at /docs; the UI (webui.layout.mount_ui) at / when `with_ui`.

    sdwebui.api.guard.SecurityGuard sits in front of everything (Host, Origin, body size); credentials and
    the login back-off are shared by the API and the UI (sdwebui.api.auth)."""
    args = services.args
    setup = auth_setup(args)
    throttle = LoginThrottle()
    app = FastAPI(
        title="Stable Diffusion web UI API", version=services.version, docs_url=None, redoc_url=None
    )
    install_offline_docs(app)  # /docs and /redoc with local assets (FastAPI's load them from a CDN)
    install_error_handlers(app, services.paths.redact)
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
        auth = basic_auth_dependency(setup.api, throttle) if setup.api else None
        app.include_router(create_api_router(services, auth))
    app.state.services = services
    if with_ui:
        from webui.layout import mount_ui
        from webui.login import LoginGate, UiLogin

        login = UiLogin(setup.ui, throttle) if setup.ui else None
        app = mount_ui(app, services, path="/", auth_dependency=login.user if login else None)
        install_gradio_error_handlers(app)
        if login is not None:
            app.add_middleware(LoginGate, login=login)
    app.add_middleware(SecurityGuard, policy=policy_from_args(args))  # added last: runs first

    @app.on_event("shutdown")
    def _stop_workers() -> None:
        services.jobs.shutdown()

    return app


def serve_app(app: FastAPI, host: str, port: int) -> int:
    import uvicorn

    log.info("serving on http://%s:%d", host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
