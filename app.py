"""Entry point: flags -> settings -> ModelManager -> job queue -> UI and/or API, served by uvicorn.

Heavy imports happen after argument parsing so `--help` answers at once.
"""

from __future__ import annotations

import logging
import sys

from modules import cmd_args

log = logging.getLogger("webui")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = cmd_args.build_parser()
    try:
        from modules.extension_preload import apply_preload_hooks
    except ImportError:  # extension support not installed in this build
        apply_preload_hooks = None
    if apply_preload_hooks is not None:
        apply_preload_hooks(parser, sys.argv[1:] if argv is None else argv)
    try:
        args = cmd_args.parse_args(argv, parser)
    except cmd_args.FlagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from modules.extensions_facade import attach_extensions
    from modules.services import build_services, serve

    services = build_services(args)
    attach_extensions(services)
    # Load the checkpoint while the server starts, through the queue so no generation races it.
    # (the settings' checkpoint, else the first that loads; a broken one is skipped and reported)
    services.jobs.submit(lambda ctx: services.load_plain_model(), kind="load-model")
    return serve(services)


if __name__ == "__main__":
    sys.exit(main())
