"""Gradio 3 keywords for A1111 1.x extensions (A1111 runs Gradio 3.41, we run Gradio 6).

The one sanctioned patch of a library (docs/extensions.md, "Gradio 3 compatibility"). `apply(roots)` wraps
Gradio's component and layout constructors and event listeners once; a wrapper translates only when its
caller's file lies in an extension folder (`roots`), so the app's own code sees stock Gradio. Each
translation is logged once per extension and keyword, naming the extension:

- event listeners (`.click`, `.change`, `demo.load`, `.then`, ...): `_js=` -> `js=`; `every=N` -> the
  listener plus a `gr.Timer(N).tick` with the same function; keywords Gradio 6 lacks are dropped.
- constructors: `source="upload"` -> `sources=["upload"]`, `show_copy_button=True` -> `buttons=["copy"]`,
  `default=` -> `value=`; other keywords the constructor lacks (`tool=`, `shape=`, `brush_radius=`,
  `max_rows=`, ...) are dropped.
- `component.style(height=, grid=, columns=, equal_height=, ...)`: applied where the block has that
  attribute (`grid` is Gallery's `columns`), returns the block as Gradio 3 did.
- `gr.X.update(**kwargs)` -> `gr.update(**kwargs)`; `gr.Box` -> `gr.Group`; `gr.inputs.*` / `gr.outputs.*`
  -> today's components (with their `default=` as `value=`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gradio as gr
import gradio.events
from gradio.blocks import Block

from sdwebui.facade import ui_components

log = logging.getLogger("webui.extensions")

_ROOTS: list[Path] = []  # extension folders whose code gets the translations (set by apply)
_WARNED: set[tuple[str, str]] = set()
# our own factories extensions call (modules.ui_components): their caller is the one that counts
_PASS_THROUGH = (
    Path(__file__).resolve(),
    Path(__file__).resolve().parents[1] / "facade" / "ui_components.py",
)
_STYLE_ALIASES = {"grid": "columns", "rounded": None, "border": None, "margin": None, "full_width": None,
                  "size": "size", "mobile_collapse": None}  # fmt: skip
_LISTENER_DROPPED = ("status_tracker", "_preprocess", "_postprocess", "no_target")


def extension_of(filename: str) -> str | None:
    """The extension folder name when `filename` is inside one of the extension roots."""
    path = Path(filename)
    for root in _ROOTS:
        if path.is_relative_to(root):
            relative = path.relative_to(root).parts
            return relative[0] if len(relative) > 1 else None
    return None


def _caller_extension() -> str | None:
    frame = sys._getframe(2)  # the wrapper's caller
    while frame is not None and Path(frame.f_code.co_filename).resolve() in _PASS_THROUGH:
        frame = frame.f_back
    return extension_of(frame.f_code.co_filename) if frame is not None else None


def warn(extension: str, what: str, instead: str) -> None:
    if (extension, what) not in _WARNED:
        _WARNED.add((extension, what))
        log.warning("extension %s uses Gradio 3's %s: %s", extension, what, instead)


def _accepted(function: Callable) -> tuple[set[str], bool]:
    params = inspect.signature(function).parameters.values()
    return {p.name for p in params}, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _drop_unknown(extension: str, owner: str, function: Callable, kwargs: dict[str, Any]) -> None:
    names, open_ended = _accepted(function)
    if open_ended:
        return
    for key in [k for k in kwargs if k not in names]:
        kwargs.pop(key)
        warn(extension, f"{owner}({key}=...)", "not in Gradio 6, ignored")


def _translate_constructor(extension: str, cls: type, init: Callable, kwargs: dict[str, Any]) -> None:
    names, _ = _accepted(init)
    name = cls.__name__
    if "source" in kwargs and "sources" in names:
        source = kwargs.pop("source")
        kwargs["sources"] = [s for s in ([source] if isinstance(source, str) else source) if s != "canvas"]
        warn(extension, f"{name}(source=)", f"translated to sources={kwargs['sources']}")
    if kwargs.pop("show_copy_button", False) and "buttons" in names:
        kwargs["buttons"] = [*(kwargs.get("buttons") or []), "copy"]
        warn(extension, f"{name}(show_copy_button=)", 'translated to buttons=["copy"]')
    if "default" in kwargs and "default" not in names and "value" in names:
        kwargs.setdefault("value", kwargs.pop("default"))
        warn(extension, f"{name}(default=)", "translated to value=")
    _drop_unknown(extension, name, init, kwargs)


def _wrap_init(cls: type) -> None:
    original = cls.__dict__["__init__"]
    if getattr(original, "_gradio3", False):
        return

    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        extension = _caller_extension() if _ROOTS else None
        if extension is not None:
            _translate_constructor(extension, cls, original, kwargs)
        original(self, *args, **kwargs)

    __init__._gradio3 = True  # type: ignore[attr-defined]
    cls.__init__ = __init__


def _wrap_listener(listener: Callable, owner: str) -> Callable:
    if getattr(listener, "_gradio3", False):
        return listener

    @functools.wraps(listener)
    def event_trigger(*args: Any, **kwargs: Any) -> Any:
        extension = _caller_extension() if _ROOTS else None
        if extension is None:
            return listener(*args, **kwargs)
        if "_js" in kwargs:
            kwargs.setdefault("js", kwargs.pop("_js"))
            warn(extension, f"{owner}(_js=)", "translated to js=")
        every = kwargs.pop("every", None)
        for key in _LISTENER_DROPPED:
            if key in kwargs:
                kwargs.pop(key)
                warn(extension, f"{owner}({key}=)", "not in Gradio 6, ignored")
        inner = getattr(listener, "func", listener)  # Dependency.then & co. are partials
        _drop_unknown(extension, owner, inner, kwargs)
        dependency = listener(*args, **kwargs)
        if every:
            warn(extension, f"{owner}(every=)", "translated to a gr.Timer ticking the same function")
            timer_kwargs = {k: v for k, v in kwargs.items() if k in ("fn", "inputs", "outputs", "js")}
            if args and not isinstance(args[0], Block) and "fn" not in timer_kwargs:
                timer_kwargs["fn"] = args[0]  # dependency.then(fn, ...) has no block first
            elif len(args) > 1:
                timer_kwargs.update(dict(zip(("fn", "inputs", "outputs"), args[1:], strict=False)))
            gr.Timer(value=float(every)).tick(**timer_kwargs)
        return dependency

    event_trigger._gradio3 = True  # type: ignore[attr-defined]
    return event_trigger


def _style(self: Block, **kwargs: Any) -> Block:
    """Gradio 3's `.style(...)`: set what this block still has, ignore the rest; returns the block."""
    extension = _caller_extension() or "(unknown)"
    for key, value in kwargs.items():
        attribute = _STYLE_ALIASES.get(key, key)
        if attribute and hasattr(self, attribute):
            setattr(self, attribute, value)
            warn(extension, f".style({key}=)", f"set as {type(self).__name__}.{attribute}")
        else:
            warn(extension, f".style({key}=)", "no such setting in Gradio 6, ignored")
    return self


def _update(cls: type, **kwargs: Any) -> dict[str, Any]:
    return gr.update(**kwargs)


def _box(*args: Any, **kwargs: Any) -> gr.Group:
    warn(_caller_extension() or "(unknown)", "gr.Box", "translated to gr.Group")
    return gr.Group(*args, **kwargs)


def _legacy_namespace(name: str, classes: Iterable[type]) -> types.ModuleType:
    """`gr.inputs` / `gr.outputs`: the component classes under their old names."""
    module = types.ModuleType(f"gradio.{name}", f"Gradio 3's gr.{name}: today's components (compat)")
    for cls in classes:
        setattr(module, cls.__name__, cls)
    return module


def block_classes() -> list[type]:
    """Every component and layout class Gradio exports."""
    found = [value for value in vars(gr).values() if isinstance(value, type) and issubclass(value, Block)]
    return [*found, Block]


def apply(roots: Iterable[Path]) -> None:
    """Translate Gradio 3 keywords for code under `roots` (idempotent; roots accumulate)."""
    for root in roots:
        resolved = Path(root).resolve()
        if resolved not in _ROOTS:
            _ROOTS.append(resolved)
    for cls in block_classes():
        if "__init__" in cls.__dict__:
            _wrap_init(cls)
        for name, value in list(cls.__dict__.items()):
            if inspect.isfunction(value) and value.__name__ == "event_trigger":
                setattr(cls, name, _wrap_listener(value, f"{cls.__name__}.{name}"))
        if not hasattr(cls, "update"):
            cls.update = classmethod(_update)
    if not hasattr(Block, "style"):
        Block.style = _style
    _wrap_dependency()
    # Forge-era extensions set their Checkbox subclass's __module__ to "modules.ui_components" so that Gradio
    # finds a source file for its class id; A1111 has that module imported before extensions load.
    sys.modules.setdefault("modules.ui_components", ui_components)
    if not hasattr(gr, "Box"):
        gr.Box = _box
    components = [c for c in block_classes() if issubclass(c, gr.components.Component)]
    for name in ("inputs", "outputs"):
        if not hasattr(gr, name):
            module = _legacy_namespace(name, components)
            setattr(gr, name, module)
            sys.modules[f"gradio.{name}"] = module


def _wrap_dependency() -> None:
    original = gradio.events.Dependency.__init__
    if getattr(original, "_gradio3", False):
        return

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        for name in ("then", "success", "failure"):
            if hasattr(self, name):
                setattr(self, name, _wrap_listener(getattr(self, name), f"dependency.{name}"))

    __init__._gradio3 = True  # type: ignore[attr-defined]
    gradio.events.Dependency.__init__ = __init__
