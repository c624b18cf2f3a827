"""A1111's component callbacks while our Blocks is built, without patching Gradio.

A1111 calls `on_before_component` / `on_after_component` callbacks (and, inside the txt2img / img2img tab, that
tab's scripts' `before_component` / `after_component` and `Script.on_*_component(callback, elem_id=...)`) around
every Gradio component and layout block it creates, with the constructor's keyword arguments.

Gradio registers each block in its Blocks' `blocks` mapping from inside the block's constructor, once the
constructor arguments are recorded and the block is added to its parent. `observe(demo)` makes that mapping
tell us: a registration first completes the block registered before it (its constructor has returned, so
"after" runs on a fully built block), then announces the new one ("before"). What the callbacks create is
moved where A1111 puts it: right before, or right after, the block they were called for.

The `on_ui_tabs` tabs are Blocks the extensions build before our page: when such a Blocks is rendered into
the page, Gradio adds all its blocks to the mapping at once (`update`), and each gets both calls then.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import gradio as gr
from gradio.blocks import Block, BlockContext
from gradio.context import get_render_context

from sdwebui.facade import script_callbacks, scripts

log = logging.getLogger("webui.extensions")

SCRIPT_TABS = ("txt2img", "img2img")  # the tabs whose scripts get the calls (A1111 scripts_current)


class _Registry(dict):
    """Gradio's id -> block mapping of one Blocks, reporting each block it receives."""

    def __init__(self, initial: dict, hooks: ComponentHooks):
        super().__init__(initial)
        self.hooks = hooks

    def __setitem__(self, key: int, block: Block) -> None:
        super().__setitem__(key, block)
        self.hooks.registered(block)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """A Blocks built outside ours (an `on_ui_tabs` tab) rendered into it: Gradio adds its blocks at once."""
        for key, block in dict(*args, **kwargs).items():
            known = key in self
            super().__setitem__(key, block)
            if not known:
                self.hooks.rendered(block)


class ComponentHooks:
    """Runs the callbacks around each block registered in the observed Blocks (see module docstring)."""

    def __init__(self) -> None:
        self._pending: list[Block] = []  # registered, constructor still running
        self._created: list[list[Block]] = []  # per running callback: the blocks it created

    def registered(self, block: Block) -> None:
        if self._created:
            self._created[-1].append(block)
        if not _in_layout(block):
            return  # a pseudo-parent Gradio adds when a context exits, or a Blocks being rendered
        self.flush()
        self._call(block, before=True)
        self.flush()  # what the before callbacks built is complete now
        self._pending.append(block)

    def rendered(self, block: Block) -> None:
        """A block built (complete) in another Blocks, now rendered into ours: both calls at once, in the
        order the blocks were built, as A1111's (which calls them wherever a component is built)."""
        if self._created:
            self._created[-1].append(block)
        if not _in_layout(block):
            return
        self.flush()
        self._call(block, before=True)
        self._call(block, before=False)

    def flush(self) -> None:
        while self._pending:
            self._call(self._pending.pop(), before=False)

    def _call(self, block: Block, *, before: bool) -> None:
        kwargs = _constructor_kwargs(block)
        runner = _tab_runner(block)
        context = get_render_context()
        self._created.append([])
        try:
            if before:
                if runner is not None:
                    runner.before_component(block, **kwargs)
                script_callbacks.before_component_callback(block, **kwargs)
            else:
                script_callbacks.after_component_callback(block, **kwargs)
                if runner is not None:
                    runner.after_component(block, **kwargs)
        finally:
            created = self._created.pop()
        # only the callbacks' top-level blocks move; what they hold moves with them
        _move_next_to(block, [b for b in created if context is not None and b.parent is context], before)


def _in_layout(block: Block) -> bool:
    parent = block.parent
    return not isinstance(block, gr.Blocks) and parent is not None and block in parent.children


def _constructor_kwargs(block: Block) -> dict[str, Any]:
    """The keyword arguments the block was built with (Gradio records them before the constructor runs)."""
    recorded = getattr(block, "_constructor_args", None)
    kwargs = dict(recorded[0]) if recorded else {}
    kwargs.setdefault("elem_id", block.elem_id)
    return kwargs


def _tab_runner(block: Block) -> scripts.ScriptRunner | None:
    node = block.parent
    while node is not None:
        if isinstance(node, gr.Tab) and getattr(node, "id", None) in SCRIPT_TABS:
            return scripts.runner_for(node.id == "img2img")
        node = node.parent
    return None


def _move_next_to(block: Block, created: list[Block], before: bool) -> None:
    """Put `created` (children of the current render context, in order) just before / after `block`."""
    parent = block.parent
    if not created or not isinstance(parent, BlockContext):
        return
    created = [child for child in created if child in child.parent.children]  # a callback may unrender
    for child in created:
        child.parent.children.remove(child)
    index = parent.children.index(block) + (0 if before else 1)
    parent.children[index:index] = created
    for child in created:
        child.parent = parent


@contextlib.contextmanager
def observe(demo: gr.Blocks) -> Iterator[ComponentHooks]:
    """`with gr.Blocks() as demo, observe(demo):` -- the component callbacks for everything built inside."""
    hooks = ComponentHooks()
    demo.blocks = _Registry(demo.blocks, hooks)
    try:
        yield hooks
        hooks.flush()  # the last block's "after"
    finally:
        demo.blocks = dict(demo.blocks)  # a plain mapping again (Gradio copies it later)
