"""Entry point: flags -> settings -> ModelManager -> job queue -> UI and/or API, served by uvicorn.

Heavy imports happen after argument parsing so `--help` answers at once.
"""

from __future__ import annotations

import logging
import sys

from sdwebui.config import flags as cmd_args
from sdwebui.startup_timer import StartupTimer

log = logging.getLogger("webui")


def main(argv: list[str] | None = None) -> int:
    timer = StartupTimer()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = cmd_args.build_parser()
    try:
        from sdwebui.extensions.preload import apply_preload_hooks
    except ImportError:  # extension support not installed in this build
        apply_preload_hooks = None
    if apply_preload_hooks is not None:
        apply_preload_hooks(parser, sys.argv[1:] if argv is None else argv)
    try:
        args = cmd_args.parse_args(argv, parser)
    except cmd_args.FlagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    timer.record("parse flags")
    import torch  # noqa: F401  (imported by every engine module; here so that its cost shows apart)

    timer.record("import torch")
    if not args.nowebui:
        import gradio  # noqa: F401  (the page needs it; in before the model thread starts importing)

        timer.record("import gradio")
    from sdwebui.services import build_services

    services = build_services(args)
    timer.record("build services")
    from sdwebui.worker_backend import start_pool

    if start_pool(services):  # --workers / --ray-address: each worker loads its model itself
        timer.record("start Ray workers")
        return _serve(args, services, timer, on_started=None)
    return _serve(args, services, timer, on_started=lambda: submit_model_load(services))


def _serve(args, services, timer, on_started):
    from sdwebui.api.server import serve
    from sdwebui.extensions.bridge import attach_extensions

    attach_extensions(services)
    timer.record("load extensions")
    # The model loads once the server has started: Python threads share one core, so loading it beside the
    # UI build would only make the page later (and run both threads' imports of shared packages at once).
    ui = None
    if not args.nowebui:
        from webui.layout import mount_page as ui  # this is the composition root: it picks the UI

    return serve(services, ui, timer, on_started=on_started)


def submit_model_load(services):
    """Load the checkpoint in the background while the page is served, through the queue: no generation
    races it, and a job submitted before it is ready waits for it. Returns the job."""
    return services.jobs.submit(lambda ctx: _load_model(services), kind="load-model")


def _load_model(services):
    """The first load, timed: it also imports diffusers and transformers (seconds; the page needs neither)."""
    timer = StartupTimer()
    from sdwebui.models.libraries import import_model_libraries

    import_model_libraries()
    timer.record("import diffusers, transformers")
    # the settings' checkpoint, else the first that loads; a broken one is skipped and reported
    model = services.load_plain_model()
    timer.record("load " + model.info.title)
    log.info(timer.summary("Model ready"))
    return model


if __name__ == "__main__":
    sys.exit(main())
