"""The FastAPI application: API routes, auth, CORS, JSON errors, and the UI mounted beside them.

The UI is not imported here (the internal package never imports `webui`): the composition root (app.py)
hands `create_app` / `serve` a `UiMount`, webui.layout.mount_page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Mount

from sdwebui.api.auth import Credentials, auth_setup, basic_auth_dependency
from sdwebui.api.docs import install_offline_docs
from sdwebui.api.errors import install_error_handlers
from sdwebui.api.guard import SecurityGuard, policy_from_args
from sdwebui.api.routes import create_api_router
from sdwebui.api.throttle import LoginThrottle
from sdwebui.config.flags import bind_address
from sdwebui.services import AppServices
from sdwebui.startup_timer import StartupTimer

log = logging.getLogger(__name__)


class UiMount(Protocol):
    """Puts the UI at / of `app` and returns the app to serve; `credentials` (--gradio-auth) or None for
    an open UI; `throttle` is the login back-off the API shares."""

    def __call__(
        self, app: FastAPI, services: AppServices, credentials: Credentials | None, throttle: LoginThrottle
    ) -> FastAPI: ...


def create_app(services: AppServices, ui: UiMount | None = None, with_api: bool = True) -> FastAPI:
    """OpenAPI at /openapi.json, docs at /docs; the UI at / when `ui` is given.

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
    if ui is not None:
        app = ui(app, services, setup.ui, throttle)
    if getattr(services, "extensions", None) is not None:  # attach_extensions ran (app.py, tests)
        start_extensions(app)
    app.add_middleware(SecurityGuard, policy=policy_from_args(args))  # added last: runs first

    @app.on_event("shutdown")
    def _stop_workers() -> None:
        services.jobs.shutdown()

    return app


def start_extensions(app: FastAPI) -> None:
    """Run the extensions' `on_app_started(demo, app)` with the UI's Blocks (None without a UI), then put
    the UI's catch-all mount at / back behind every route: the routes extensions add there must answer
    (as on A1111, whose Gradio app is the FastAPI app itself)."""
    from sdwebui.extensions.bridge import app_started

    app_started(getattr(app.state, "demo", None), app)
    routes = app.router.routes
    mounts = [route for route in routes if isinstance(route, Mount) and route.path == ""]
    for mount in mounts:
        routes.remove(mount)
        routes.append(mount)


def serve(
    services: AppServices,
    ui: UiMount | None = None,
    timer: StartupTimer | None = None,
    on_started: Callable[[], object] | None = None,
) -> int:
    """Serve the API (with --api or --nowebui) and the UI (`ui`) with uvicorn until interrupted (app.py's
    last step). When the server starts, `timer`'s summary is logged and `on_started` is called (app.py: the
    model load job)."""
    app = create_app(services, ui=ui, with_api=bool(services.args.api or services.args.nowebui))
    if timer is not None:
        timer.record("build UI and API")

    @app.on_event("startup")
    def _started() -> None:
        if timer is not None:
            timer.record("start server")
            log.info(timer.summary())
        if on_started is not None:
            on_started()

    return serve_app(app, bind_address(services.args), services.args.port)


def serve_app(app: FastAPI, host: str, port: int) -> int:
    import uvicorn

    log.info("serving on http://%s:%d", host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
