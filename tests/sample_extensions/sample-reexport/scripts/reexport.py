"""The script file only re-exports Script classes defined elsewhere (A1111 registers them all)."""

from sample_reexport_lib.ui import ReexportedScript, ReexportedSelectable  # noqa: F401

from modules.scripts import Script  # noqa: F401  (the base class in the namespace is not a script)
