"""Run enabled extensions' `preload.py` `preload(parser)` before the command line is parsed.

Called by app.py with the real parser, so flags added by extensions appear in `--help` and `cmd_opts`.
Only the data dir and the extension flags are read first (a lenient pre-parse), to know which to run.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from sdwebui.config.options import read_json_object
from sdwebui.config.paths import DataPaths
from sdwebui.extensions.manager import ExtensionManager
from sdwebui.facade.scripts import load_module

log = logging.getLogger("webui.extensions")


def _disabled_from_config(config_file: Path) -> tuple[list[str], str]:
    # a config.json that is not a JSON object (UTF-16, a list, ...) counts as empty here; Options.load sets
    # it aside and says so once the settings are read
    data, _problem = read_json_object(config_file) if config_file.is_file() else ({}, None)
    disabled = data.get("disabled_extensions") or []
    return [str(x) for x in disabled if isinstance(x, str)], str(data.get("disable_all_extensions") or "none")


class _ConfigView:
    """Just enough of Options for ExtensionManager to read the disabled list from config.json."""

    def __init__(self, disabled: list[str], mode: str):
        self.data_labels: dict = {"disabled_extensions": None, "disable_all_extensions": None}
        self._values = {"disabled_extensions": disabled, "disable_all_extensions": mode}

    def get(self, key: str, default=None):
        return self._values.get(key, default)


def enabled_preload_files(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[tuple[str, Path]]:
    # pre-parse without --help (it would print and exit before extensions add their flags)
    args = [a for a in argv if a not in ("-h", "--help")]
    try:
        known, _ = parser.parse_known_args(args)
    except SystemExit:  # a bad value: the real parse reports it; here fall back to defaults
        known, _ = parser.parse_known_args([])
    data_dir = Path(getattr(known, "data_dir", None) or ".")
    paths = DataPaths(data_dir.resolve())
    disabled, mode = _disabled_from_config(paths.config_file)
    manager = ExtensionManager(
        paths.extensions_dir,
        paths.builtin_extensions_dir,
        _ConfigView(disabled, mode),
        disable_all=bool(getattr(known, "disable_all_extensions", False)),
        disable_extra=bool(getattr(known, "disable_extra_extensions", False)),
    )
    manager.discover()
    return [
        (ext.name, ext.path / "preload.py") for ext in manager.active() if (ext.path / "preload.py").is_file()
    ]


def apply_preload_hooks(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """Call `preload(parser)` of every enabled extension; returns the names that ran without error."""
    ran = []
    for name, path in enabled_preload_files(argv, parser):
        try:
            module = load_module(
                str(path), f"webui_extension_preload.{name.replace('.', '_').replace('-', '_')}"
            )
            preload = getattr(module, "preload", None)
            if preload is not None:
                preload(parser)
            ran.append(name)
        except Exception:
            log.exception("extension %s: preload.py failed; its flags are not available", name)
    return ran
